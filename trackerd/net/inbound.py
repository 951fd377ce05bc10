"""What a client sends, read frame by frame before trio-websocket parses it: the message limits
and the cost of each read.

trio-websocket bounds a message by ``len()`` of its decoded parts: characters for text, so
4000 × U+1F600 (16,000 bytes) passed a 4096 limit, and zero-length continuation frames never add
anything, so a message could be fragmented forever while its list of parts grew (RSS +88 MB with
200 such connections). :class:`InboundFrames` reads the frame headers of the raw byte stream
(RFC 6455 §5.2) as they arrive and enforces, per message:

- ``max_message_bytes`` on the payload bytes, counted from each frame's declared length, so an
  oversized message is refused at its header, before its payload is read (close 1009);
- ``max_message_fragments`` frames (close 1008);
- ``message_timeout_s`` from its first frame's header to the last byte of its last frame's
  payload (close 1008), checked as bytes arrive: a connection that sends nothing costs nothing,
  and the heartbeat's pongs are bytes. The payload is covered, not only the headers: a frame
  that declares 512 KiB and trickles it a byte at a time used to be bounded by the heartbeat
  alone (up to 40 s, holding its session and the buffer). A frame that stops arriving
  altogether is still the heartbeat's to end: its client cannot answer a ping in the middle
  of a frame.

The default of 5 s is kept for pushed frames too. A whole frame of the largest size (512 KiB)
then needs 105 KiB/s (0.84 Mbit/s) of uplink; the page's frames (640x480 JPEG at quality 0.8,
~28 KiB) need 6 KiB/s. An uplink too slow for one of those in 5 s could not track at all (one
frame in 5 s), so closing it (1008) costs its user nothing that worked. ``--message-timeout``
raises the bound for a deployment that differs.

It also prices each read for the inbound budgets (:mod:`trackerd.net.limits`): the bytes plus
:data:`FRAME_COST_BYTES` for every frame that starts in them, because the server's cost is per
frame (wsproto parses it, trio-websocket dispatches an event, a ping gets a pong) far more than
per byte. A frame that is invalid in some other way (unmasked, reserved bits, a reserved opcode)
is left to wsproto, which fails the connection: from there on nothing is policed here, so the
close is wsproto's, whatever the garbage after it declares.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, NamedTuple

FRAME_COST_BYTES: Final = 128
"""What one frame costs beyond its bytes, in bytes of budget. Measured with wsproto 1.3 on this
2-vCPU VM: 6.6 µs to parse an empty continuation frame, 8.8 µs for a ping and its pong, before
trio-websocket's dispatch; 128 B makes a flood of empty frames cost what ~128 B of payload do,
so a connection's 5 KiB/s budget is at most 40 frames a second."""

CLOSE_MESSAGE_TOO_BIG: Final = 1009
CLOSE_POLICY_VIOLATION: Final = 1008
_CONTINUATION: Final = 0x0
_BINARY: Final = 0x2
_CONTROL_BIT: Final = 0x8
_OPCODES: Final = frozenset({0x0, 0x1, 0x2, 0x8, 0x9, 0xA})


@dataclass(frozen=True, slots=True)
class Violation:
    """Why the connection must be closed, with the close code to send."""

    code: int
    reason: str


class Read(NamedTuple):
    """What one read held, priced."""

    cost: int
    """Its bytes plus FRAME_COST_BYTES per frame that starts in it, less what ``binary`` holds."""
    binary: int
    """What binary messages (pushed frames) cost of it, payload and price: a push session has a
    budget of its own for them, so that its frames never wait for the budget of commands."""
    violation: Violation | None
    """The first limit it breaks, if any (the rest of it is then irrelevant)."""


