"""Delivering a finished invocation's result to the ``X-Callback-Url`` its caller gave.

Each attempt POSTs the function's response body (or a JSON error when there is none) with the
invocation's id and status in headers; anything but a 2xx is retried with back-off. The state
is recorded after every attempt, so a restarted platform resumes pending deliveries.
httpx is imported here, off the router's hot path, and only once a callback is due.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from fissile.invocations.records import Invocation

logger = logging.getLogger("fissile.invocations")

ATTEMPTS = 6
BASE_DELAY = 0.5
MAX_DELAY = 30.0
TIMEOUT = 10.0

# Response headers of the function that describe its body, passed on to the receiver.
_BODY_HEADERS = frozenset({"content-type", "content-encoding", "content-language"})


def check_callback_url(url: str) -> str | None:
    """Why ``url`` cannot be a callback target, or None when it can."""
    problem = f"X-Callback-Url must be an absolute http(s) URL, not {url!r}"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- parsing the port is the check (ValueError when invalid)
    except ValueError:
        return problem
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return problem
    if any(c in url for c in " \r\n\t"):
        return problem
    try:
        import httpx

        httpx.URL(url)
    except Exception:
        return problem
    return None


class CallbackSender:
    def __init__(
        self,
        attempts: int = ATTEMPTS,
        base_delay: float = BASE_DELAY,
        timeout: float = TIMEOUT,
        client: Any = None,
    ) -> None:
        self.attempts = attempts
        self.base_delay = base_delay
        self.timeout = timeout
        self._client = client  # an httpx.AsyncClient; made on first use unless given

    async def deliver(self, invocation: Invocation, saved: Callable[[], None]) -> None:
        assert invocation.callback_url is not None
        body, headers = _payload(invocation)
        while invocation.callback_attempts < self.attempts:
            if invocation.callback_attempts:
                delay = min(MAX_DELAY, self.base_delay * 2 ** (invocation.callback_attempts - 1))
                await asyncio.sleep(delay)
            invocation.callback_attempts += 1
            error = await self._post(invocation.callback_url, body, headers)
            if error is None:
                invocation.callback_state = "delivered"
                invocation.callback_error = None
                saved()
                return
            invocation.callback_error = error
            if invocation.callback_attempts >= self.attempts:
                invocation.callback_state = "failed"
            saved()
            logger.info(
                "callback of invocation %s to %s failed (attempt %d of %d): %s",
                invocation.id,
                invocation.callback_url,
                invocation.callback_attempts,
                self.attempts,
                error,
            )
        if invocation.callback_state == "pending":
            invocation.callback_state = "failed"
            saved()

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> str | None:
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        try:
            response = await self._client.post(url, content=body, headers=headers)
        except Exception as exc:  # httpx.HTTPError, InvalidURL, ...: all end in the record
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if 200 <= response.status_code < 300:
            return None
        return f"the receiver answered {response.status_code}"

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def _payload(invocation: Invocation) -> tuple[bytes, dict[str, str]]:
    headers = {
        "x-fissile-invocation-id": invocation.id,
        "x-fissile-invocation-status": str(invocation.status),
        "x-fissile-function": invocation.function,
    }
    response = invocation.response
    if response is None:
        headers["content-type"] = "application/json"
        error = {"error": {"code": str(invocation.status), "message": invocation.error or ""}}
        return json.dumps(error).encode(), headers
    headers["x-fissile-response-status"] = str(response.status)
    for name, value in response.headers:
        if name.lower() in _BODY_HEADERS:
            headers[name.lower()] = value
    return response.body, headers
