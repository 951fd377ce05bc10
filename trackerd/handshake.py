"""What a WebSocket upgrade request must be (RFC 6455 §4.2.1), checked on its head before it takes
a slot: a refusal is answered at once and holds nothing.

trio-websocket (through wsproto) checks the same things, but when it refuses a request it never
returns from waiting for it, so every refused upgrade used to keep its place among the admitted
connections for the whole handshake timeout: 1000 requests with a wrong version locked every
real client out for 10 s. Refusing here, from the head the gate has already read, keeps them out
of that path (and the server stops waiting if trio-websocket refuses anyway).
"""

from __future__ import annotations

import base64
import binascii
from typing import Final

from trackerd.access import Refusal
from trackerd.web import Head

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
    return None


def _is_key(key: bytes) -> bool:
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except binascii.Error:
        return False
