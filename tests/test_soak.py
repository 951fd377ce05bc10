"""A soak: the real server, the real tracker on the demo clip, 200 clients coming and going.

One ``python -m trackerd --source demo`` process (the bundled clip on a loop at its own 24 fps,
the real cascades) on 127.0.0.1, its log drained as it comes, and from this process 200
concurrent clients for ``SOAK_SECONDS`` (environment, default 60; the test takes ~70 s):

- ``STAYERS`` (20) connect, ``start_tracking`` and read every message for the whole soak;
- ``CHURNERS`` (180) loop, each with its own seeded ``random.Random``, over sessions that
  connect (through trio-websocket, or serverkit's hand-written WebSocket client, which can
  do what a library will not), maybe ``start_tracking`` and read a few ``eye_data``, maybe ask
  for ``status`` or ``ping``, maybe ``stop_tracking`` and keep going, and end one of five
  ways: a normal close, a TCP reset (``SO_LINGER`` 0, no close frame), 1-4 s of not reading
  and then a close or a reset, or ``stop_tracking`` and a close. Half the ones that stop
  reading and then reset do it with a 4 KiB receive buffer and for 7-9.5 s, so that the
  server's socket fills and its backlog path runs (``trackerd_messages_dropped_total`` grows).
  About one session in eight never finishes its handshake: it connects and says nothing, sends
  part of the request head and closes or resets, sends all of it and resets, or resets right
  after the 101. A session sends 14 commands at most, well under the rate limit, and no
  pause reaches the 10 s send timeout, so the server has no reason to drop anyone. Meanwhile
  /metrics is scraped every second.

What must hold (the bounds were measured first; see ``MAX_GAP_S``, ``MIN_IN_WINDOW`` and
``MAX_RSS_GROWTH_MIB`` for the figures):

- every stayer receives ``eye_data`` throughout, in frame order: no gap between two of them
  longer than ``MAX_GAP_S``, at least ``MIN_IN_WINDOW`` in every ``WINDOW_S`` (both checked as
  they happen, so a stalled server fails the test at once), and it is never closed;
- every churner gets what the protocol promises (a reply to each command, no ``eye_data`` once
  a ``status`` has confirmed ``stop_tracking``, a close answered with a close);
- once the churners have stopped and the server is back to the stayers alone, its trio task
  count (``trackerd_tasks`` from /metrics) and its open file descriptors (``/proc/PID/fd`` and
  ``process_open_fds``) are exactly what they were at the start with the stayers alone. No
  slack: nothing in the server holds a task or a descriptor beyond a connection. (The two fd
  figures differ by 2, always: during a scrape the server also holds the scrape's connection
  and the collector's listing of ``/proc/self/fd``.)
- its resident memory (``VmRSS``) grows by less than ``MAX_RSS_GROWTH_MIB`` between the
  warm-up point (``WARMUP_S`` into the churn) and the end;
- it logs no warning and no error (nothing in this workload deserves one), and exits 0 on
  SIGTERM at the end.

The seed is ``SOAK_SEED`` when set, otherwise ``DEFAULT_SEED``, so that every run makes the
same choices; it is printed in the summary line (``pytest -s``) and attached to any failure
with the server's warnings. Timing is not reproducible; the choices are.

A server bug this soak ran into has its own small test below, ahead of the soak.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, connect_websocket_url
from wsproto.utilities import LocalProtocolError

from tests.serverkit import (
    Gone,
    RawClient,
    client_frame,
    metric_samples,
    reset,
    start_server,
    upgrade_request,
    vm_rss_bytes,
)

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/fd").is_dir() or sys.platform == "win32",
    reason="reads the server's descriptors and memory from /proc",
)

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))
DEFAULT_SEED = 22
"""The churners' choices when ``SOAK_SEED`` is not set: fixed, so a failure can be replayed."""
STAYERS = 20
CHURNERS = 180
WARMUP_S = min(10.0, SOAK_SECONDS / 6)
"""When the RSS baseline is taken, into the churn: the first connections' allocations (trio's
and wsproto's caches, the first few thousand sessions' worth of pymalloc arenas) are done."""
MAX_GAP_S = 1.0
"""Longest a stayer may wait between two eye_data. The clip is 24 fps (42 ms); the worst gaps
measured in full runs on the 2-core VM were 0.32-0.42 s, some with other test suites running
beside it. Most come from the clip: around its frame 458 the tracker loses the face and searches
the whole frame (31 ms alone, ~0.3 s with this load on two cores), and the loop's first frame
is a full search too (45 ms alone); the rest from the load. 1 s is ~2.5x the worst, and still
far below what a client would call a stall."""
MAX_RSS_GROWTH_MIB = 32.0
"""Allowed VmRSS growth from the warm-up point to the end (~240 MiB, numba and OpenCV
included). Measured on the 2-core VM: +0.7 to +4.0 MiB over full 60 s runs alone, up to +7.4
over shorter ones; +7.1 and +12.9 over 180 s; +16.5 once in a full suite run (from 336 MiB).
The growth is the C heap's high-water mark, not sessions kept: under tracemalloc, Python's
own heap between two quiet points (the stayers alone) 230 sessions apart shrank by 0.3 MiB,
and within one run RSS rises and falls by ~9 MiB with the slow readers' backlogs. 32 MiB is
twice the worst seen, ~7 KiB a session over the ~4500 of a full run. A leak of whole clients
fails the exact task and descriptor counts first; this bound is for state kept without them."""
WINDOW_S = 5.0
MIN_IN_WINDOW = 20
"""Fewest eye_data a stayer may receive in any 5 s. Throughout means this too, not only gaps
under ``MAX_GAP_S``: a capture that limps at a frame or two a second with sub-second gaps is not
serving its clients. At the clip's 24 fps, 5 s is 120. Measured on the 2-core VM: 96-118 with
the soak alone; 59 in a review's full suite run (the bound was 60 then, and failed); 32-45 in
the first 5 s with four other heavy test files running beside it. 20 (4 fps, a sixth of the
clip's rate) is 1.6x under that deliberate overload and 3x under the full-suite figure; a
server that stalls still fails at once on ``MAX_GAP_S``."""
OP_TIMEOUT_S = 10.0
"""Cap on any one network wait of a client (a reply, the next eye_data, a handshake)."""
SETTLE_TIMEOUT_S = 15.0
"""Cap on the server getting back to the stayers alone once the churners stop."""
STATS_INTERVAL_S = 1.0
"""The server's stats line: also what re-checks the settling when nothing else is logged."""

