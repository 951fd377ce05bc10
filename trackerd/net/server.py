"""The WebSocket side: one task per client, and the cheap path that fans observations out.

This is the only module that imports trio-websocket (in maintenance mode upstream, so kept in one
place where it could be replaced). It uses only its public API; the fast path works on the byte
stream trio-websocket is given (:class:`FrameStream`), not on the library's internals.

Each connection gets a :class:`Client` with three tasks: a reader (commands in, replies out), a
writer (anything that has to wait for the socket) and a heartbeat (WebSocket pings; a peer that
does not answer within the timeout is dropped).

The fan-out path (:mod:`trackerd.net.framing`): the hub frames each observation once, and
:meth:`Client.offer` hands those bytes to the client's socket with one ``os.write``. A client
whose socket is full is *backlogged*: its writer task sends the newest observation with trio's
awaited send when the socket drains; until then offers only replace the one value it keeps. A
client that stopped reading therefore costs one refused call per observation and delays no one.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    wrap_server_stream,
)
from wsproto.utilities import LocalProtocolError

from trackerd.capture import CaptureStatistics
from trackerd.errors import TrackerdError
from trackerd.hub import Hub, Published
from trackerd.net import protocol
from trackerd.net.framing import CLOSE_TIMEOUT_S, REFUSED, SENT, STARTED, FrameStream, text_frame
from trackerd.net.inbound import InboundFrames
from trackerd.net.limits import CommandLimit, TokenBucket, Verdict, inbound_budget, shared_budget
from trackerd.net.sessions import (
    PushSession,
    SessionClosed,
    Sessions,
    SessionsStatistics,
    SessionStatistics,
)
from trackerd.platform.store import StoreError
from trackerd.platform.tokens import EVERYTHING, Grant
from trackerd.settings import Settings

log = logging.getLogger(__name__)

CLOSE_GOING_AWAY: Final = 1001
CLOSE_POLICY_VIOLATION: Final = 1008
CLOSE_INTERNAL_ERROR: Final = 1011
WS_TEXT: Final = "ws-text"
"""The key under which a :class:`Published` keeps its WebSocket text frame."""
MAX_QUEUED_ERRORS: Final = 4
MAX_QUEUED_EVENTS: Final = 64
"""Session events waiting for an observer's writer. Events come a few a minute; an observer
that lets 64 pile up is not reading, and is closed (1008 ``too_slow``) rather than buffered."""
"""Capture errors kept for a client whose socket is full: the latest few, not all of them."""


NEEDS: Final = {
    protocol.Command.START_TRACKING: "stream",
    protocol.Command.START_SESSION: "push",
    protocol.Command.OBSERVE: "observe",
}
"""The grant each command needs (:mod:`trackerd.platform.tokens`); the others need none."""

_ONE_MODE: Final = (
    "this connection is tracking already: send stop_tracking first to switch between the "
    "server's camera and your own frames"
)


class SlowClient(TrackerdError):
    """A client's socket took nothing for ``send_timeout_s``: it is dropped."""


@dataclass(frozen=True, slots=True)
class ClientStatistics:
    fast_sends: int
    """Observations written straight to the socket by the fan-out."""
    slow_sends: int
    """Messages sent with an awaited write: replies, errors, a backlogged client's latest."""
    skipped: int
    """Observations a backlogged client never got because a newer one replaced them."""
    protocol_errors: int
    rate_limited: int = 0
    """Commands refused by the rate limit."""

    def __add__(self, other: ClientStatistics) -> ClientStatistics:
        return ClientStatistics(
            self.fast_sends + other.fast_sends,
            self.slow_sends + other.slow_sends,
            self.skipped + other.skipped,
            self.protocol_errors + other.protocol_errors,
            self.rate_limited + other.rate_limited,
        )


@dataclass(frozen=True, slots=True)
class ServerStatistics:
    clients: ClientStatistics
    """Totals over every client so far, connected or gone."""
    connected: int
    connections_total: int
    """WebSocket connections accepted so far."""
    closed_by_limit: Mapping[int, int]
    """WebSocket clients closed for breaking a message limit, by close code."""
    sessions: SessionsStatistics


@dataclass(frozen=True, slots=True)
class Context:
    """What every client of one server shares."""

    settings: Settings
    hub: Hub
    connected: Callable[[], int]
    capture: Callable[[], CaptureStatistics]
    sessions: Sessions


