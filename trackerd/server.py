"""The WebSocket side: one task per client, and the cheap path that fans observations out.

This is the only module that imports trio-websocket (in maintenance mode upstream, so kept in one
place where it could be replaced) or reaches into it.

Each connection gets a :class:`Client` with three tasks: a reader (commands in, replies out), a
writer (anything that has to wait for the socket) and a heartbeat (WebSocket pings; a peer that
does not answer within the timeout is dropped).

The fan-out path. design.md measured trio-websocket's ``send_message`` at ~52 µs per message
(trio's ``send_all`` ~32 µs even for a pre-framed message, wsproto framing ~20 µs): too much for
30 Hz to 1000 clients on one core. Server-to-client frames are not masked, so one frame's bytes
are the same for every client: the hub frames each observation once, and :meth:`Client.offer`
writes those bytes straight to the client's non-blocking socket with ``os.write`` (a single
syscall, no task switch, no lock taken) whenever nothing else is being written on that
connection. If the kernel takes only part of the frame, or none, the rest goes to that client's
writer task, which sends it with trio's awaited ``send_all`` under trio-websocket's own send
lock, and the client is skipped by the fast path (so it skips stale observations) until its
writer has caught up and sent the latest. A client that stopped reading therefore costs one
failed syscall per observation and never delays anyone else.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    wrap_server_stream,
)
from wsproto.connection import ConnectionState

from trackerd import protocol
from trackerd.http import ReplayStream
from trackerd.hub import Hub, Published
from trackerd.settings import Settings

log = logging.getLogger(__name__)

CLOSE_GOING_AWAY = 1001
CLOSE_INTERNAL_ERROR = 1011


def text_frame(text: str) -> bytes:
    """An unmasked, final WebSocket text frame (RFC 6455 §5.2), as a server sends it."""
    payload = text.encode()
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x81, n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 127, n)
    return header + payload


@dataclass(frozen=True, slots=True)
class ClientStatistics:
    fast_sends: int
    slow_sends: int
    skipped: int
    protocol_errors: int

    def __add__(self, other: ClientStatistics) -> ClientStatistics:
        return ClientStatistics(
            self.fast_sends + other.fast_sends,
            self.slow_sends + other.slow_sends,
            self.skipped + other.skipped,
            self.protocol_errors + other.protocol_errors,
        )


class Client:
    """One connected WebSocket client. Implements the hub's ``Subscriber``."""

    def __init__(
        self, conn: WebSocketConnection, hub: Hub, settings: Settings, count: Callable[[], int]
    ) -> None:
        self.conn = conn
        self._hub = hub
        self._settings = settings
        self._count = count
        self._socket = _plain_socket(conn)
        self._wake = trio.Event()
        self._pending: Published | None = None  # newest observation the fast path could not send
        self._remainder = b""  # the part of a frame the kernel did not take
        self._backlogged = False
        self._errors: list[str] = []  # capture errors to report; bounded below
        self._last_seq = 0
        self.fast_sends = 0
        self.slow_sends = 0
        self.skipped = 0
        self.protocol_errors = 0
        self.peer = _peer(conn, self._socket)

    # --- the hub's side (synchronous, never blocks) -------------------------------------------

    def offer(self, published: Published) -> None:
        if self._backlogged or not self._can_write_now():
            if self._pending is not None:
                self.skipped += 1
            self._pending = published
            self._backlogged = True
            self._wake.set()
            return
        frame = published.encoded("ws-text", text_frame)
        assert self._socket is not None  # _can_write_now checked it
        try:
            written = os.write(self._socket.fileno(), frame)
        except BlockingIOError:
            written = 0
        except OSError:
            # Reset or gone: let the writer's awaited send discover it and end the connection.
            written = 0
        self._last_seq = published.seq
        if written == len(frame):
            self.fast_sends += 1
            return
        self._remainder = frame[written:]
        self._backlogged = True
        self._wake.set()

    def notify_error(self, message: str) -> None:
        # At most a handful: a source failing over and over needs saying once per attempt, not
        # queued without end for a client that is not reading.
        if len(self._errors) < 4:
            self._errors.append(message)
        self._wake.set()

    def _can_write_now(self) -> bool:
        conn = self.conn
        return (
            self._socket is not None
            # -1 once the socket is closed: never write to a number the kernel may have given
            # to another connection since.
            and self._socket.fileno() >= 0
            and conn.closed is None
            and conn._wsproto.state == ConnectionState.OPEN
            and not conn._stream_lock.locked()
        )

    # --- tasks ---------------------------------------------------------------------------------

    async def serve(self) -> None:
        """Run the client until it leaves; always leaves the hub."""
        try:
            await self.send(protocol.connection())
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer)
                nursery.start_soon(self._heartbeat)
                await self._reader()
        except* ConnectionClosed:
            pass  # the peer left, or was dropped: the normal end of a connection
        finally:
            self._hub.unsubscribe(self)

    async def send(self, text: str) -> None:
        """An awaited send through trio-websocket (replies, errors, backlog)."""
        self.slow_sends += 1
        await self.conn.send_message(text)

    async def _reader(self) -> None:
        while True:
            data = await self.conn.get_message()
            try:
                command = protocol.parse_client_message(data)
            except protocol.ProtocolError as exc:
                self.protocol_errors += 1
                await self.send(protocol.error(str(exc)))
                continue
            await self._handle(command)

    async def _handle(self, command: protocol.Command) -> None:
        if command is protocol.Command.START_TRACKING:
            if self._hub.subscribe(self):
                log.info("%s started tracking", self.peer)
        elif command is protocol.Command.STOP_TRACKING:
            if self._hub.unsubscribe(self):
                log.info("%s stopped tracking", self.peer)
            self._pending = None
        elif command is protocol.Command.PING:
            await self.send(protocol.pong())
        elif command is protocol.Command.STATUS:
            stats = self._hub.statistics()
            await self.send(
                protocol.status(
                    self._hub.is_subscribed(self),
                    self._count(),
                    capture_running=stats.capture_running,
                    tracking_clients=stats.subscribers,
                    source=self._hub.source_description if stats.capture_running else None,
                )
            )

    async def _writer(self) -> None:
        """Sends what could not go at once: errors, a frame's remainder, the latest observation."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            while self._errors:
                await self.send(protocol.error(self._errors.pop(0)))
            if self._remainder:
                rest, self._remainder = self._remainder, b""
                await self._send_raw(rest)
            pending, self._pending = self._pending, None
            if (
                pending is not None
                and pending.seq > self._last_seq
                and self._hub.is_subscribed(self)
            ):
                self._last_seq = pending.seq
                await self.send(pending.text)
            # Caught up; until now offers only parked the newest value, which the loop above sent.
            if self._pending is None and not self._remainder:
                self._backlogged = False

    async def _send_raw(self, data: bytes) -> None:
        """Finish a frame the fast path began, holding trio-websocket's send lock so that
        nothing else is written to the stream in between."""
        conn = self.conn
        async with conn._stream_lock:
            self.slow_sends += 1
            try:
                await conn._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise ConnectionClosed(conn.closed) from None

    async def _heartbeat(self) -> None:
        interval = self._settings.heartbeat_interval_s
        timeout = self._settings.heartbeat_timeout_s
        while True:
            await trio.sleep(interval)
            with trio.move_on_after(timeout) as scope:
                await self.conn.ping()
            if scope.cancelled_caught:
                log.warning(
                    "%s did not answer a ping within %.1f s: dropping it", self.peer, timeout
                )
                with trio.move_on_after(1.0):
                    await self.conn.aclose(CLOSE_GOING_AWAY, "heartbeat timeout")
                raise ConnectionClosed(self.conn.closed)

    def statistics(self) -> ClientStatistics:
        return ClientStatistics(
            self.fast_sends, self.slow_sends, self.skipped, self.protocol_errors
        )


def _peer(conn: WebSocketConnection, sock: trio.socket.SocketType | None) -> str:
    """``host:port`` of the client, for the logs."""
    if sock is not None:
        try:
            host, port = sock.getpeername()[:2]
        except OSError:  # reset before we asked
            return "?"
        return f"{host}:{port}"
    remote = conn.remote
    return remote if isinstance(remote, str) else f"{remote.address}:{remote.port}"


def _plain_socket(conn: WebSocketConnection) -> trio.socket.SocketType | None:
    """The socket under a plain TCP connection; None (no fast path) for TLS and the like."""
    stream = conn._stream
    if isinstance(stream, ReplayStream):
        # Only this wrapper is looked through: it adds nothing on the way out. (A TLS stream
        # also has a transport_stream, and writing around it would send plaintext.)
        stream = stream.transport_stream
    return stream.socket if isinstance(stream, trio.SocketStream) else None


class Server:
    """Accepts connections, runs a :class:`Client` for each, closes them all on shutdown."""

    def __init__(self, settings: Settings, hub: Hub) -> None:
        self._settings = settings
        self._hub = hub
        self.clients: set[Client] = set()
        self._departed = ClientStatistics(0, 0, 0, 0)
        self.connections_total = 0

    @property
    def connected(self) -> int:
        return len(self.clients)

    async def serve_stream(self, stream: trio.abc.Stream) -> None:
        """Run the WebSocket handshake on ``stream`` (its request head replayed) and serve it."""
        async with trio.open_nursery() as nursery:
            with trio.move_on_after(self._settings.handshake_timeout_s) as scope:
                request = await wrap_server_stream(
                    nursery,
                    stream,
                    # Handled as they come; a client that floods waits on TCP.
                    message_queue_size=1,
                    max_message_size=self._settings.max_message_bytes,
                )
            if not scope.cancelled_caught:
                await self.handle(request)
            nursery.cancel_scope.cancel()

    async def handle(self, request: WebSocketRequest) -> None:
        try:
            conn = await request.accept()
        except ConnectionClosed:
            return  # gone during the handshake
        client = Client(conn, self._hub, self._settings, lambda: self.connected)
        self.clients.add(client)
        self.connections_total += 1
        log.info("%s connected (%d clients)", client.peer, self.connected)
        try:
            await client.serve()
        except Exception:
            # A bug in one client's handling must not take the server (and everyone) down:
            # trio-websocket would let it escape into the listener's nursery. Log it in full,
            # close this client with 1011, carry on.
            log.exception("%s: unexpected error; closing with 1011", client.peer)
            with trio.move_on_after(1.0):
                await conn.aclose(CLOSE_INTERNAL_ERROR, "internal error")
        finally:
            self.clients.discard(client)
            self._departed += client.statistics()
            self._hub.unsubscribe(client)
            log.info("%s disconnected (%d clients)", client.peer, self.connected)

    def statistics(self) -> ClientStatistics:
        """Totals over every client so far, connected or gone."""
        total = self._departed
        for client in self.clients:
            total += client.statistics()
        return total

    async def close_all(self, code: int, reason: str) -> None:
        """Close every client concurrently (each close waits for the peer's reply)."""
        async with trio.open_nursery() as nursery:
            for client in list(self.clients):
                nursery.start_soon(_close, client.conn.aclose, code, reason)


async def _close(aclose: Callable[[int, str], Awaitable[None]], code: int, reason: str) -> None:
    await aclose(code, reason)