START = '{"type": "start_tracking"}'
STOP = '{"type": "stop_tracking"}'


# --- the server's side: /metrics, /proc, its log ---------------------------------------------


async def fetch_metrics(port: int) -> dict[str, float]:
    """Every unlabelled sample of /metrics. Read to the end of the connection: by then the server
    has closed its side, so the scrape's own descriptor is gone again."""
    with trio.fail_after(OP_TIMEOUT_S):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(
                b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            )
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return metric_samples(body.decode())


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def vm_rss_mib(pid: int) -> float:
    return vm_rss_bytes(pid) / 2**20


@dataclass
class ServerLog:
    """The server's stderr, drained as it comes (so a log write never blocks it)."""

    lines: int = 0
    levels: collections.Counter[str] = field(default_factory=collections.Counter)
    problems: list[str] = field(default_factory=list)
    """Warnings, errors and anything that is not a JSON log line (a traceback)."""
    _more: trio.Event = field(default_factory=trio.Event)

    async def more(self) -> None:
        """Wait for the server's next log lines."""
        await self._more.wait()

    async def drain(self, stderr: trio.abc.ReceiveStream) -> None:
        rest = b""
        first = True
        while chunk := await stderr.receive_some(65536):
            *complete, rest = (rest + chunk).split(b"\n")
            for raw in complete:
                self._line(raw.decode(errors="replace"), partial=first)
                first = False
            self._more.set()
            self._more = trio.Event()

    def _line(self, line: str, *, partial: bool) -> None:
        if not line.strip():
            return
        self.lines += 1
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            # The first line may be the tail of one start_server already read past.
            if not partial:
                self.problems.append(line)
            return
        self.levels[entry["level"]] += 1
        if entry["level"] not in ("DEBUG", "INFO"):
            self.problems.append(line)


