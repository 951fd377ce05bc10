"""Plain HTTP on the WebSocket's own port: the request head, the routes, refusals.

Cloud platforms probe the service's own port, and trio-websocket answers any request that is
not a WebSocket upgrade with 400 before a handler runs. So every connection is routed here
first: the request head is read and parsed with h11 (already installed under wsproto); an
upgrade goes on to trio-websocket with the bytes already read replayed in front of the stream
(:class:`ReplayStream`), anything else gets a small HTTP/1.1 response and is closed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urlsplit

import h11
import trio

from trackerd.errors import TrackerdError

MAX_HEAD_BYTES = 16384
"""A request head larger than this is refused (431): browsers send 1-2 KiB."""


LINGER_S = 1.0
"""After a refusal, how long the rest of the request is read and thrown away before the close, so
that the close is a FIN and not a reset that could destroy the response in flight."""
LINGER_BYTES = 65536
"""And how much of it, at most."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Head:
    method: str
    target: str
    upgrade: bool
    """The request asks for a protocol switch (an ``Upgrade`` header, or WebSocket headers):
    it goes to the WebSocket side, which refuses it if it is not a valid WebSocket request."""
    raw: bytes
    """Every byte read from the stream so far (the head, and anything after it)."""
    headers: tuple[tuple[bytes, bytes], ...] = ()
    """As sent, names in lower case (h11 lower-cases them)."""
    http_version: str = "1.1"
    size: int = 0
    """Bytes of ``raw`` that are the head itself; the rest came after it."""

    @property
    def path(self) -> str:
        """The path of the target, in origin form (``/healthz``) even when the request named
        it in absolute form (``http://host/healthz``, which HTTP/1.1 servers must accept)."""
        target = self.target
        if "://" in target.split("?", 1)[0]:
            target = urlsplit(target).path or "/"
        return target.split("?", 1)[0]

    def header(self, name: bytes) -> list[bytes]:
        """Every value of header ``name`` (lower case), in order."""
        return [value for key, value in self.headers if key == name]


class BadRequest(TrackerdError):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class Vanished(TrackerdError):
    """The client closed before it sent a single byte: there is no one to answer."""


async def read_head(stream: trio.abc.ReceiveStream) -> Head:
    """Read and parse one HTTP/1.1 request head. Raises :class:`BadRequest`."""
    parser = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    raw = b""
    while True:
        try:
            event = parser.next_event()
        except h11.RemoteProtocolError as exc:
            raise BadRequest(exc.error_status_hint, str(exc)) from None
        if isinstance(event, h11.Request):
            size = len(raw) - len(parser.trailing_data[0])
            if size > MAX_HEAD_BYTES:  # arrived whole, so h11's limit on a partial one missed it
                raise BadRequest(431, f"request head over {MAX_HEAD_BYTES} bytes")
            headers = tuple((name.lower(), value) for name, value in event.headers)
            upgrade = any(k in _UPGRADE_HEADERS for k, _ in headers)
            target = event.target.decode("latin-1")
            version = event.http_version.decode()
            return Head(event.method.decode(), target, upgrade, raw, headers, version, size)
        if event is h11.NEED_DATA:
            data = bytes(await stream.receive_some(4096))
            if not data:
                if not raw:
                    raise Vanished()
                raise BadRequest(400, "connection closed before the request was complete")
            raw += data
            parser.receive_data(data)
        else:
            raise BadRequest(400, f"unexpected {type(event).__name__}")


_UPGRADE_HEADERS = frozenset({b"upgrade", b"sec-websocket-key", b"sec-websocket-version"})


async def respond(stream: trio.abc.SendStream, response: Response, *, head_only: bool) -> None:
    """Write ``response``. ``Cache-Control`` is ``no-store`` unless the response sets its own;
    a 304 has no body and no length (RFC 9110 §15.4.5: it describes the cached one)."""
    own = {name.lower() for name, _ in response.headers}
    lines = [
        f"HTTP/1.1 {response.status} {HTTPStatus(response.status).phrase}",
        f"Content-Type: {response.content_type}",
        *([f"Content-Length: {len(response.body)}"] if response.status != 304 else []),
        *(["Cache-Control: no-store"] if "cache-control" not in own else []),
        "Connection: close",
        *(f"{name}: {value}" for name, value in response.headers),
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    await stream.send_all(head if head_only else head + response.body)


Route = Callable[[Head], Awaitable[Response]]
"""Answers a GET or HEAD of one path; the head is there for its query and conditional headers.
A route whose path ends with ``/`` answers every path below it too (``/sessions/`` for
``/sessions/interview-42``), when no route names that path exactly."""


def route_of(routes: dict[str, Route], path: str) -> str | None:
    """The key of the route that answers ``path``: its own, or the prefix route above it."""
    if path in routes:
        return path
    prefix = path[: path.rfind("/") + 1]
    return prefix if prefix != path and prefix in routes and len(prefix) > 1 else None


async def serve_http(
    stream: trio.abc.Stream,
    head: Head,
    routes: dict[str, Route],
    refuse: Callable[[str, Head], Response | None],
) -> None:
    """Answer one plain HTTP request and close. ``refuse`` may turn it down first (a path
    that needs the token)."""
    path = route_of(routes, head.path)
    refusal = refuse(path, head) if path is not None else None
    if refusal is not None:
        response = refusal
    elif path is None:
        response = Response(404, "text/plain; charset=utf-8", b"not found\n")
    elif head.method not in ("GET", "HEAD"):
        response = Response(405, "text/plain; charset=utf-8", b"GET or HEAD only\n")
    else:
        response = await routes[path](head)
    await respond(stream, response, head_only=head.method == "HEAD")


async def linger(stream: trio.abc.Stream) -> None:
    """Close gently after a response: send FIN, then read and drop what the client still sends
    (at most LINGER_BYTES, for at most LINGER_S) until it closes too. Closing a socket with
    unread bytes in it sends a reset, which can destroy the response before the client reads
    it. Over TLS there is no half-close: the caller's close_notify is all there is."""
    if not isinstance(stream, trio.SocketStream):
        return
    gone = (trio.BrokenResourceError, trio.ClosedResourceError)  # nothing left to linger for
    with trio.move_on_after(LINGER_S), contextlib.suppress(*gone):
        await stream.send_eof()
        left = LINGER_BYTES
        while left > 0 and (data := await stream.receive_some(min(left, 16384))):
            left -= len(data)


class ReplayStream(trio.abc.Stream):
    """A stream that first gives back bytes already read from it, then reads on as usual."""

    def __init__(self, transport_stream: trio.abc.Stream, already_read: bytes) -> None:
        self.transport_stream = transport_stream
        self._replay = already_read

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._replay:
            n = len(self._replay) if max_bytes is None else max_bytes
            data, self._replay = self._replay[:n], self._replay[n:]
            await trio.lowlevel.checkpoint()
            return data
        return await self.transport_stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.transport_stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport_stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.transport_stream.aclose()
