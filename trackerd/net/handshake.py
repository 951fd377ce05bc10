"""What a WebSocket upgrade request must be (RFC 6455 §4.2.1), checked on its head before it takes
a slot: a refusal is answered at once and holds nothing.

trio-websocket (through wsproto) checks the same things, but when it refuses a request it never
returns from waiting for it, so every refused upgrade used to keep its place among the admitted
connections for the whole handshake timeout: 1000 requests with a wrong version locked every
real client out for 10 s. Refusing here, from the head the gate has already read, keeps them out
of that path (and the server stops waiting if trio-websocket refuses anyway).

An upgrade request may not carry a body (400): any ``Transfer-Encoding``, or a ``Content-Length``
other than 0. h11, under wsproto, reads such a body as the request's and hands wsproto only what
follows it, while the server's own frame policing (:mod:`trackerd.net.inbound`) starts right after
the head: with ``Content-Length: 5`` and ``hello``, the policing read ``h`` as an invalid frame
and stopped following the stream, and every message limit and the per-frame price were off for
that connection. With no body, the first byte after the head (``Head.size``) is the first byte
of the first frame for both.

Provided wsproto sees those bytes at all: on the server side, wsproto 1.3 drops whatever it was
given after the request head before the handshake was accepted (its ``_accept`` starts the
connection without h11's trailing data, where the client side keeps it). Bytes sent with the
head, or right after it, were therefore frames to the policing and nothing to wsproto: a frame
header sent with the head that declared 4000 bytes hid the next 4000 bytes of real frames from
the policing, and their payloads could carry the next such header, indefinitely. So the stream
handed to trio-websocket (:class:`HandshakeStream`) gives it the head alone, reads nothing more
until the handshake is answered, then gives what came with the head and reads on: every byte
after the head is a frame to both.
"""

from __future__ import annotations

import base64
import binascii
from typing import Final

import trio

from trackerd.net.access import Refusal
from trackerd.net.web import Head, ReplayStream

WEBSOCKET_VERSION: Final = b"13"
VERSION_HEADERS: Final = (("Sec-WebSocket-Version", "13"),)
"""Sent with 426, so a client can see which version to speak (§4.4)."""


def _tokens(head: Head, name: bytes) -> set[bytes]:
    """The comma-separated tokens of every ``name`` header, in lower case."""
    return {t.strip().lower() for value in head.header(name) for t in value.split(b",")}


def handshake_refusal(head: Head) -> Refusal | None:
    """Why this upgrade request is not a WebSocket handshake this server can accept, or None."""
    if head.method != "GET":
        return Refusal(400, "a WebSocket handshake is a GET", "handshake")
    if head.http_version != "1.1":
        return Refusal(400, "a WebSocket handshake needs HTTP/1.1", "handshake")
    if "websocket" not in {t.decode("latin-1") for t in _tokens(head, b"upgrade")}:
        return Refusal(400, "Upgrade: websocket required", "handshake")
    if b"upgrade" not in _tokens(head, b"connection"):
        return Refusal(400, "Connection: Upgrade required", "handshake")
    versions = head.header(b"sec-websocket-version")
    if [v.strip() for v in versions] != [WEBSOCKET_VERSION]:
        status = 426 if versions else 400
        return Refusal(status, "Sec-WebSocket-Version: 13 required", "handshake", VERSION_HEADERS)
    keys = head.header(b"sec-websocket-key")
    if len(keys) != 1 or not _is_key(keys[0].strip()):
        return Refusal(400, "Sec-WebSocket-Key must be 16 bytes in base64", "handshake")
    if _has_body(head):
        return Refusal(400, "a WebSocket handshake has no body", "handshake")
    return None


def _has_body(head: Head) -> bool:
    """Whether the request declares a body. h11 has already refused a Content-Length that is not
    digits or that conflicts with another one; a length of 0 (or 00) declares none."""
    if head.header(b"transfer-encoding"):
        return True
    return any(
        not v.strip().isdigit() or v.strip().strip(b"0") for v in head.header(b"content-length")
    )


def _is_key(key: bytes) -> bool:
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except binascii.Error:
        return False


class HandshakeStream(ReplayStream):
    """An upgrade's stream for trio-websocket: the request head, then nothing until the server
    has answered it (its first write, the 101 or a refusal), then the bytes that came with the
    head and the rest of the stream. A :class:`ReplayStream` still, so the fan-out's fast path
    looks through it to the socket (it adds nothing on the way out)."""

    def __init__(self, transport_stream: trio.abc.Stream, head: Head) -> None:
        super().__init__(transport_stream, head.raw[: head.size])
        self._head_left = head.size
        self._early = head.raw[head.size :]
        """Bytes after the head, read with it: the first frames, given once answered."""
        self._answered = trio.Event()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._head_left:  # the replay holds the head alone, and gives it first
            data = await super().receive_some(max_bytes)
            self._head_left -= len(data)
            return data
        await self._answered.wait()  # cancelled with the handshake if it is never answered
        if self._early:
            n = len(self._early) if max_bytes is None else max_bytes
            data, self._early = self._early[:n], self._early[n:]
            await trio.lowlevel.checkpoint()
            return data
        return await super().receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        # Set before the write: trio-websocket has told wsproto of its answer before writing it,
        # so what is read from here on is read after the switch, as frames.
        self._answered.set()
        await super().send_all(data)
