"""Websockets to functions. An upgrade request to a function's route (an HTTP trigger, or
``/function/<name>``) takes an instance as a request does (the queue, its 429 and 503, a cold
start), on a connection of its own to the instance's socket; the instance's answer is the
handshake's. After a 101 the router pipes bytes both ways, reading neither side while the
other is behind, until either closes. Anything else the instance answers is relayed, and the
client's connection closed.

While open, a websocket holds its slot of the function's concurrency (the instance is busy:
not reaped, counted by the autoscaler) and one of the router's ``--max-connections``. The
function's ``--timeout`` bounds the handshake only. The router ends a websocket that carried
no bytes either way for the function's ``--idle-timeout``, one whose instance is draining (the
function was updated or deleted), and every one when the platform stops: it half-closes the
instance's connection, and the instance sends the client a close frame (1001, going away).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import httptools

from fissile.executor import ExecutorError
from fissile.executor.connection import InstanceGone, InstanceResponse
from fissile.executor.instance import Instance, State
from fissile.executor.pools import FunctionPool
from fissile.router.app import admit, encode_forward
from fissile.router.auth import Principal
from fissile.router.guard import Guard
from fissile.router.proxy import (
    Answer,
    Trip,
    _count,
    _instance_died,
    queue_timed_out,
    refusal,
)
from fissile.router.routes import request_path

if TYPE_CHECKING:
    from fissile.router.protocol import RouterProtocol, _Request

logger = logging.getLogger("fissile.router")

#: Seconds an instance has, once told to end a websocket, to close it before both sides are cut.
END_GRACE = 10.0
#: The shortest idle timeout a websocket gets (a function may ask to be reaped at once).
MIN_IDLE = 1.0
# A refusal's body is the runtime's JSON error: anything larger is not a handshake answer.
MAX_REFUSAL = 64 * 1024
_UPGRADE = b"connection: upgrade\r\nupgrade: websocket\r\n\r\n"


def start(owner: RouterProtocol, request: _Request) -> bool:
    """Serve ``request`` as a websocket to a function, if it is one (the router's protocol asks
    for every upgrade request); False leaves it to the protocol's other paths."""
    if request.method != "GET" or not _wants_websocket(request.headers):
        return False
    direct = owner._direct(request)
    transport = owner.transport
    if transport is None:
        return False
    scheme, client, headers = owner.scheme, owner.client, request.headers
    if owner.via_proxy:
        scheme, client, headers = owner.forwarded  # as _direct resolved them
    guard: Guard | None = None
    if direct is not None:
        pool, params, prefix, route = direct
        path = owner.path
    else:
        # A route with a guard: its checks run before the handshake (``_admitted``).
        found_path = request_path(request.target)
        found = None if found_path is None else owner.router.guarded(found_path, headers)
        if found is None:
            return False
        path = found_path or ""
        pool, params, prefix, guard = found
        route = guard.trigger
    # The handshake is a request: counted and logged when answered, the 101 as any other
    # status (its duration to the 101; its bytes, a stream's, unknown).
    owner.trip = trip = Trip(time.monotonic(), owner.log_counts)
    trip.endpoint = (pool.name, route, request.method, path, client)
    owner.busy = True
    owner.keep_alive = False
    # Nothing but the 101 may reach the client before the pipe exists (a websocket client
    # sends nothing before it either).
    transport.pause_reading()

    def encode(extra: list[tuple[bytes, bytes]] | None) -> bytes:
        data = encode_forward(
            request.method,
            request.target,
            headers,
            scheme,
            client,
            pool.name,
            params,
            b"",
            pool.spec.timeout,
            prefix,
            trip,
            extra,
        )
        # The request ends with its empty body's "content-length: 0" line and a blank line:
        # the hop-by-hop upgrade headers the encoding drops go back in before the blank line.
        return data[:-2] + _UPGRADE

    if guard is None:
        task = owner.loop.create_task(_handshake(owner, pool, encode(None)))
    else:
        task = owner.loop.create_task(_admitted(owner, pool, guard, headers, encode))
    owner.server_state.tasks.add(task)
    task.add_done_callback(owner.server_state.tasks.discard)
    return True