class InboundFrames:
    """Follows the frame boundaries of one client's byte stream. Pure: time is passed in."""

    def __init__(
        self,
        *,
        max_message_bytes: int,
        max_fragments: int,
        message_timeout_s: float,
        max_binary_bytes: int | None = None,
    ) -> None:
        """``max_binary_bytes`` bounds binary messages (pushed frames) instead of
        ``max_message_bytes``, which then bounds text only."""
        self.max_message_bytes = max_message_bytes
        self.max_binary_bytes = max_message_bytes if max_binary_bytes is None else max_binary_bytes
        self._binary = False
        """The data message under way is binary."""
        self._payload_binary = False
        """The payload being read belongs to a binary message."""
        self.max_fragments = max_fragments
        self.message_timeout_s = message_timeout_s
        self._header = bytearray()
        """Bytes of a frame header read so far (at most 14)."""
        self._payload_left = 0
        """Payload bytes of the current frame still to come."""
        self._message_bytes = 0
        self._fragments = 0
        """Frames of the data message under way; 0 between messages. A message is under way
        until the last byte of its final frame's payload, not only until that frame's header."""
        self._final = False
        """The payload being read is the end of its message (a data frame with FIN)."""
        self._message_start = 0.0
        self._invalid = False
        """A frame wsproto will fail was seen: the stream after it is not followed."""
        self.close_seen = False
        """The client has sent a close frame (its code is trio-websocket's to read)."""

    def feed(self, data: bytes | bytearray | memoryview, now: float) -> Read:
        """Account for ``data``, the next bytes from the client."""
        view = memoryview(data)
        cost = len(view)
        if self._late(now):
            # Whatever these bytes are (payload, a fragment, a ping between fragments), they came
            # while a message past its time was still under way.
            return _read(cost, 0, self._too_slow())
        binary = 0
        i = 0
        while i < len(view) and not self._invalid:
            if self._payload_left:
                step = min(self._payload_left, len(view) - i)
                self._payload_left -= step
                i += step
                if self._payload_binary:
                    binary += step
                if self._final and not self._payload_left:
                    self._end_message()
                continue
            if not self._header:
                cost += FRAME_COST_BYTES
            needed = _header_length(self._header)
            take = min(needed - len(self._header), len(view) - i)
            self._header += view[i : i + take]
            i += take
            if len(self._header) < _header_length(self._header):
                continue  # the length or the mask is still to come
            violation = self._frame(bytes(self._header), now)
            self._header.clear()
            if self._payload_binary:
                binary += FRAME_COST_BYTES  # a pushed frame's price goes with its bytes
            if violation is not None:
                return _read(cost, binary, violation)
        return _read(cost, binary, None)

    def _frame(self, header: bytes, now: float) -> Violation | None:
        fin = header[0] & 0x80
        opcode = header[0] & 0x0F
        if header[0] & 0x70 or opcode not in _OPCODES or not header[1] & 0x80:
            self._invalid = True  # reserved bits, a reserved opcode, or unmasked
            return None
        length = _payload_length(header)
        self._payload_left = length
        self._payload_binary = False
        if opcode & _CONTROL_BIT:
            self.close_seen = self.close_seen or opcode == 0x8
            return None  # may come between fragments; wsproto limits it to 125 bytes
        if opcode != _CONTINUATION or not self._fragments:
            # A new message (a continuation with none under way is wsproto's to refuse).
            self._fragments = 0
            self._message_bytes = 0
            self._message_start = now
            self._binary = opcode == _BINARY
        self._payload_binary = self._binary
        self._fragments += 1
        self._message_bytes += length
        limit = self.max_binary_bytes if self._binary else self.max_message_bytes
        violation = None
        if self._message_bytes > limit:
            kind = "binary message" if self._binary else "message"
            violation = Violation(CLOSE_MESSAGE_TOO_BIG, f"{kind} over {limit} bytes")
        elif self._fragments > self.max_fragments:
            violation = Violation(
                CLOSE_POLICY_VIOLATION,
                f"message in more than {self.max_fragments} fragments",
            )
        self._final = bool(fin)
        if self._final and not length:
            self._end_message()
        return violation

    def _late(self, now: float) -> bool:
        """A message is under way, and has been for longer than ``message_timeout_s``."""
        under_way = self._fragments > 0 and not self._invalid
        return under_way and now - self._message_start > self.message_timeout_s

    def _end_message(self) -> None:
        self._fragments = 0
        self._message_bytes = 0
        self._final = False

    def _too_slow(self) -> Violation:
        return Violation(
            CLOSE_POLICY_VIOLATION,
            f"message not complete within {self.message_timeout_s:g} s",
        )


def _read(cost: int, binary: int, violation: Violation | None) -> Read:
    # A frame's price is counted when its header starts, and moved to ``binary`` when the header
    # is complete, which may be in the next read: never below 0.
    return Read(max(0, cost - binary), binary, violation)


def _header_length(partial: bytes | bytearray) -> int:
    """The full length of a frame header, as far as its first bytes tell (2 until they do)."""
    if len(partial) < 2:
        return 2
    n = partial[1] & 0x7F
    extended = 2 if n == 126 else 8 if n == 127 else 0
    mask = 4 if partial[1] & 0x80 else 0
    return 2 + extended + mask


def _payload_length(header: bytes) -> int:
    n = header[1] & 0x7F
    if n == 126:
        return int.from_bytes(header[2:4], "big")
    if n == 127:
        return int.from_bytes(header[2:10], "big")
    return n
