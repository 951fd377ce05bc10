"""Helpers for tests that run the real server on 127.0.0.1 and talk to it over real sockets.

Two kinds of frame analysis are used, and each test says which:
- the real :class:`trackerd.tracker.Tracker` on a real clip, where detection is what is tested;
- :class:`Synthetic`, a made-up analyzer injected through ``app.run(make_tracker=...)`` with a
  fast synthetic source, where only the server's behaviour is tested (fan-out, slow clients,
  faults) and cascades would only slow the test down. It never pretends to detect anything.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np
import trio
from numpy.typing import NDArray
from trio_websocket import ConnectionClosed, WebSocketConnection

from trackerd.app import Running, run
from trackerd.observation import Observation
from trackerd.settings import Settings
from trackerd.sources import Source, SourceError

P = ParamSpec("P")
T = TypeVar("T")

LOCAL = Settings(host="127.0.0.1", port=0, source="synthetic", heartbeat_interval_s=60.0)
NO_RATE_LIMIT: dict[str, Any] = {"rate_limit_per_s": 1e9, "rate_limit_burst": 10**9}
"""For tests whose client sends commands as fast as it can on purpose (polling ``status`` until
a condition holds, rather than sleeping): ``with_settings(**NO_RATE_LIMIT)``."""
CAP_S = 20.0
"""Every network test runs under this fail_after cap."""


class SyntheticSource(Source):
    """A live source of tiny blank frames at ``fps``; can be told to fail or count closes."""

    live = True
    description = "synthetic source"

    def __init__(self, fps: float = 100.0, fail_after: int | None = None) -> None:
        super().__init__()
        self._interval = 1.0 / fps
        self._fail_after = fail_after
        self._next = time.monotonic()
        self.closed = threading.Event()

    def _read(self) -> tuple[NDArray[np.uint8], float] | None:
        if self.closed.is_set():
            raise SourceError("synthetic source is closed")
        if self._fail_after is not None and self._count >= self._fail_after:
            raise SourceError("synthetic source failed (injected)")
        self._next += self._interval
        time.sleep(max(0.0, self._next - time.monotonic()))
        return np.zeros((4, 4, 3), np.uint8), time.monotonic()

    def close(self) -> None:
        self.closed.set()


class Synthetic:
    """A made-up analyzer: alternates face / no face so the messages vary."""

    def __init__(self) -> None:
        self.n = 0

    def process(self, image: NDArray[np.uint8], t: float) -> Observation:
        self.n += 1
        face = self.n % 10 != 0
        return Observation(
            t=t,
            face_detected=face,
            eye_count=2 if face else 0,
            looking_away=not face,
            confidence=0.9 if face else 0.1,
            face_count=int(face),
            face=(1, 1, 2, 2) if face else None,
            eyes=(),
            faces=(),
            attention=0.9 if face else 0.0,
        )

    def reset(self) -> None:
        self.n = 0


class Sources:
    """An ``open_source`` for tests: hands out scripted sources (or errors), keeps them all."""

    def __init__(self, *script: Callable[[], Source] | Exception) -> None:
        self._script = list(script)
        self.opened: list[Source] = []
        self.attempts = 0

    def __call__(self, spec: str) -> Source:
        self.attempts += 1
        step = self._script.pop(0) if len(self._script) > 1 else self._script[0]
        if isinstance(step, Exception):
            raise step
        source = step()
        self.opened.append(source)
        return source


async def start(
    nursery: trio.Nursery,
    settings: Settings = LOCAL,
    *,
    open_source: Callable[[str], Source] | None = None,
    make_tracker: Callable[[], Any] | None = None,
    stop: trio.Event | None = None,
) -> Running:
    kwargs: dict[str, Any] = {
        "open_source": open_source or Sources(lambda: SyntheticSource()),
        "stop": stop,
    }
    kwargs["make_tracker"] = make_tracker or Synthetic
    running: Running = await nursery.start(
        lambda task_status: run(settings, task_status=task_status, **kwargs)
    )
    return running


def capped(test: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Run an async test under ``trio.fail_after(CAP_S)``: a hang fails, it does not stall CI."""

    @functools.wraps(test)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        with trio.fail_after(CAP_S):
            return await test(*args, **kwargs)

    return wrapper


def url(running: Running) -> str:
    return f"ws://127.0.0.1:{running.port}/"


async def recv_json(conn: WebSocketConnection) -> dict[str, Any]:
    message = await conn.get_message()
    assert isinstance(message, str)
    decoded: dict[str, Any] = json.loads(message)
    return decoded