class Client:
    """One connected WebSocket client. Implements the hub's ``Subscriber``.

    Commands are handled by :meth:`_handle`, which looks each up in :attr:`_handlers`; what a
    client holds of its own (its subscription, the observation waiting for its writer, its
    limits) lives here, so that a new kind of session adds a handler and its state beside
    these, not a branch in every task."""

    def __init__(
        self,
        conn: WebSocketConnection,
        stream: FrameStream,
        context: Context,
        peer: str,
        address: str = "?",
        grant: Grant = EVERYTHING,
    ) -> None:
        self.conn = conn
        self.stream = stream
        self._context = context
        self._hub = context.hub
        self._settings = context.settings
        self._handlers: dict[protocol.Command, Callable[[], Awaitable[None]]] = {
            protocol.Command.START_TRACKING: self._start_tracking,
            protocol.Command.STOP_TRACKING: self._stop_tracking,
            protocol.Command.PING: self._ping,
            protocol.Command.STATUS: self._status,
            protocol.Command.START_SESSION: self._start_session,
            protocol.Command.OBSERVE: self._observe,
        }
        self._events: collections.deque[str] = collections.deque()
        self._events_overflowed = False
        self._session: PushSession | None = None
        """This client's push session, while it pushes its own frames."""
        self._last_frames: SessionStatistics | None = None
        """Once this connection has pushed, the frame counts of its session so far or its last
        one: ``status`` carries the push fields on push connections only."""
        self._session_scope = trio.CancelScope()
        self._nursery: trio.Nursery | None = None
        self._wake = trio.Event()
        self._backlogged = False
        """True from a frame the fast path could not finish until the writer has caught up:
        meanwhile offers only replace :attr:`_pending`, so observations never go out of order."""
        self._pending: Published | None = None
        """The newest observation waiting for the writer (one, never a queue)."""
        self._errors: collections.deque[tuple[str, str]] = collections.deque(
            maxlen=MAX_QUEUED_ERRORS
        )
        self._last_seq = 0
        self.fast_sends = 0
        self.slow_sends = 0
        self.skipped = 0
        self.protocol_errors = 0
        self.rate_limited = 0
        self._commands = CommandLimit(self._settings, trio.current_time())
        self.peer = peer
        """Who this is, for the logs: ``host:port``, or the forwarded address behind a proxy."""
        self.address = address
        """The client's address (behind a trusted proxy, the forwarded one), for the limits."""
        self.grant = grant
        """What this connection may do, and for whom: its session token's verified claims."""

    # --- the hub's side (synchronous, never blocks) -------------------------------------------

    def offer(self, published: Published) -> None:
        if not self._backlogged:
            result = self.stream.try_send(published.encoded(WS_TEXT, text_frame))
            if result is SENT:
                self._last_seq = published.seq
                self.fast_sends += 1
                return
            if result is STARTED:
                self._last_seq = published.seq
                self.fast_sends += 1
                self._backlogged = True
                self._wake.set()  # the writer finishes the frame when the socket drains
                return
        if self._pending is not None:
            self.skipped += 1
        self._pending = published
        self._backlogged = True
        self._wake.set()

    def notify_error(self, message: str, code: str) -> None:
        self._errors.append((message, code))
        self._wake.set()

    def notify_event(self, text: str) -> None:
        """A session event, for an observer or (``events_to_client``) its candidate. Never
        blocks; :data:`MAX_QUEUED_EVENTS` waiting ends the connection instead of growing."""
        if len(self._events) >= MAX_QUEUED_EVENTS:
            self._events_overflowed = True
        else:
            self._events.append(text)
        self._wake.set()

    # --- tasks ---------------------------------------------------------------------------------

    async def serve(self) -> None:
        """Run the client until it leaves; always leaves the hub. Ends with ConnectionClosed
        when the peer leaves or is dropped."""
        try:
            await self.send(protocol.connection())
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._writer)
                nursery.start_soon(self._heartbeat)
                if self.grant.expires_at is not None:
                    nursery.start_soon(self._expire, self.grant.expires_at)
                await self._reader()
        finally:
            self._hub.unsubscribe(self)
            if self._context.sessions.records is not None:
                self._context.sessions.records.unobserve(self)
            self._end_session(lost=True)

    async def send(self, text: str) -> None:
        """An awaited send through trio-websocket (replies, errors, a backlogged client)."""
        self.slow_sends += 1
        with self._send_deadline():
            await self.conn.send_message(text)

    async def reply(self, text: str) -> None:
        """A push session's answer (one per analysed frame, so at the sessions' frame rate):
        by the fast path when the socket takes it, the frame's rest flushed at once if it took
        only part; awaited through trio-websocket otherwise (a full socket, TLS, a close
        under way). The fast path skips wsproto's framing and trio's locked ``send_all``
        (~50 µs a message, in the event loop's thread, which holds the GIL)."""
        result = self.stream.try_send(text_frame(text))
        if result is REFUSED:
            await self.send(text)
            return
        self.fast_sends += 1
        if result is STARTED:
            try:
                with self._send_deadline():
                    await self.stream.flush()
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ConnectionClosed(self.conn.closed) from exc

    @contextlib.contextmanager
    def _send_deadline(self) -> Iterator[None]:
        """An awaited write that the socket does not take within ``send_timeout_s`` means the
        client stopped reading (or its network did): raise SlowClient, which drops it."""
        timeout = self._settings.send_timeout_s
        with trio.move_on_after(timeout) as scope:
            yield
        if scope.cancelled_caught:
            raise SlowClient(f"took nothing for {timeout:g} s")

    async def _reader(self) -> None:
        while True:
            data = await self.conn.get_message()
            if isinstance(data, bytes | bytearray) and self._session is not None:
                # A pushed frame: its rate is max_fps, not the command limit's.
                refusal = self._session.receive(bytes(data))
                if refusal is not None:
                    # Every frame refused is answered (over the rate, replaced, bad): by the
                    # fast path, as eye_data is, so that a flood of refused frames costs the
                    # loop a socket write each, without trio-websocket's ~50 µs (see reply).
                    await self.reply(refusal)
                continue
            verdict = self._commands.check(trio.current_time())
            if verdict is not Verdict.ALLOWED:
                await self._refuse_for_rate(verdict)
                continue
            try:
                command = protocol.parse_client_message(data)
            except protocol.ProtocolError as exc:
                self.protocol_errors += 1
                log.debug("%s sent a bad message: %s", self.peer, exc)
                await self.send(protocol.error(str(exc), code="bad_message"))
                continue
            needed = NEEDS.get(command)
            if needed is not None and not self.grant.allows(needed):
                what = ", ".join(sorted(self.grant.grants))
                message = f"this connection's token does not grant {needed} (it grants {what})"
                await self.send(protocol.error(message, code="not_granted"))
                continue
            if command is protocol.Command.OBSERVE:
                try:
                    await self._observe(protocol.observed_sid(data))
                except protocol.ProtocolError as exc:
                    await self.send(protocol.error(str(exc), code="bad_message"))
                continue
            await self._handlers[command]()

    async def _refuse_for_rate(self, verdict: Verdict) -> None:
        """Over the rate limit: an error for this message, or for a flood a 1008 close."""
        self.rate_limited += 1
        if verdict is Verdict.FLOOD:
            log.warning("%s kept flooding past the rate limit: closing with 1008", self.peer)
            with trio.move_on_after(CLOSE_TIMEOUT_S):
                await self.conn.aclose(CLOSE_POLICY_VIOLATION, "rate limit exceeded")
            raise ConnectionClosed(self.conn.closed)
        limit = self._settings.rate_limit_per_s
        message = f"rate limit: at most {limit:g} messages a second"
        await self.send(protocol.error(message, code="rate_limited"))

    async def _start_tracking(self) -> None:
        if self._session is not None:
            await self.send(protocol.error(_ONE_MODE, code="already_tracking"))
        elif self._hub.subscribe(self):
            log.info("%s started tracking", self.peer)

    async def _start_session(self) -> None:
        """A push session: the client sends frames, and gets its own eye_data."""
        settings = self._settings
        if self._hub.is_subscribed(self):
            await self.send(protocol.error(_ONE_MODE, code="already_tracking"))
            return
        session = self._session
        if session is None:
            opened = self._context.sessions.open(self.address, self.grant)
            if isinstance(opened, SessionClosed):
                log.info("%s: push session refused: %s", self.peer, opened)
                await self.send(protocol.error(str(opened), code=opened.code))
                return
            session = opened
            assert self._nursery is not None
            self._session = session
            records = self._context.sessions.records
            if self.grant.events_to_client and records is not None:
                records.observe(session.id, self)
            self._session_scope = trio.CancelScope()
            self._nursery.start_soon(self._run_session, session, self._session_scope)
            self.stream.push_budget = TokenBucket(
                settings.max_fps * settings.max_frame_bytes,
                2 * settings.max_frame_bytes,
                trio.current_time(),
            )
            log.info("%s started push session %s", self.peer, session.id)
        # A second one changes nothing, and is answered the same.
        await self.send(
            protocol.tracking_started(session.id, settings.max_frame_bytes, settings.max_fps)
        )

    async def _run_session(self, session: PushSession, scope: trio.CancelScope) -> None:
        with scope:
            try:
                await session.run(self.reply)
            except SessionClosed as closed:
                # The session is over and so is the connection: a client that held a session
                # idle or sent costly frames starts again from the handshake, past the limits.
                log.warning("%s: push session %s closed: %s", self.peer, session.id, closed)
                self._end_session(closed)
                await self.send(protocol.error(str(closed), code=closed.code))
                with trio.move_on_after(CLOSE_TIMEOUT_S):
                    await self.conn.aclose(CLOSE_POLICY_VIOLATION, closed.code)
                raise ConnectionClosed(self.conn.closed) from None

    async def _expire(self, expires_at: float) -> None:
        """A session token is good until its ``exp``: then its session ends (reason
        ``token_expired``) and so does the connection (1008). A platform that wants a longer
        interview mints a longer token; to go on, the page reconnects with a new one."""
        await trio.sleep(max(0.0, expires_at - time.time()))
        closed = SessionClosed("token_expired", "this connection's session token has expired")
        log.info("%s: %s", self.peer, closed)
        self._session_scope.cancel()
        self._end_session(closed)
        await self.send(protocol.error(str(closed), code=closed.code))
        with trio.move_on_after(CLOSE_TIMEOUT_S):
            await self.conn.aclose(CLOSE_POLICY_VIOLATION, closed.code)
        raise ConnectionClosed(self.conn.closed)

    async def _stop_tracking(self) -> None:
        if self._hub.unsubscribe(self):
            log.info("%s stopped tracking", self.peer)
        self._pending = None
        if self._session is not None:
            log.info("%s ended push session %s", self.peer, self._session.id)
            self._end_session()

    def _end_session(self, closed: SessionClosed | None = None, *, lost: bool = False) -> None:
        """Stop analysing (a frame in its thread finishes first, unanswered) and free the
        tracker. ``closed``: why the server ended the session. ``lost``: the connection is
        over, and a session token's session waits for the candidate to come back."""
        session, self._session = self._session, None
        if session is not None:
            self._last_frames = session.statistics()
            if closed is None:
                self._session_scope.cancel()
            if lost and closed is None:
                self._context.sessions.detach(session)
            else:
                self._context.sessions.close(session, closed)
            self.stream.push_budget = None

    async def _observe(self, sid: str | None = None) -> None:
        """This connection gets ``sid``'s events from now on. A session token observes its own
        sid only; the shared token (an operator) names any."""
        own = self.grant.sid
        if own is not None and sid not in (None, own):
            message = "this connection's token observes its own session only"
            await self.send(protocol.error(message, code="not_granted"))
            return
        sid = sid or own
        if sid is None:
            message = 'observe needs a "sid" with this token'
            await self.send(protocol.error(message, code="bad_message"))
            return
        records = self._context.sessions.records
        if records is None or not records.observe(sid, self):
            await self.send(protocol.error("too many observers of this session", code="busy"))
            return
        try:
            report = await records.report(sid)
        except StoreError as exc:  # the events still come; the report so far cannot be read
            log.warning("%s: the report of %s cannot be read: %s", self.peer, sid, exc)
            report = None
        await self.send(protocol.observing(sid, report))

    async def _ping(self) -> None:
        await self.send(protocol.pong())

    async def _status(self) -> None:
        capture = self._context.capture()
        session = self._session
        frames = session.statistics() if session is not None else self._last_frames
        push: dict[str, object] = {}
        if frames is not None:  # a push connection: the session's, or its last one's
            push = {
                "session": session.id if session is not None else None,
                "frames_received": frames.received,
                "frames_analysed": frames.analysed,
                "frames_dropped": frames.dropped,
                "frames_bad": frames.bad,
            }
        await self.send(
            protocol.status(
                self._hub.is_subscribed(self),
                self._context.connected(),
                capture_running=capture.running,
                tracking_clients=self._hub.statistics().subscribers,
                source=capture.source,
                **push,
                **({"sid": self.grant.sid, "sub": self.grant.sub} if self.grant.sid else {}),
            )
        )

    async def _writer(self) -> None:
        """Sends what could not go at once: a frame's rest, errors, the latest observation."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            try:
                with self._send_deadline():
                    await self.stream.flush()
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                # As trio-websocket reports a failed write: the connection is over.
                raise ConnectionClosed(self.conn.closed) from exc
            while self._errors:
                message, code = self._errors.popleft()
                await self.send(protocol.error(message, code=code))
            if self._events_overflowed:
                log.warning("%s read too few of its session events: closing with 1008", self.peer)
                with trio.move_on_after(CLOSE_TIMEOUT_S):
                    await self.conn.aclose(CLOSE_POLICY_VIOLATION, "too_slow")
                raise ConnectionClosed(self.conn.closed)
            while self._events:
                await self.send(self._events.popleft())
            pending, self._pending = self._pending, None
            if (
                pending is not None
                and pending.seq > self._last_seq
                and self._hub.is_subscribed(self)
                and self.conn.closed is None  # closing: the reader ends this client
            ):
                self._last_seq = pending.seq
                await self.send(pending.text)
            if self._pending is None:
                # Caught up: a newer offer arriving while we sent would have set _pending (and
                # _wake) and been sent by the next turn of the loop instead.
                self._backlogged = False

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
                with trio.move_on_after(CLOSE_TIMEOUT_S):
                    await self.conn.aclose(CLOSE_GOING_AWAY, "heartbeat timeout")
                raise ConnectionClosed(self.conn.closed)

    def statistics(self) -> ClientStatistics:
        return ClientStatistics(
            self.fast_sends, self.slow_sends, self.skipped, self.protocol_errors, self.rate_limited
        )


class Server:
    """Accepts connections, runs a :class:`Client` for each, closes them all on shutdown."""

    def __init__(
        self,
        settings: Settings,
        hub: Hub,
        capture: Callable[[], CaptureStatistics],
        sessions: Sessions,
    ) -> None:
        self._settings = settings
        self._hub = hub
        self.sessions = sessions
        self._context = Context(settings, hub, lambda: self.connected, capture, sessions)
        self.clients: set[Client] = set()
        self._departed = ClientStatistics(0, 0, 0, 0)
        self.connections_total = 0
        self.admitted = 0
        """Connections in :meth:`serve_stream`: clients, and upgrades still shaking hands."""
        self.closed_by_limit: collections.Counter[int] = collections.Counter()
        """WebSocket clients closed for breaking a message limit, by close code."""
        self._shared_inbound = shared_budget(settings)
        """What every connection's reads are charged to (see :class:`InboundBudget`)."""

    @property
    def connected(self) -> int:
        return len(self.clients)

    def has_room(self) -> bool:
        """Whether one more WebSocket connection fits under ``max_connections``. Asked right
        before :meth:`serve_stream`, with no checkpoint between, so the two cannot race."""
        return self.admitted < self._settings.max_connections

    async def serve_stream(
        self,
        stream: trio.abc.Stream,
        *,
        skip: int,
        peer: str,
        address: str = "?",
        grant: Grant = EVERYTHING,
    ) -> None:
        """Run the WebSocket handshake on ``stream`` and serve the client until it leaves.
        ``stream`` replays the request head, whose ``skip`` bytes are not frames; ``grant`` is
        what the request's token allows."""
        self.admitted += 1
        try:
            await self._serve_stream(self._frame_stream(stream, skip), peer, address, grant)
        except* LocalProtocolError as group:
            # trio-websocket's reader answers a ping that crossed our close frame with a pong,
            # which wsproto refuses once the connection is closing, and the error escapes its
            # reader task. The connection was ending anyway; only it ends.
            log.debug("a ping crossed our close: %s", group.exceptions[0])
        except* Exception:
            # Anything else escaping trio-websocket's own tasks ends this connection, never
            # the server (the handler nursery would take every client down with it).
            log.exception("unexpected error in a WebSocket connection; closing it")
        finally:
            self.admitted -= 1

    def _frame_stream(self, stream: trio.abc.Stream, skip: int) -> FrameStream:
        settings = self._settings
        frames = InboundFrames(
            max_message_bytes=settings.max_message_bytes,
            max_fragments=settings.max_message_fragments,
            message_timeout_s=settings.message_timeout_s,
            max_binary_bytes=settings.max_frame_bytes,
        )
        budget = inbound_budget(settings, self._shared_inbound, trio.current_time())
        return FrameStream(stream, frames=frames, budget=budget, skip=skip)

    async def _serve_stream(
        self, frames: FrameStream, peer: str, address: str, grant: Grant
    ) -> None:
        async with trio.open_nursery() as nursery:
            with trio.move_on_after(self._settings.handshake_timeout_s) as scope:
                # trio-websocket closes the stream when wsproto refuses the request, but then
                # never returns from wrap_server_stream: stop waiting right then, so that a
                # refused handshake holds nothing (the gate refuses what it can see first).
                frames.on_close(scope.cancel)
                request = await wrap_server_stream(
                    nursery,
                    frames,
                    # Handled as they come; a client that floods waits on TCP.
                    message_queue_size=1,
                    # Ours are stricter, in bytes, text and binary apart (inbound.py).
                    max_message_size=max(
                        self._settings.max_message_bytes, self._settings.max_frame_bytes
                    ),
                )
            if scope.cancelled_caught:
                log.info("%s: WebSocket handshake failed or timed out", peer)
                nursery.cancel_scope.cancel()
                return
            await self._handle(request, frames, peer, address, grant)
            # The client's tasks are done, but a close handshake may be under way (ours, on
            # shutdown: the reader saw the close first). trio-websocket's own reader task, in
            # this nursery, is what receives the peer's reply and then closes the stream, which
            # ends it; cancelling it now would leave the close waiting for its timeout.
            nursery.cancel_scope.deadline = trio.current_time() + CLOSE_TIMEOUT_S

    async def _handle(
        self,
        request: WebSocketRequest,
        stream: FrameStream,
        peer: str,
        address: str,
        grant: Grant,
    ) -> None:
        try:
            conn = await request.accept()
        except ConnectionClosed:
            log.info("%s left during the WebSocket handshake", peer)
            return
        client = Client(conn, stream, self._context, peer, address, grant)
        self.clients.add(client)
        self.connections_total += 1
        log.info("%s connected (%d clients)", client.peer, self.connected)
        reason = "left"
        try:
            await client.serve()
        except* ConnectionClosed:
            reason = _closed_reason(conn, stream)
            if stream.violation is not None:
                self.closed_by_limit[stream.violation.code] += 1
        except* SlowClient as group:
            # Its stream is mid-frame now, so no close frame can follow: the TCP connection
            # is simply closed (by whoever handed us the stream) as this returns.
            log.warning("%s %s: dropping it", client.peer, group.exceptions[0])
            reason = "dropped (not reading)"
            await stream.aclose()  # ends trio-websocket's reader too
        except* Exception:
            # A bug in one client's handling must not take the server (and everyone) down:
            # trio-websocket would let it escape into the listener's nursery. Log it in full,
            # close this client with 1011, carry on.
            log.exception("%s: unexpected error; closing with 1011", client.peer)
            reason = "internal error"
            with trio.move_on_after(CLOSE_TIMEOUT_S):
                await conn.aclose(CLOSE_INTERNAL_ERROR, "internal error")
        finally:
            self.clients.discard(client)
            self._departed += client.statistics()
            self._hub.unsubscribe(client)
            log.info("%s disconnected: %s (%d clients)", client.peer, reason, self.connected)

    def statistics(self) -> ServerStatistics:
        total = self._departed
        for client in self.clients:
            total += client.statistics()
        return ServerStatistics(
            clients=total,
            connected=self.connected,
            connections_total=self.connections_total,
            closed_by_limit=dict(self.closed_by_limit),
            sessions=self.sessions.statistics(),
        )

    async def close_all(self, code: int, reason: str) -> None:
        """Close every client concurrently (each close waits for the peer's reply)."""
        async with trio.open_nursery() as nursery:
            for client in list(self.clients):
                nursery.start_soon(_close, client.conn.aclose, code, reason)


async def _close(aclose: Callable[[int, str], Awaitable[None]], code: int, reason: str) -> None:
    await aclose(code, reason)


def _closed_reason(conn: WebSocketConnection, stream: FrameStream) -> str:
    """How a connection ended, for the log: with the close code this server sent when it closed
    first, otherwise with the peer's (1006 when TCP ended with no close at all)."""
    if stream.violation is not None:
        return f"closed by the server ({stream.violation.code}: {stream.violation.reason})"
    if stream.closed_first and stream.sent_close_code is not None:
        return f"closed by the server ({stream.sent_close_code})"
    closed = conn.closed
    return f"closed ({closed.code} {closed.name})" if closed is not None else "closed"
