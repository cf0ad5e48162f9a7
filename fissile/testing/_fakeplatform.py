"""The platform's side of ``context.invoke`` and ``context.publish`` for a local instance: a
unix socket (``FISSILE_PLATFORM_SOCKET``) answering from scripted replies, recording calls."""

from __future__ import annotations

import json
import socketserver
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fissile.testing._context import Invocation, Published, Scripted, answer


class FakePlatform:
    """Serves ``<METHOD> /invoke/<function>[/path]`` from ``replies`` and ``POST /publish`` by
    recording, on ``path``, in a thread of the test's process."""

    def __init__(self, path: str, replies: dict[str, Scripted]) -> None:
        self.path = path
        self.replies = replies
        self.invocations: list[Invocation] = []
        self.published: list[Published] = []
        self._lock = threading.Lock()
        self._server = _Server(path, _handler_for(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fissile-fake-platform", daemon=True
        )

    def start(self) -> FakePlatform:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def _handler_for(platform: FakePlatform) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def handle_one(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            kind = self.headers.get("content-type") or "application/octet-stream"
            url = urlsplit(self.path)
            if url.path.startswith("/invoke/"):
                # What the platform passes on: not the socket's framing, not its own headers.
                headers = {
                    k.lower(): v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "content-length", "accept-encoding")
                    and not k.lower().startswith("x-fissile-")
                }
                call = Invocation.of(self.path, self.command, headers, body, body)
                with platform._lock:
                    platform.invocations.append(call)
                try:
                    reply = answer(platform.replies, call)
                except Exception as exc:  # a scripted failure: the caller sees a 502
                    self._send(502, {"error": {"code": "bad_gateway", "message": str(exc)}})
                    return
                self._send(reply.status, reply.body, reply.headers)
            elif url.path == "/publish" and self.command == "POST":
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                topic = query.get("topic", "")
                message = Published(
                    topic,
                    body,
                    body,
                    kind,
                    query.get("mqtype", "embedded"),
                    query.get("broker_url"),
                )
                with platform._lock:
                    platform.published.append(message)
                self._send(202, {"topic": topic, "size": len(body)})
            else:
                self._send(404, {"error": {"code": "not_found", "message": url.path}})

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = handle_one

        def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            headers = dict(headers or {})
            if not isinstance(body, bytes):
                body = json.dumps(body).encode()
                headers.setdefault("content-type", "application/json")
            self.send_response(status)
            for name, value in headers.items():
                if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(name, value)  # the framing is this server's
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the test's output is the function's, not this server's

    return Handler