async def recv_type(conn: WebSocketConnection, kind: str) -> dict[str, Any]:
    """The next message of ``kind``, skipping eye_data that may be interleaved."""
    while True:
        message = await recv_json(conn)
        if message["type"] == kind:
            return message
        assert message["type"] == "eye_data", message


async def closing_code(conn: WebSocketConnection) -> int:
    """Read on until the server closes the connection: the close code it sent."""
    while True:
        try:
            await conn.get_message()
        except ConnectionClosed as closed:
            code: int = closed.reason.code
            return code


def with_settings(**changes: Any) -> Settings:
    return replace(LOCAL, **changes)


def metric_samples(body: str) -> dict[str, float]:
    """Every unlabelled sample of a /metrics body, by name."""
    samples = {}
    for line in body.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.split()
            samples[name] = float(value)
    return samples


def vm_rss_bytes(pid: int) -> int:
    """A process's resident set size, as the kernel reports it."""
    status = Path(f"/proc/{pid}/status").read_text()
    (line,) = [line for line in status.splitlines() if line.startswith("VmRSS:")]
    return int(line.split()[1]) * 1024


def upgrade_request(port: int, headers: str = "") -> bytes:
    """A WebSocket upgrade request head; ``headers``: extra ``Name: value\r\n`` lines."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: 13\r\n{headers}\r\n"
    ).encode()


def client_frame(
    opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True, rsv: int = 0
) -> bytes:
    """A client-to-server WebSocket frame (RFC 6455 §5.2), masked unless told otherwise; the
    length is whatever ``payload`` is, so it can be made wrong on purpose (a 200-byte ping)."""
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([bit | 127]) + n.to_bytes(8, "big")
    if not masked:
        return head + payload
    mask = os.urandom(4)
    key = (mask * (n // 4 + 1))[:n]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return head + mask + body


class AsyncRawClient:
    """:class:`RawClient`'s misbehaviour on trio's sockets, for many at once in one task tree:
    junk before or after the handshake, invalid frames, floods, vanishing with a reset."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._buffer = b""

    @classmethod
    async def connect(
        cls, port: int, *, handshake: bool = True, rcvbuf: int | None = None
    ) -> AsyncRawClient:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:  # before connecting, so that the window the server sees is small from the start
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect(("127.0.0.1", port))
        client = cls(trio.SocketStream(sock))
        if handshake:
            await client.send(upgrade_request(port))
            head = await client.read_until(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101"), head
        return client

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def read_until(self, marker: bytes) -> bytes:
        while marker not in self._buffer:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise EOFError(f"closed before {marker!r}; got {self._buffer[:200]!r}")
            self._buffer += chunk
        head, _, self._buffer = self._buffer.partition(marker)
        return head + marker

    async def _read_exactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise EOFError("closed inside a frame")
            self._buffer += chunk
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    async def read_frame(self) -> tuple[int, bytes] | None:
        """The next server frame as (first byte, payload); None if the TCP connection ended."""
        try:
            first, second = await self._read_exactly(2)
        except EOFError:
            return None
        n = second & 0x7F
        if n == 126:
            n = int.from_bytes(await self._read_exactly(2), "big")
        elif n == 127:
            n = int.from_bytes(await self._read_exactly(8), "big")
        return first, await self._read_exactly(n)

    async def close_code(self) -> int | None:
        """Read until the server's close frame: its status code (None: TCP ended without one)."""
        while (frame := await self.read_frame()) is not None:
            first, payload = frame
            if first == 0x88:
                return int.from_bytes(payload[:2], "big") if payload else 1005
        return None

    def reset(self) -> None:
        """Vanish with a TCP reset."""
        sock = self.stream.socket
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    async def aclose(self) -> None:
        await self.stream.aclose()


class RawClient:
    """A WebSocket client written by hand on a blocking socket, for misbehaving on purpose:
    stop reading, vanish with a TCP reset, ignore pings. Use from a worker thread."""

    def __init__(self, port: int, *, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(CAP_S)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(upgrade_request(port))
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = self.sock.recv(1)
            assert chunk, "server closed during the handshake"
            response += chunk
        assert response.startswith(b"HTTP/1.1 101"), response

    def send_text(self, text: str) -> None:
        self.send_frame(0x1, text.encode())

    def send_frame(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        self.sock.sendall(client_frame(opcode, payload, fin=fin))

    def read_until_closed(self) -> bytes:
        """Everything the server sends until it closes the TCP connection."""
        data = b""
        while chunk := self.sock.recv(65536):
            data += chunk
        return data

    def reset(self) -> None:
        """Vanish: close with SO_LINGER 0, which sends a TCP RST instead of a FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()