# --- clients ---------------------------------------------------------------------------------


class RawWs:
    """serverkit's hand-written client, each network wait under OP_TIMEOUT_S: text, ping
    replies, a normal close, a TCP reset."""

    def __init__(self, client: RawClient) -> None:
        self.client = client

    @property
    def open(self) -> bool:
        return self.client.open

    @classmethod
    async def connect(cls, port: int, *, rcvbuf: int | None = None) -> RawWs:
        with trio.fail_after(OP_TIMEOUT_S):
            return cls(await RawClient.connect(port, rcvbuf=rcvbuf))

    async def send(self, text: str) -> None:
        with trio.fail_after(OP_TIMEOUT_S):
            await self.client.send_text(text)

    async def recv(self) -> dict[str, Any]:
        with trio.fail_after(OP_TIMEOUT_S):
            return await self.client.recv()

    async def close(self) -> None:
        with trio.fail_after(OP_TIMEOUT_S):
            await self.client.close()

    async def reset(self) -> None:
        self.client.reset()


class LibWs:
    """trio-websocket, as most clients of this server would use a library."""

    def __init__(self, conn: WebSocketConnection) -> None:
        self.conn = conn

    async def send(self, text: str) -> None:
        with trio.fail_after(OP_TIMEOUT_S):
            await self.conn.send_message(text)

    async def recv(self, timeout: float = OP_TIMEOUT_S) -> dict[str, Any]:
        with trio.fail_after(timeout):
            try:
                message = await self.conn.get_message()
            except ConnectionClosed as exc:
                raise Gone(f"closed: {exc.reason}") from exc
        assert isinstance(message, str)
        decoded: dict[str, Any] = json.loads(message)
        return decoded

    async def close(self) -> None:
        with trio.fail_after(OP_TIMEOUT_S):
            await self.conn.aclose()

    async def reset(self) -> None:
        raise NotImplementedError("trio-websocket has no way to reset")


@asynccontextmanager
async def library_client(port: int) -> AsyncIterator[LibWs]:
    """A trio-websocket connection, opened and closed (normally) under the timeout.

    trio-websocket's reader task answers a ping with a pong even after this side has sent its
    close, which wsproto refuses with LocalProtocolError (the same flaw takes the server down,
    see test_a_ping_behind_a_flood_does_not_take_the_server_down). The server's heartbeat can
    ping a client just as it closes, so here, and only while closing, that error is ignored."""
    closing = False
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(OP_TIMEOUT_S):
                conn = await connect_websocket_url(nursery, f"ws://127.0.0.1:{port}/")
            try:
                yield LibWs(conn)
            finally:
                closing = True
                with trio.fail_after(OP_TIMEOUT_S):
                    await conn.aclose()
    except* LocalProtocolError:
        if not closing:
            raise


Ws = RawWs | LibWs


@dataclass
class Tally:
    connections: int = 0
    """TCP connections the clients opened (WebSocket sessions and handshakes abandoned)."""
    messages: int = 0
    eye_data: int = 0
    endings: collections.Counter[str] = field(default_factory=collections.Counter)
    slow_readers: int = 0
    """Sessions that paused long enough, with a small enough buffer, to back the server up."""


async def expect(ws: Ws, kind: str, tally: Tally) -> dict[str, Any]:
    """The next message of ``kind``, skipping eye_data that may come first."""
    while True:
        message = await ws.recv()
        tally.messages += 1
        if message["type"] == kind:
            if kind == "eye_data":
                tally.eye_data += 1
            return message
        assert message["type"] == "eye_data", message
        tally.eye_data += 1


async def ask(ws: Ws, kind: str, tally: Tally) -> dict[str, Any]:
    await ws.send(json.dumps({"type": kind}))
    return await expect(ws, {"ping": "pong"}.get(kind, kind), tally)


# --- the workload ----------------------------------------------------------------------------

