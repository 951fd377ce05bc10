"""Per-client send paths for the fan-out, compared in one process: CPU per message and client.

Every row delivers the same ``eye_data`` messages (serialised once each) to the same N real
trio-websocket server connections over loopback TCP, and awaits delivery of each message to
every client before the next. The client ends are drained between rounds, outside the timed
part, so every path finds empty socket buffers (a healthy client). Rows:

- ``naive``: ``await conn.send_message(text)`` for each client in turn (wsproto frames it
  every time): the baseline, and the loop docs/design.md records at ~52 µs per message.
- ``preframed-await``: the frame built once, ``await stream.send_all(frame)`` in turn.
- ``tasks-send_message`` / ``tasks-preframed``: a writer task per client waiting for "a value
  newer than the one I sent" (a ParkingLot and a version number), woken for every message.
- ``try_send``: the frame built once, ``FrameStream.try_send`` (one non-blocking ``os.write``)
  for each client, synchronously.
- ``trackerd``: what the server does, ``Hub.publish`` → ``Client.offer`` for each subscriber
  (JSON serialisation, framing once, the checks, ``try_send``), on the real ``Client``.

Run ``python -m benchmarks.bench_send_path [--quick] [--clients N]`` from the repository root.
It prints a table and writes ``benchmarks/results/send_path.json``; rows are best of several
repeats, and the ratios to ``naive`` are what carry over to other machines.
``--quick`` is a smoke test that the code runs, not a timing.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from trio_websocket import WebSocketConnection, wrap_server_stream

from trackerd.hub import Hub
from trackerd.net import protocol
from trackerd.net.framing import FrameStream, SendResult, text_frame
from trackerd.net.server import WS_TEXT, Client
from trackerd.settings import Settings
from trackerd.vision.observation import Observation

RESULTS = Path(__file__).parent / "results"
BATCH = 50
"""Messages per timed batch; the client ends are drained between batches (~10 KiB each)."""


@dataclass
class Pair:
    conn: WebSocketConnection
    frames: FrameStream
    client: trio.SocketStream


def observation(n: int) -> Observation:
    face = n % 20 != 0
    return Observation(
        t=n / 30,
        face_detected=face,
        eye_count=2 if face else 0,
        looking_away=not face,
        confidence=0.9 - (n % 7) / 100 if face else 0.12,
        face_count=int(face),
        face=(100, 80, 200, 200) if face else None,
        eyes=(),
        faces=(),
        attention=1.0 if face else 0.0,
    )


def messages(count: int) -> list[str]:
    start = time.time()
    return [protocol.eye_data(observation(n), start + n / 30, n + 1) for n in range(count)]


async def connect(nursery: trio.Nursery, listener: trio.SocketListener, port: int) -> Pair:
    """One real WebSocket connection: trio-websocket's server side on a FrameStream, and a
    hand-written client end whose bytes the benchmark drains unparsed."""
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server_side = await listener.accept()
    frames = FrameStream(server_side)
    key = base64.b64encode(os.urandom(16)).decode()
    await client.send_all(
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    request = await wrap_server_stream(nursery, frames)
    conn = await request.accept()
    head = b""
    while b"\r\n\r\n" not in head:
        head += await client.receive_some(4096)
    assert head.startswith(b"HTTP/1.1 101"), head
    return Pair(conn, frames, client)


def drain(pairs: list[Pair]) -> int:
    """Read whatever the clients have received, without waiting (not timed)."""
    total = 0
    for pair in pairs:
        fd = pair.client.socket.fileno()
        while True:
            try:
                got = len(os.read(fd, 1 << 20))
            except BlockingIOError:
                break
            total += got
            if got == 0:
                raise RuntimeError("a client connection closed")
    return total


async def settle(pairs: list[Pair], expected: int) -> None:
    """Drain until every byte sent so far has arrived (loopback delivery is near-instant)."""
    received = 0
    while received < expected:
        received += drain(pairs)
        await trio.sleep(0)


Deliver = Callable[[list[str]], Awaitable[object]]
"""Sends a batch to every client; returns the framed bytes each client gets, when they differ
from the batch's own frames (an int), or anything else."""


async def path_naive(pairs: list[Pair], batch: list[str]) -> None:
    for text in batch:
        for pair in pairs:
            await pair.conn.send_message(text)


async def path_preframed_await(pairs: list[Pair], batch: list[str]) -> None:
    for text in batch:
        frame = text_frame(text)
        for pair in pairs:
            await pair.frames.send_all(frame)


def path_try_send(pairs: list[Pair], batch: list[str]) -> int:
    refused = 0
    for text in batch:
        frame = text_frame(text)
        for pair in pairs:
            if pair.frames.try_send(frame) is not SendResult.SENT:
                refused += 1
    return refused