async def _admitted(
    owner: RouterProtocol,
    pool: FunctionPool,
    guard: Guard,
    headers: list[tuple[bytes, bytes]],
    encode: Callable[[list[tuple[bytes, bytes]] | None], bytes],
) -> None:
    """A guarded route's checks, then the handshake; a refusal is answered and closed."""
    refused: Answer | None = None
    principal: Principal | None = None
    origin = next((v for n, v in headers if n == b"origin"), None)
    if guard.webhook_secret is not None:
        refused = Answer(401, "bad_signature", "a webhook route takes no websocket: no body")
    elif guard.cors is not None and origin is not None and not guard.cors.allows(origin):
        # Browsers send any page's websocket with its cookies: the route's origins hold.
        refused = Answer(403, "forbidden", "this origin may not open a websocket here")
    else:
        try:
            admitted = await admit(guard, headers)
        except Exception:
            logger.exception("router: checking a websocket to %s failed", pool.name)
            admitted = Answer(500, "internal_error", "the router failed to check this websocket")
        if isinstance(admitted, Answer):
            refused = admitted
        else:
            principal = admitted
    if refused is not None:
        _answered(owner, pool, refused)  # written with "connection: close", then closed
        return
    extra = None
    if principal is not None:
        extra = principal.headers()
        if principal.consumed is not None:
            # The credentials were the router's; encode() reads the list it was given.
            headers[:] = [h for h in headers if h[0] != principal.consumed]
    await _handshake(owner, pool, encode(extra))


