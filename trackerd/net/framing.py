"""WebSocket framing on the server's side of one connection: the fan-out's fast path out, and
the message limits and budgets in.

The fan-out path. trio-websocket's ``send_message`` (trio's ``send_all`` plus wsproto's framing)
costs too much per message for 30 Hz to a thousand clients on one core. Server-to-client frames
are not masked, so one frame's bytes are the same for every client: the hub frames each
observation once, and :meth:`Client.offer` hands those bytes to the client's non-blocking socket
with one ``os.write`` (no task switch, no lock taken, no per-client framing) through
:meth:`FrameStream.try_send`. The candidate paths and their measured costs: docs/experiments.md
(``python -m benchmarks.bench_send_path``, ``python -m benchmarks fanout``).

A task per client woken for every message costs more than the naive loop (a task switch per
client per message), so the writer task is kept for the exceptions: a client whose socket is
full. If the kernel takes only part of a frame, or none, that client is *backlogged*: the rest
of the frame stays in its :class:`FrameStream`, which writes it before any other byte on that
connection (so a reply, a ping or a close can never land inside a frame), and the client's
writer task sends the newest observation with trio's awaited send when the socket drains; until
then the fast path skips that client and offers only replace the one value it keeps. A client
that stopped reading therefore costs one refused call per observation and delays no one.

On the way in, :class:`FrameStream` hands every byte to :class:`trackerd.net.inbound.InboundFrames`
before trio-websocket sees it: a message over a limit is closed here with its code (1009, 1008),
and each read is charged to the connection's budget (:class:`trackerd.net.limits.InboundBudget`),
which may hold the next read back so that a flood waits on TCP.
"""

from __future__ import annotations

import enum
import logging
import os
import struct
from collections.abc import Callable
from typing import Final

import trio

from trackerd.net.inbound import InboundFrames, Violation
from trackerd.net.limits import InboundBudget, TokenBucket
from trackerd.net.web import ReplayStream

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S: Final = 1.0
"""How long a close the server starts on its own (a limit broken, a heartbeat missed, an
internal error) waits for the socket."""
PUSH_READ_BYTES: Final = 64 * 1024
"""The most read at once from a client that pushes frames. trio-websocket asks for 4 KiB, which
for commands keeps each read's charge to the byte budget small; a pushed JPEG then took several
reads, each a pass through the event loop and wsproto (measured: docs/experiments.md)."""


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


class SendResult(enum.Enum):
    SENT = "sent"
    """The whole frame is in the kernel's buffer."""
    STARTED = "started"
    """Part of it is; the stream holds the rest and writes it before anything else."""
    REFUSED = "refused"
    """Nothing was written; the caller must use the awaited path."""


SENT: Final = SendResult.SENT
STARTED: Final = SendResult.STARTED
REFUSED: Final = SendResult.REFUSED
CLOSE_OPCODE_BYTE: Final = 0x88
"""The first byte of an unfragmented close frame (FIN + opcode 8)."""


class Writes(enum.Enum):
    """Where a :class:`FrameStream`'s writing stands: the one state every write checks."""

    FAST = "fast"
    """Idle, on a plain socket: :meth:`FrameStream.try_send` may write."""
    AWAITED = "awaited"
    """An awaited write is under way, or the stream has no plain socket (TLS)."""
    REMAINDER = "remainder"
    """:meth:`FrameStream.try_send` left part of a frame; the next awaited write finishes it."""
    CLOSED = "closed"
    """A close frame was written (or the stream closed): no data may follow."""
    BROKEN = "broken"
    """A write failed or was cancelled part-way: every later write is refused."""