ENDINGS = {"close": 35, "reset": 25, "pause-close": 15, "pause-reset": 15, "stop-close": 10}
ABORTS = {"silent": 1, "part-fin": 1, "part-reset": 1, "request-reset": 1, "reset-after-101": 1}
ABORT_SHARE = 0.12
SLOW_RCVBUF = 4096


def pick(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(list(weights), list(weights.values()))[0]


async def churner(port: int, rng: random.Random, tally: Tally, deadline: float) -> None:
    while trio.current_time() < deadline:
        tally.connections += 1
        if rng.random() < ABORT_SHARE:
            kind = pick(rng, ABORTS)
            await abandon_handshake(port, kind, rng)
            tally.endings[f"abort:{kind}"] += 1
        else:
            ending = pick(rng, ENDINGS)
            if "reset" in ending or rng.random() < 0.5:
                # Half the clients that pause and then vanish do it with a small receive buffer
                # and for long enough (7-9.5 s) that the server's socket fills: its backlog path
                # (a frame only partly taken, newer observations replacing older, a writer
                # waiting on the socket when the reset comes) is exercised. Not the ones that
                # come back: with a 4 KiB buffer on loopback the server's kernel learns of the
                # reopened window only at its next zero-window probe, seconds later (7.8 s
                # measured after a 9.5 s pause), which would add up to the 10 s send timeout.
                slow = ending == "pause-reset" and rng.random() < 0.5
                raw = await RawWs.connect(port, rcvbuf=SLOW_RCVBUF if slow else None)
                try:
                    await session(raw, ending, rng, tally, deadline, slow=slow)
                finally:
                    if raw.open:  # a failure: do not leave it to the garbage collector
                        await raw.reset()
            else:
                async with library_client(port) as lib:
                    await session(lib, ending, rng, tally, deadline)
            tally.endings[ending] += 1
        await trio.sleep(rng.uniform(0.0, 0.3))


async def abandon_handshake(port: int, kind: str, rng: random.Random) -> None:
    request = upgrade_request(port)
    with trio.fail_after(OP_TIMEOUT_S):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        if kind == "silent":
            await stream.aclose()
            return
        if kind.startswith("part"):
            await stream.send_all(request[: rng.randrange(1, len(request) - 4)])
            await trio.sleep(rng.uniform(0.0, 0.5))
            if kind == "part-fin":
                await stream.aclose()
            else:
                reset(stream)
            return
        await stream.send_all(request)
        if kind == "reset-after-101":
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(65536)
                assert chunk, "closed during the handshake"
                data += chunk
            assert data.startswith(b"HTTP/1.1 101"), data
        reset(stream)


async def session(
    ws: Ws, ending: str, rng: random.Random, tally: Tally, deadline: float, *, slow: bool = False
) -> None:
    assert (await ws.recv())["type"] == "connection"
    tally.messages += 1
    tracking = False
    rounds = rng.randint(1, 3)
    for round_ in range(rounds):
        if rng.random() < 0.75:
            await ws.send(START)
            tracking = True
            for _ in range(rng.randint(1, 30)):
                await expect(ws, "eye_data", tally)
        else:
            await trio.sleep(rng.uniform(0.1, 1.0))  # connected, idle
        if rng.random() < 0.4:
            if rng.random() < 0.5:
                status = await ask(ws, "status", tally)
                assert status["is_tracking"] is tracking, status
                assert status["connected_clients"] > STAYERS, status
                assert status["capture_running"] is True, status
            else:
                await ask(ws, "ping", tally)
        if round_ < rounds - 1 and tracking and trio.current_time() < deadline:
            # stop_tracking and keep going: after the status that confirms it, no more
            # eye_data, so a ping's pong is the very next message.
            await ws.send(STOP)
            tracking = False
            assert (await ask(ws, "status", tally))["is_tracking"] is False
            await ws.send('{"type": "ping"}')
            pong = await ws.recv()
            tally.messages += 1
            assert pong["type"] == "pong", pong
    if ending.startswith("pause"):
        # Stops reading, then goes.
        pause = rng.uniform(7.0, 9.5) if slow else rng.uniform(1.0, 4.0)
        await trio.sleep(min(pause, max(0.5, deadline - trio.current_time())))
        tally.slow_readers += slow
    if ending == "stop-close":
        await ws.send(STOP)
        assert (await ask(ws, "status", tally))["is_tracking"] is False
    if ending.endswith("reset"):
        await ws.reset()
    else:
        await ws.close()


@dataclass
class Stayer:
    index: int
    received: int = 0
    max_gap: float = 0.0
    """Longest wait between two eye_data, as this process saw it."""
    max_gap_frame: int = 0
    """The frame that ended it."""
    max_capture_gap: float = 0.0
    """Longest interval between the capture times of two consecutive eye_data (the server's)."""
    max_latency: float = 0.0
    """Longest from an eye_data's capture to its receipt here."""
    fewest_in_window: int = 1 << 30
    """Fewest eye_data received in any ``WINDOW_S`` (after the first)."""
    last_frame: int = -1
    closed: str | None = None
    reading: trio.CancelScope = field(default_factory=trio.CancelScope)

    async def run(
        self,
        port: int,
        tally: Tally,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Track from the start to the end of the soak, reading every message."""
        tally.connections += 1
        async with library_client(port) as ws:
            assert (await ws.recv())["type"] == "connection"
            tally.messages += 1
            await ws.send(START)
            first = await expect(ws, "eye_data", tally)
            self.last_frame = first["frame"]
            captured = first["captured_at"]
            task_status.started()
            last = began = trio.current_time()
            window: collections.deque[float] = collections.deque()
            with self.reading:
                while True:
                    try:
                        message = await ws.recv(timeout=MAX_GAP_S)
                    except Gone as exc:
                        self.closed = str(exc)
                        return
                    except trio.TooSlowError:
                        # Fail now, not at the end: the server has stalled for everyone.
                        raise AssertionError(
                            f"stayer {self.index}: no eye_data for {MAX_GAP_S:g} s after frame "
                            f"{self.last_frame} ({self.received} received)"
                        ) from None
                    now = trio.current_time()
                    tally.messages += 1
                    assert message["type"] == "eye_data", message
                    assert message["frame"] > self.last_frame, (message, self.last_frame)
                    self.last_frame = message["frame"]
                    self.received += 1
                    tally.eye_data += 1
                    if now - last > self.max_gap:
                        self.max_gap, self.max_gap_frame = now - last, message["frame"]
                    last = now
                    self.max_capture_gap = max(
                        self.max_capture_gap, message["captured_at"] - captured
                    )
                    captured = message["captured_at"]
                    self.max_latency = max(self.max_latency, time.time() - captured)
                    window.append(now)
                    while window[0] < now - WINDOW_S:
                        window.popleft()
                    if now - began >= WINDOW_S:
                        self.fewest_in_window = min(self.fewest_in_window, len(window))
                        assert len(window) >= MIN_IN_WINDOW, (
                            f"stayer {self.index}: {len(window)} eye_data in {WINDOW_S:g} s "
                            f"up to frame {self.last_frame}"
                        )


@asynccontextmanager
async def trackerd_process(log: ServerLog) -> AsyncIterator[tuple[trio.Process, int]]:
    """The real server, its log drained; SIGTERM at the end, which must exit it with 0."""
    # INFO, not WARNING: start_server finds the port in the "listening on" line. JSON, so the
    # drain can tell a warning from an info line whatever the message says.
    process, port = await start_server(
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--source",
        "demo",
        "--log-format",
        "json",
        "--stats-interval",
        str(STATS_INTERVAL_S),
    )
    assert process.stderr is not None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(log.drain, process.stderr)
            yield process, port
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(OP_TIMEOUT_S):
                assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


async def check_until(
    condition: Callable[[], Awaitable[bool]],
    log: ServerLog,
    timeout: float,
    what: Callable[[], str],
) -> None:
    """Check ``condition`` now and again each time the server logs something (a client
    leaving, or the stats line every ``STATS_INTERVAL_S``) until it holds; fail with
    ``what()`` after ``timeout``."""
    with trio.move_on_after(timeout):
        while not await condition():
            await log.more()
        return
    raise AssertionError(f"not within {timeout:g} s: {what()}")


# --- the tests -------------------------------------------------------------------------------
#
# First a server bug the soak turned up, reduced to its own small test (the other one, the
# demo clip's timeline jumping back from its second loop on, is in test_sources.py).


async def test_a_ping_behind_a_flood_does_not_take_the_server_down() -> None:
    """One client must not be able to stop the server for everyone.

    When the server closes a connection itself (a flood past the rate limit: 1008; also a
    heartbeat timeout, an internal error, shutdown), trio-websocket's reader task goes on
    reading the frames that were already on their way, and answers a ping among them with a
    pong, which wsproto refuses in the LOCAL_CLOSING state with LocalProtocolError. That
    exception escapes the reader task into the nursery of ``Server._serve_stream``, and from
    there through the connection handlers' nursery to ``app.run``: the process exits with
    status 1 and every client is gone. Here: 120 commands (the rate limit lets 40 through, the
    next 41 refused make a flood) followed by 5 pings, in one write."""
    process, port = await start_server("--host", "127.0.0.1", "--port", "0", "--source", "demo")
    log = ServerLog()
    try:
        async with trio.open_nursery() as nursery:
            assert process.stderr is not None
            nursery.start_soon(log.drain, process.stderr)
            flooder = await RawClient.connect(port)
            await flooder.send(
                client_frame(0x1, b'{"type": "status"}') * 120 + client_frame(0x9, b"p") * 5
            )
            with pytest.raises(Gone, match="close frame 1008"):
                while True:
                    await flooder.recv()
            flooder.reset()
            with trio.move_on_after(1.0):
                await process.wait()
            assert process.returncode is None, (
                f"the server exited with {process.returncode}: {log.problems[-3:]}"
            )
            async with library_client(port) as ws:  # everyone else is still served
                assert (await ws.recv())["type"] == "connection"
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


@pytest.mark.slow
async def test_soak_200_clients_churning_leak_nothing_and_stayers_get_data_throughout() -> None:
    seed = int(os.environ.get("SOAK_SEED", DEFAULT_SEED))
    log = ServerLog()
    try:
        with trio.fail_after(SOAK_SECONDS + 45):
            await soak(seed, log)
    except BaseException as exc:
        exc.add_note(f"soak seed: SOAK_SEED={seed}")
        for line in log.problems[:10]:
            exc.add_note(f"server: {line}")
        raise


async def soak(seed: int, log: ServerLog) -> None:
    tally = Tally()
    stayers = [Stayer(i) for i in range(STAYERS)]
    async with trackerd_process(log) as (process, port), trio.open_nursery() as stayers_running:
        for stayer in stayers:
            await stayers_running.start(stayer.run, port, tally)

        # The start: the stayers alone. The descriptors are counted before the scrape (whose
        # own connection is one of process_open_fds, and whose handler is one of the tasks).
        fds_start = open_fds(process.pid)
        start = await fetch_metrics(port)
        assert start["trackerd_clients_connected"] == STAYERS
        connections_start = start["trackerd_connections_total"]

        peak = {"clients": 0.0, "tasks": 0.0, "fds": 0.0, "rss": 0.0}
        rss_warm = 0.0

        async def monitor(task_status: trio.TaskStatus[None]) -> None:
            nonlocal rss_warm
            task_status.started()
            begun = trio.current_time()
            while True:
                await trio.sleep(1.0)
                now = await fetch_metrics(port)
                peak["clients"] = max(peak["clients"], now["trackerd_clients_connected"])
                peak["tasks"] = max(peak["tasks"], now["trackerd_tasks"])
                peak["fds"] = max(peak["fds"], now["process_open_fds"])
                peak["rss"] = max(peak["rss"], vm_rss_mib(process.pid))
                if not rss_warm and trio.current_time() - begun >= WARMUP_S:
                    rss_warm = vm_rss_mib(process.pid)

        deadline = trio.current_time() + SOAK_SECONDS
        async with trio.open_nursery() as churning:
            await churning.start(monitor)
            async with trio.open_nursery() as churners:
                for i in range(CHURNERS):
                    rng = random.Random(f"{seed}-{i}")
                    churners.start_soon(churner, port, rng, tally, deadline)
            churning.cancel_scope.cancel()  # the monitor
        churn_s = trio.current_time() - deadline + SOAK_SECONDS

        # Back to the stayers alone: the same tasks and descriptors as at the start.
        end: dict[str, float] = {}
        fds_end = 0

        async def settled() -> bool:
            nonlocal end, fds_end
            fds_end = open_fds(process.pid)
            end = await fetch_metrics(port)
            return (
                end["trackerd_clients_connected"] == STAYERS
                and end["trackerd_tasks"] == start["trackerd_tasks"]
                and end["process_open_fds"] == start["process_open_fds"]
                and fds_end == fds_start
            )

        def difference() -> str:
            keys = ("trackerd_clients_connected", "trackerd_tasks", "process_open_fds")
            return (
                f"start {[start[k] for k in keys]} /proc fds {fds_start}, "
                f"end {[end[k] for k in keys]} /proc fds {fds_end}"
            )

        await check_until(settled, log, SETTLE_TIMEOUT_S, difference)
        rss_end = vm_rss_mib(process.pid)
        for stayer in stayers:
            stayer.reading.cancel()

    sessions = tally.connections - STAYERS
    frames = end["trackerd_frames_processed_total"] - start["trackerd_frames_processed_total"]
    worst = max(stayers, key=lambda stayer: stayer.max_gap)
    summary = (
        f"soak: seed={seed} {churn_s:.1f} s, {STAYERS}+{CHURNERS} clients, "
        f"connections={tally.connections} (server accepted "
        f"{end['trackerd_connections_total'] - connections_start:.0f} WebSocket sessions of "
        f"{sessions}), messages={tally.messages} eye_data={tally.eye_data}, "
        f"frames={frames:.0f} ({frames / churn_s:.1f}/s), "
        f"stayer max gap={worst.max_gap * 1000:.0f} ms before frame {worst.max_gap_frame} "
        f"(capture {max(s.max_capture_gap for s in stayers) * 1000:.0f} ms, "
        f"latency {max(s.max_latency for s in stayers) * 1000:.0f} ms, "
        f"fewest in {WINDOW_S:g} s {min(s.fewest_in_window for s in stayers)}), "
        f"rss warm-up={rss_warm:.1f} MiB end={rss_end:.1f} MiB "
        f"(+{rss_end - rss_warm:.1f}, peak {peak['rss']:.1f}), "
        f"tasks start={start['trackerd_tasks']:.0f} end={end['trackerd_tasks']:.0f} "
        f"peak={peak['tasks']:.0f}, fds start={fds_start} end={fds_end} "
        f"(process_open_fds {start['process_open_fds']:.0f}/{end['process_open_fds']:.0f}, "
        f"peak {peak['fds']:.0f}), peak clients={peak['clients']:.0f}, "
        f"dropped={end['trackerd_messages_dropped_total']:.0f} "
        f"({tally.slow_readers} slow readers), "
        f"server log lines={log.lines} {dict(log.levels)}, endings={dict(tally.endings)}"
    )
    print(summary)

    for stayer in stayers:
        assert stayer.closed is None, f"stayer {stayer.index} was closed: {stayer.closed}"
        assert stayer.max_gap <= MAX_GAP_S, (stayer.index, stayer.max_gap)
    assert rss_warm > 0, "the monitor never reached the warm-up point"
    assert rss_end - rss_warm < MAX_RSS_GROWTH_MIB, summary
    assert not log.problems, log.problems[:10]
    # The server counted every WebSocket session: each that got its 101, and of those that
    # reset right after sending the request, the ones it answered before the reset came.
    accepted = end["trackerd_connections_total"] - connections_start
    aborted = sum(n for kind, n in tally.endings.items() if kind.startswith("abort"))
    answered = sessions - aborted + tally.endings["abort:reset-after-101"]
    assert answered <= accepted <= answered + tally.endings["abort:request-reset"], summary
