"""Helpers for tests that run the real server on 127.0.0.1 and talk to it over real sockets.

Two kinds of frame analysis are used, and each test says which:
- the real :class:`trackerd.vision.tracker.Tracker` on a real clip, where detection is what is
  tested;
- :class:`Synthetic`, a made-up analyzer injected through ``app.run(make_tracker=...)`` with a
  fast synthetic source, where only the server's behaviour is tested (fan-out, slow clients,
  faults) and cascades would only slow the test down. It never pretends to detect anything.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np
import trio
from numpy.typing import NDArray
from trio.testing import MockClock
from trio_websocket import ConnectionClosed, WebSocketConnection

from trackerd.app import Running, run
from trackerd.settings import DEFAULT_DATA_DIR, DEFAULT_GRACEFUL_TIMEOUT_S, Settings
from trackerd.sources import Source, SourceError
from trackerd.vision.observation import Observation

P = ParamSpec("P")
T = TypeVar("T")

LOCAL = Settings(host="127.0.0.1", port=0, source="synthetic", heartbeat_interval_s=60.0)
NO_RATE_LIMIT: dict[str, Any] = {"rate_limit_per_s": 1e9, "rate_limit_burst": 10**9}
"""For tests whose client sends commands as fast as it can on purpose (polling ``status`` until
a condition holds, rather than sleeping): ``with_settings(**NO_RATE_LIMIT)``."""
CAP_S = 20.0
"""Every network test runs under this fail_after cap."""
EXIT_CAP_S = DEFAULT_GRACEFUL_TIMEOUT_S + 5.0
"""Cap on a signal to a real server's exit: the clients' grace (``--graceful-timeout``), then
the processes' exits. 2 s (grace plus 0.5 s) failed once in a full suite run on the loaded
2-core VM. A drain that hangs still fails here."""


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
    if settings.data_dir == DEFAULT_DATA_DIR:  # each test's own (tests/conftest.py)
        settings = replace(settings, data_dir=os.environ["TRACKERD_DATA_DIR"])
    kwargs: dict[str, Any] = {
        "open_source": open_source or Sources(lambda: SyntheticSource()),
        "stop": stop,
    }
    kwargs["make_tracker"] = make_tracker or Synthetic
    running: Running = await nursery.start(
        lambda task_status: run(settings, task_status=task_status, **kwargs)
    )
    return running


def run_trackerd(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m trackerd ARGS`` run to its end (a subcommand, or a server that must refuse to
    start): its exit code, stdout and stderr as text. ``env`` adds to this process's."""
    return subprocess.run(
        [sys.executable, "-m", "trackerd", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


async def start_server(*args: str, env: dict[str, str] | None = None) -> tuple[trio.Process, int]:
    """``python -m trackerd ARGS`` as a real process, once it listens: the process (its stderr
    a pipe, read up to the "listening on" line) and its port. The log level must show INFO."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trackerd", *args],
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    assert process.stderr is not None
    seen = b""
    while (found := re.search(rb"listening on ws://[^:]+:(\d+)", seen)) is None:
        chunk = await process.stderr.receive_some(4096)
        assert chunk, f"server exited before listening: {seen.decode(errors='replace')}"
        seen += chunk
    return process, int(found.group(1))


@contextlib.asynccontextmanager
async def serving(
    *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[trio.Process, int]]:
    """A real ``trackerd`` on 127.0.0.1 with a free port (``ARGS`` after those), whose log is
    read so that it never blocks writing it, and which gets SIGTERM at the end (then a kill
    if it has not exited within 5 s)."""
    with trio.fail_after(30):  # start-up includes loading numba's cache
        process, port = await start_server("--host", "127.0.0.1", "--port", "0", *args, env=env)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain, process)
            yield process, port
            nursery.cancel_scope.cancel()
    finally:
        await terminate(process, 5)


async def terminate(process: trio.Process, within_s: float) -> None:
    """SIGTERM, then a kill if the process has not exited within ``within_s``; shielded, so
    that a test that failed or was cancelled still leaves no server behind (one the test
    killed already is left as it is)."""
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    with trio.CancelScope(shield=True), trio.move_on_after(within_s):
        await process.wait()
    if process.returncode is None:
        process.kill()


async def drain(process: trio.Process) -> None:
    """Read a server process's log so that it never blocks writing it."""
    assert process.stderr is not None
    while await process.stderr.receive_some(65536):
        pass


async def wait_for_log(stderr: trio.abc.ReceiveStream, expected: dict[bytes, int]) -> bytes:
    """Read a server process's log until each regex in ``expected`` has matched that many
    lines; what was read. Bound it with ``fail_after``: a line that never comes is a hang."""
    seen = b""
    while any(len(re.findall(pattern, seen)) < n for pattern, n in expected.items()):
        chunk = await stderr.receive_some(65536)
        assert chunk, f"the server exited: {seen[-2000:].decode(errors='replace')}"
        seen += chunk
    return seen


def capped(test: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Run an async test under a cap of CAP_S seconds of real time: a hang fails, it does not
    stall CI. On trio's own clock that is ``fail_after``. On a MockClock it cannot be: the clock
    jumps to the next deadline whenever every task has waited 10 ms of real time, for example on
    getaddrinfo's thread on a loaded machine, and the cap would be that deadline (CI saw exactly
    this). There a watchdog thread cancels the test after CAP_S seconds of the wall clock."""

    @functools.wraps(test)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        if not isinstance(trio.lowlevel.current_clock(), MockClock):
            with trio.fail_after(CAP_S):
                return await test(*args, **kwargs)
        with real_time_cap(CAP_S) as scope:
            result = await test(*args, **kwargs)
        if scope.cancelled_caught:
            raise trio.TooSlowError(f"over {CAP_S} s of real time")
        return result

    return wrapper


@contextlib.contextmanager
def real_time_cap(seconds: float) -> Iterator[trio.CancelScope]:
    """A cancel scope that a thread cancels after ``seconds`` of the wall clock."""
    scope = trio.CancelScope()
    token = trio.lowlevel.current_trio_token()
    done = threading.Event()

    def watch() -> None:
        if not done.wait(seconds):
            token.run_sync_soon(scope.cancel)

    watchdog = threading.Thread(target=watch, name="test-cap", daemon=True)
    watchdog.start()
    try:
        with scope:
            yield scope
    finally:
        done.set()
        # Joined before the run can end, so run_sync_soon never meets a finished run.
        watchdog.join()


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


class Gone(Exception):
    """The server closed or reset a connection the client expected to keep."""


class RawClient:
    """The one WebSocket client written by hand for tests, on trio's sockets, for what a library
    will not do: junk before or after the handshake, invalid frames, floods, a small receive
    buffer, not reading, not answering pings, vanishing with a TCP reset. Many run at once in
    one task tree. :meth:`recv` answers the server's pings (unless told not to) and counts them.
    """

    def __init__(self, stream: trio.SocketStream, *, answer_pings: bool = True) -> None:
        self.stream = stream
        self.answer_pings = answer_pings
        self.pings = 0
        """Pings the server sent that :meth:`recv` saw."""
        self.open = True
        self._buffer = bytearray()

    @classmethod
    async def connect(
        cls,
        port: int,
        *,
        handshake: bool = True,
        rcvbuf: int | None = None,
        answer_pings: bool = True,
        source: str = "",
    ) -> RawClient:
        """``source``: the address to connect from (another of 127.0.0.0/8 is another client,
        for the per-address limits)."""
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if source:
            await sock.bind((source, 0))
        if rcvbuf:  # before connecting, so that the window the server sees is small from the start
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect(("127.0.0.1", port))
        client = cls(trio.SocketStream(sock), answer_pings=answer_pings)
        if handshake:
            await client.send(upgrade_request(port))
            try:
                head = await client.read_until(b"\r\n\r\n")
            except EOFError as exc:
                raise Gone(f"closed during the handshake: {exc}") from exc
            assert head.startswith(b"HTTP/1.1 101"), head
        return client

    @property
    def port(self) -> int:
        """This end's port: the server names a client by it in its logs and ``peer``."""
        port: int = self.stream.socket.getsockname()[1]
        return port

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send_text(self, text: str) -> None:
        await self.send(client_frame(0x1, text.encode()))

    async def receive_some(self, max_bytes: int = 65536) -> bytes:
        """Raw bytes as they come (what is buffered first); b"" when the connection ended."""
        if self._buffer:
            data = bytes(self._buffer[:max_bytes])
            del self._buffer[:max_bytes]
            return data
        return bytes(await self.stream.receive_some(max_bytes))

    async def _fill(self, what: str) -> None:
        try:
            chunk = await self.stream.receive_some(65536)
        except trio.BrokenResourceError as exc:
            raise Gone(f"reset: {exc}") from exc
        if not chunk:
            raise EOFError(f"closed before {what}; got {bytes(self._buffer[:200])!r}")
        self._buffer += chunk

    async def read_until(self, marker: bytes) -> bytes:
        while marker not in self._buffer:
            await self._fill(repr(marker))
        end = self._buffer.index(marker) + len(marker)
        head = bytes(self._buffer[:end])
        del self._buffer[:end]
        return head

    async def _read_exactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            await self._fill("the end of a frame")
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    async def read_frame(self) -> tuple[int, bytes] | None:
        """The next server frame as (first byte, payload); None if the TCP connection ended."""
        try:
            first, second = await self._read_exactly(2)
        except EOFError:
            return None
        assert not second & 0x80, "server frames are not masked"
        n = second & 0x7F
        if n == 126:
            n = int.from_bytes(await self._read_exactly(2), "big")
        elif n == 127:
            n = int.from_bytes(await self._read_exactly(8), "big")
        return first, await self._read_exactly(n)

    async def recv(self) -> dict[str, Any]:
        """The next text message, decoded; pings on the way are answered (unless
        ``answer_pings`` is off) and counted. Raises :class:`Gone` at a close frame, the end of
        the connection or a reset."""
        while True:
            try:
                frame = await self.read_frame()
            except EOFError as exc:
                raise Gone(str(exc)) from exc
            if frame is None:
                raise Gone("the server closed the TCP connection")
            first, payload = frame
            assert first & 0x80, "the server fragments nothing"
            opcode = first & 0x0F
            if opcode == 0x1:
                message: dict[str, Any] = json.loads(payload)
                return message
            if opcode == 0x9:  # the server's heartbeat
                self.pings += 1
                if self.answer_pings:
                    await self.send(client_frame(0xA, payload))
            elif opcode == 0x8:
                code = int.from_bytes(payload[:2], "big") if payload else None
                raise Gone(f"close frame {code}")
            else:
                raise AssertionError(f"unexpected opcode {opcode}")

    async def close_code(self) -> int | None:
        """Read until the server's close frame: its status code (None: TCP ended without one)."""
        while (frame := await self.read_frame()) is not None:
            first, payload = frame
            if first == 0x88:
                return int.from_bytes(payload[:2], "big") if payload else 1005
        return None

    async def read_until_closed(self) -> bytes:
        """Everything the server sends until it closes the TCP connection."""
        data = bytes(self._buffer)
        self._buffer.clear()
        while chunk := await self.stream.receive_some(65536):
            data += chunk
        return data

    async def close(self) -> None:
        """A normal close: our close frame, the server's answer (data before it skipped)."""
        await self.send(client_frame(0x8, (1000).to_bytes(2, "big")))
        while (frame := await self.read_frame()) is not None and frame[0] != 0x88:
            pass
        await self.aclose()

    def reset(self) -> None:
        """Vanish: close with SO_LINGER 0, which sends a TCP RST instead of a FIN."""
        reset(self.stream)
        self.open = False

    async def aclose(self) -> None:
        await self.stream.aclose()
        self.open = False


def reset(stream: trio.SocketStream) -> None:
    """Close with SO_LINGER 0: the kernel sends a RST and no FIN (and no close frame)."""
    sock = stream.socket
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