class FrameStream(trio.abc.Stream):
    """The byte stream under one WebSocket connection, with a synchronous way in for frames.

    trio-websocket writes through :meth:`send_all` (awaited, under its own lock; one whole frame
    or handshake response per call); the fan-out writes pre-framed messages through
    :meth:`try_send` (synchronous, one ``os.write``). The rules that keep frames whole:

    - bytes of a frame that :meth:`try_send` could not hand to the kernel are written before
      anything else, by the next :meth:`send_all` or :meth:`flush`;
    - :meth:`try_send` refuses while such bytes wait, while an awaited write is under way, and
      for good once a close frame has been written (no data may follow a close);
    - a write that fails or is cancelled half-way leaves the stream in an unknown state, so
      every later write is refused (trio-websocket then ends the connection) rather than risk
      a frame that starts inside another.

    All of that is one state, :class:`Writes`, so the fan-out's check costs one comparison.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        frames: InboundFrames | None = None,
        budget: InboundBudget | None = None,
        skip: int = 0,
    ) -> None:
        """``frames`` and ``budget`` police what the client sends from its first frame on; the
        first ``skip`` bytes (the request head, which may carry kilobytes of cookies) are not
        frames and are not charged."""
        self.transport_stream = stream
        self.socket = _plain_socket(stream)
        """The socket under a plain TCP connection; ``None`` (no fast path) otherwise."""
        self._lock = trio.StrictFIFOLock()
        self._remainder = b""
        """The rest of a frame :meth:`try_send` started; empty unless in REMAINDER."""
        self._failure: BaseException | None = None
        self._idle = Writes.FAST if self.socket is not None else Writes.AWAITED
        """The state between writes, while the stream is open."""
        self._state = self._idle
        self._frames = frames
        self._budget = budget
        self._skip = skip
        self._closed_callbacks: list[Callable[[], object]] = []
        self.sent_close_code: int | None = None
        """The code of the close frame this server sent, once it has (for the log)."""
        self.closed_first = False
        """Whether that close started the closing handshake, rather than answered the peer's."""
        self.violation: Violation | None = None
        """The inbound limit the client broke, if it did; the connection is then closed."""
        self.push_budget: TokenBucket | None = None
        """While the client pushes frames: the budget their bytes are charged to."""

    def on_close(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` when the stream is closed (by trio-websocket, which closes it
        when it refuses a handshake, or by anyone else)."""
        self._closed_callbacks.append(callback)

    @property
    def pending_bytes(self) -> int:
        """Bytes of a started frame still waiting for the socket (at most one frame's worth)."""
        return len(self._remainder)

    def try_send(self, frame: bytes) -> SendResult:
        """Write a whole frame now if the socket takes it, without waiting. Never blocks."""
        sock = self.socket
        if self._state is not Writes.FAST or sock is None:
            return REFUSED
        # Asked on every call: a closed trio socket reports -1, so a frame never goes to a
        # descriptor number the kernel has meanwhile given to another connection.
        fd = sock.fileno()
        if fd < 0:
            return REFUSED
        try:
            written = os.write(fd, frame)
        except BlockingIOError:
            return REFUSED
        except OSError as exc:
            # Reset, or gone. Not swallowed: the next awaited write raises it, and that is
            # where the connection ends.
            self._fail(exc)
            return REFUSED
        if written == len(frame):
            return SENT
        self._remainder = frame[written:]
        self._state = Writes.REMAINDER
        return STARTED

    async def flush(self) -> None:
        """Finish the frame :meth:`try_send` started, if any."""
        async with self._lock:
            await self._write(b"")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        async with self._lock:
            await self._write(data)

    async def _write(self, data: bytes | bytearray | memoryview) -> None:
        if self._state is Writes.BROKEN:
            raise trio.BrokenResourceError("an earlier write failed part-way") from self._failure
        if data and data[0] == CLOSE_OPCODE_BYTE:
            self._idle = Writes.CLOSED
            if self.sent_close_code is None and len(data) >= 4:
                # A server's close frame is unmasked: the code comes right after the length.
                self.sent_close_code = int.from_bytes(data[2:4], "big")
                # The scanner reads every byte before trio-websocket does, so a client's close
                # is always seen before the echo of it is written.
                self.closed_first = self._frames is None or not self._frames.close_seen
        if self._state is not Writes.CLOSED:
            self._state = Writes.AWAITED
        rest, self._remainder = self._remainder, b""
        try:
            if rest:
                await self.transport_stream.send_all(rest)
            if data:
                await self.transport_stream.send_all(data)
        except BaseException as exc:  # cancelled too: how much was written is unknown
            self._fail(exc)
            raise
        self._state = self._idle

    def _fail(self, exc: BaseException) -> None:
        self._state = self._idle = Writes.BROKEN
        self._failure = exc
        self._remainder = b""

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport_stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self.violation is not None:
            return b""
        if self.push_budget is not None:
            max_bytes = PUSH_READ_BYTES
        data = await self.transport_stream.receive_some(max_bytes)
        frames = data
        if self._skip and data:
            frames = data[self._skip :]
            self._skip = max(0, self._skip - len(data))
        if not frames:
            return data
        now = trio.current_time()
        read = self._frames.feed(frames, now) if self._frames is not None else None
        if read is not None and read.violation is not None:
            await self._close_for(read.violation)
            return b""  # trio-websocket takes this as the end of the connection
        if self._budget is not None:
            cost, binary = (read.cost, read.binary) if read is not None else (len(frames), 0)
            # Over budget: hold these bytes back until the budget is out of debt. Meanwhile
            # nothing more is read, so the sender's TCP window fills and it has to wait. (Held
            # back, not handed on: one 4 KiB read can hold 680 empty frames.) A push session's
            # frames are charged to the session's own budget, not to the commands' ones.
            push = self.push_budget
            wait = self._budget.charge(now, cost + (0 if push else binary))
            if push is not None:
                wait = max(wait, push.charge(now, binary))
            if wait > 0:  # (the read itself was the checkpoint)
                await trio.sleep(wait)
        return data

    async def _close_for(self, violation: Violation) -> None:
        """Send the close frame for a broken limit (unless a close was sent already). The peer's
        reply is not awaited: nothing more is read from a client that broke a limit."""
        self.violation = violation
        reason = violation.reason.encode()[:123]
        frame = struct.pack("!BBH", CLOSE_OPCODE_BYTE, 2 + len(reason), violation.code) + reason
        log.debug("closing with %d: %s", violation.code, violation.reason)
        with trio.move_on_after(CLOSE_TIMEOUT_S):
            async with self._lock:
                if self._idle is not Writes.FAST and self._idle is not Writes.AWAITED:
                    return  # closed or broken already
                try:
                    await self._write(frame)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    # The peer is gone already; the end of the stream that follows says so.
                    return

    async def aclose(self) -> None:
        if self._state is not Writes.BROKEN:
            self._state = self._idle = Writes.CLOSED
        callbacks, self._closed_callbacks = self._closed_callbacks, []
        for callback in callbacks:
            callback()
        await self.transport_stream.aclose()


def _plain_socket(stream: trio.abc.Stream) -> trio.socket.SocketType | None:
    """The socket under a plain TCP connection; None (no fast path) for TLS and the like."""
    if isinstance(stream, ReplayStream):
        # Only this wrapper is looked through: it adds nothing on the way out. (A TLS stream
        # also has a transport_stream, and writing around it would send plaintext.)
        stream = stream.transport_stream
    return stream.socket if isinstance(stream, trio.SocketStream) else None