def _wants_websocket(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(name == b"upgrade" and b"websocket" in value.lower() for name, value in headers)


async def _handshake(owner: RouterProtocol, pool: FunctionPool, data: bytes) -> None:
    try:
        outcome = await _open(owner, pool, data)
    except Exception:
        logger.exception("router: websocket to %s failed", pool.name)
        outcome = Answer(500, "internal_error", "the router failed to open this websocket")
    if isinstance(outcome, Tunnel):
        _answered(owner, pool, outcome.answer)
        outcome.attach(owner)
    else:
        _answered(owner, pool, outcome)  # written with "connection: close", then closed


def _answered(owner: RouterProtocol, pool: FunctionPool, answer: InstanceResponse | Answer) -> None:
    """Count and log the handshake's answer; a refusal is then written (and the connection
    closed), a 101 is the tunnel's to write."""
    trip = owner.trip
    if trip is not None:
        _count(owner.router.executor, pool, trip, answer.status)
    if answer.status != 101:
        owner._answered(answer)
        return
    access_log = owner.access_log
    if access_log is not None and trip is not None:
        trip.status = 101
        trip.size = None  # what the websocket carries is not known when its 101 goes out
        access_log.add(trip)
    owner.trip = None


async def _open(
    owner: RouterProtocol, pool: FunctionPool, data: bytes
) -> Tunnel | InstanceResponse | Answer:
    """Take an instance (waiting in the queue like a request), send it the upgrade on a new
    connection, and read its answer within the function's timeout."""
    trip = owner.trip
    instance = pool.take_ready()
    queued = instance is None
    if instance is None:
        try:
            waiter = pool.enqueue()
        except ExecutorError as exc:
            return refusal(exc)
        try:
            async with asyncio.timeout(pool.queue_timeout):
                instance = await waiter
        except TimeoutError:
            pool.expired(waiter)
            return queue_timed_out(pool, pool.queue_timeout)
        except asyncio.CancelledError:
            pool.abandon(waiter)
            raise
        except ExecutorError as exc:
            return refusal(exc)
    if trip is not None:
        trip.served(instance, queued)
    loop = asyncio.get_running_loop()
    timeout = pool.spec.timeout
    side: _InstanceSide | None = None
    try:
        async with asyncio.timeout(timeout):
            try:
                transport, side = await loop.create_unix_connection(
                    _InstanceSide, instance.socket_path
                )
            except OSError as exc:
                raise InstanceGone(f"cannot connect to instance: {exc}") from exc
            transport.write(data)
            answer = await side.answer
    except TimeoutError:
        if side is not None:
            side.close()
            pool.overran(instance, timeout)
            message = f"function {pool.name} did not answer the websocket handshake within"
            message += f" {timeout:g}s; its instance was killed"
        else:
            message = f"no instance of {pool.name} could be reached within {timeout:g}s"
        pool.release(instance)
        return Answer(504, "timeout", message)
    except InstanceGone as exc:
        if side is not None:
            side.close()
        try:
            return await _instance_died(owner.router.executor, pool, instance, str(exc))
        finally:
            pool.release(instance)
    except BaseException:
        if side is not None:
            side.close()
        pool.release(instance)
        raise
    if answer.status < 500:
        pool.succeeded()
    if answer.status != 101 or owner.transport is None or owner.transport.is_closing():
        side.close()
        pool.release(instance)
        return answer
    return Tunnel(owner, pool, instance, side, answer)


class _InstanceSide(asyncio.Protocol):
    """The router's connection to the instance: the handshake's answer, then the instance's
    half of the pipe."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.answer: asyncio.Future[InstanceResponse] = asyncio.get_running_loop().create_future()
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.size = 0
        self.early = b""  # what followed the 101 in its read: the first frames
        self.tunnel: Tunnel | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.to_client(data)
            return
        if self.answer.done():
            return  # a refusal's trailing bytes
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.early = data[exc.args[0] :]
            if self.transport is not None:
                # Until the client's half exists: what the instance sends waits in its buffers.
                self.transport.pause_reading()
            self._answer(101)
        except httptools.HttpParserError as exc:
            self._fail(InstanceGone(f"malformed handshake answer from instance: {exc}"))

    def eof_received(self) -> bool | None:
        return None  # close: connection_lost ends the tunnel

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(InstanceGone("instance closed the connection"))
        if self.tunnel is not None:
            self.tunnel.finish()

    def pause_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.client.pause_reading()

    def resume_writing(self) -> None:
        if self.tunnel is not None and not self.tunnel.client.is_closing():
            self.tunnel.client.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # -- httptools callbacks ------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > MAX_REFUSAL:
            self._fail(InstanceGone("oversized handshake answer from instance"))
            self.close()
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.parser.get_status_code() == 101:
            return  # HttpParserUpgrade follows
        self._answer(self.parser.get_status_code())

    def _answer(self, status: int) -> None:
        if not self.answer.done():
            response = InstanceResponse(status, self.headers, b"".join(self.body), False)
            self.answer.set_result(response)

    def _fail(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


class _ClientSide(asyncio.Protocol):
    """The client's connection once upgraded: its half of the pipe."""

    __slots__ = ("tunnel",)

    def __init__(self, tunnel: Tunnel) -> None:
        self.tunnel = tunnel

    def data_received(self, data: bytes) -> None:
        self.tunnel.to_instance(data)

    def eof_received(self) -> bool | None:
        return None  # close: connection_lost ends the tunnel

    def connection_lost(self, exc: Exception | None) -> None:
        self.tunnel.finish()

    def pause_writing(self) -> None:
        self.tunnel.instance.pause_reading()

    def resume_writing(self) -> None:
        if not self.tunnel.instance.is_closing():
            self.tunnel.instance.resume_reading()


class Tunnel:
    """One open websocket: the client's transport and the instance's, each read only while
    the other can take more, and the function's slot held until both are closed."""

    def __init__(
        self,
        owner: RouterProtocol,
        pool: FunctionPool,
        instance: Instance,
        side: _InstanceSide,
        answer: InstanceResponse,
    ) -> None:
        assert owner.transport is not None and side.transport is not None
        self.owner = owner
        self.pool = pool
        self.instance_state = instance
        self.answer = answer
        self.side = side
        self.client: asyncio.Transport = owner.transport
        self.instance: asyncio.Transport = side.transport
        self.loop = owner.loop
        self.idle_timeout = max(pool.spec.idle_timeout, MIN_IDLE)
        self.active = False  # bytes went through since the last sweep
        self.last_active = self.loop.time()
        self.ending = 0.0  # when the router asked the instance to end it
        self.done = False

    def attach(self, owner: RouterProtocol) -> None:
        """Write the 101 and whatever followed it, and join the two transports; the tunnel
        replaces the router's protocol in the connection count."""
        head = [b"HTTP/1.1 101 Switching Protocols\r\n"]
        for name, value in self.answer.headers:
            head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        self.client.write(b"".join(head))
        if self.side.early:
            self.client.write(self.side.early)
        owner.connections.discard(owner)
        owner.server_state.connections.discard(owner)
        owner.connections.add(self, self.loop, owner.config.timeout_keep_alive)
        owner.server_state.connections.add(self)  # type: ignore[arg-type]
        self.client.set_protocol(_ClientSide(self))
        self.side.tunnel = self
        self.client.resume_reading()
        if not owner.write_paused:
            self.instance.resume_reading()

    def to_client(self, data: bytes) -> None:
        if not self.done:
            self.active = True
            self.client.write(data)

    def to_instance(self, data: bytes) -> None:
        # Once ending, the instance's half is closed: the client's answer to its close frame
        # has nowhere to go, nor a need to.
        if not self.done and not self.ending:
            self.active = True
            self.instance.write(data)

    def expire(self, now: float) -> None:
        """The router's connection sweep: end a websocket idle too long or on a draining
        instance; cut one whose instance has not closed it within ``END_GRACE``."""
        if self.done:
            return
        if self.ending:
            if now - self.ending > END_GRACE:
                self.client.abort()
                self.instance.abort()
            return
        if self.active:
            self.active = False
            self.last_active = now
        if (
            now - self.last_active > self.idle_timeout
            or self.instance_state.state is not State.ready
        ):
            self.end(now)

    def shutdown(self) -> None:
        """uvicorn's graceful stop."""
        if not self.done and not self.ending:
            self.end(self.loop.time())

    def end(self, now: float) -> None:
        """Ask the instance to close the websocket (its close frame reaches the client)."""
        self.ending = now
        if self.instance.can_write_eof() and not self.instance.is_closing():
            self.instance.write_eof()
        else:
            self.instance.close()

    def finish(self) -> None:
        """Either side closed: close the other (after what it has to write), give back the
        slot."""
        if self.done:
            return
        self.done = True
        self.client.close()
        self.instance.close()
        self.owner.connections.discard(self)
        self.owner.server_state.connections.discard(self)
        self.pool.release(self.instance_state)