class Writers:
    """A writer task per client, each waiting for a newer version than it last sent."""

    def __init__(self, pairs: list[Pair], *, preframed: bool) -> None:
        self._pairs = pairs
        self._preframed = preframed
        self._lot = trio.lowlevel.ParkingLot()
        self._version = 0
        self._text = ""
        self._frame = b""
        self._done = 0
        self._all_done = trio.Event()

    async def run(self, nursery: trio.Nursery) -> None:
        for pair in self._pairs:
            nursery.start_soon(self._writer, pair)
        await trio.sleep(0)

    async def _writer(self, pair: Pair) -> None:
        sent = 0
        while True:
            while self._version == sent:
                await self._lot.park()
            sent = self._version
            if self._preframed:
                await pair.frames.send_all(self._frame)
            else:
                await pair.conn.send_message(self._text)
            self._done += 1
            if self._done == len(self._pairs):
                self._all_done.set()

    async def deliver(self, batch: list[str]) -> None:
        for text in batch:
            self._text = text
            self._frame = text_frame(text) if self._preframed else b""
            self._done = 0
            self._all_done = trio.Event()
            self._version += 1
            self._lot.unpark_all()
            await self._all_done.wait()


async def measure(
    name: str, pairs: list[Pair], texts: list[str], repeats: int, deliver: Deliver
) -> dict[str, Any]:
    best_cpu = best_wall = float("inf")
    for _ in range(repeats):
        cpu = wall = 0.0
        for i in range(0, len(texts), BATCH):
            batch = texts[i : i + BATCH]
            c0, w0 = time.process_time(), time.perf_counter()
            sent = await deliver(batch)
            cpu += time.process_time() - c0
            wall += time.perf_counter() - w0
            per_client = sent if isinstance(sent, int) else sum(len(text_frame(t)) for t in batch)
            await settle(pairs, per_client * len(pairs))
        best_cpu, best_wall = min(best_cpu, cpu), min(best_wall, wall)
    deliveries = len(texts) * len(pairs)
    return {
        "path": name,
        "clients": len(pairs),
        "messages": len(texts),
        "cpu_us_per_delivery": 1e6 * best_cpu / deliveries,
        "wall_us_per_delivery": 1e6 * best_wall / deliveries,
        "wall_ms_per_message_to_all": 1e3 * best_wall / len(texts),
    }


async def bench(clients: int, count: int, repeats: int) -> list[dict[str, Any]]:
    texts = messages(count)
    rows: list[dict[str, Any]] = []
    async with trio.open_nursery() as nursery:
        (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listener.socket.getsockname()[1]
        pairs = [await connect(nursery, listener, port) for _ in range(clients)]

        rows.append(await measure("naive", pairs, texts, repeats, lambda b: path_naive(pairs, b)))
        rows.append(
            await measure(
                "preframed-await", pairs, texts, repeats, lambda b: path_preframed_await(pairs, b)
            )
        )
        for preframed in (False, True):
            async with trio.open_nursery() as tasks:
                writers = Writers(pairs, preframed=preframed)
                await writers.run(tasks)
                name = "tasks-preframed" if preframed else "tasks-send_message"
                rows.append(await measure(name, pairs, texts, repeats, writers.deliver))
                tasks.cancel_scope.cancel()

        refused = 0

        async def try_send(batch: list[str]) -> None:
            nonlocal refused
            refused += path_try_send(pairs, batch)

        rows.append(await measure("try_send", pairs, texts, repeats, try_send))
        rows[-1]["refused"] = refused

        hub = Hub(protocol.eye_data)
        settings = Settings(host="127.0.0.1", port=0)
        subscribers = [Client(p.conn, p.frames, hub, settings, lambda: clients) for p in pairs]
        for subscriber in subscribers:
            hub.subscribe(subscriber)
        observations = iter(range(10**9))

        async def publish(batch: list[str]) -> int:
            sent = 0
            for _ in batch:
                published = hub.publish(observation(next(observations)), time.time())
                sent += len(published.encoded(WS_TEXT, text_frame))
            return sent

        rows.append(await measure("trackerd", pairs, texts, repeats, publish))
        # Offers the fast path could not complete (none, with drained clients).
        rows[-1]["fell_back"] = repeats * count * clients - sum(c.fast_sends for c in subscribers)
        nursery.cancel_scope.cancel()
    naive = rows[0]["cpu_us_per_delivery"]
    for row in rows:
        row["cpu_vs_naive"] = row["cpu_us_per_delivery"] / naive
    return rows


def run(quick: bool = False, clients: int | None = None) -> dict[str, Any]:
    n = clients or (20 if quick else 200)
    count, repeats = (BATCH, 1) if quick else (6 * BATCH, 5)
    rows = trio.run(bench, n, count, repeats)
    print(
        f"{'path':20} {'clients':>7} {'CPU µs/msg/client':>18} {'vs naive':>9} "
        f"{'ms per message to all':>22}"
    )
    for row in rows:
        print(
            f"{row['path']:20} {row['clients']:>7} {row['cpu_us_per_delivery']:>18.1f} "
            f"{row['cpu_vs_naive']:>9.2f} {row['wall_ms_per_message_to_all']:>22.2f}"
        )
    return {"rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="brief smoke run, not for timings")
    parser.add_argument("--clients", type=int, help="connections (default 200; quick 20)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON result")
    args = parser.parse_args(argv)
    started = time.time()
    results = run(quick=args.quick, clients=args.clients)
    record = {
        "suite": "send_path",
        "command": " ".join(
            [Path(sys.executable).name, "-m", "benchmarks.bench_send_path", *(argv or sys.argv[1:])]
        ),
        "quick": args.quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "trio": trio.__version__,
        },
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"send_path{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(record, indent=1))
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
