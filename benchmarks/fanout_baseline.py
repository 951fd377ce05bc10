"""The fan-out benchmark's baseline: asyncio + ``websockets`` ``broadcast``, in its own process.

``python -m benchmarks.fanout_baseline [--rate 30]`` listens on 127.0.0.1 (port 0), prints
``PORT <n>`` once it accepts connections, and serves until SIGTERM/SIGINT or until stdin closes
(so it never outlives the benchmark). A line ``stats`` on stdin is answered with one line
``STATS {json}``: the CPU time spent inside ``broadcast`` and how many ticks there were.

It does what trackerd does, the simplest way the ``websockets`` library offers: the connection
message on connect, ``start_tracking``/``stop_tracking`` (un)subscribe, and a 30 Hz loop that
serialises one ``eye_data`` per tick and hands it to ``broadcast``, which frames it once and
writes it to every subscriber's transport without awaiting. Compression is off, as
trio-websocket has it (docs/design.md: permessage-deflate doubled this server's CPU at 1000
clients).

This module imports nothing from trackerd, so that the baseline's CPU and RSS are its own. The
made-up observations (:func:`synthetic`) and the message encoding (:func:`eye_data`) live here and
trackerd's side (``benchmarks.fanout_server``) uses the same values, so both send the same bytes
apart from the timestamps; the benchmark checks that the sizes match.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import sys
import time
from typing import Any

RATE_HZ = 30.0


def synthetic(n: int) -> dict[str, Any]:
    """The protocol fields of made-up observation ``n``: varies like a real one (a face that
    is lost one frame in twenty, a confidence that moves), because only the fan-out is measured."""
    face = n % 20 != 0
    return {
        "face_detected": face,
        "eye_count": 2 if face else 0,
        "looking_away": not face,
        "confidence": round(0.9 - (n % 7) / 100, 4) if face else 0.12,
        "face_count": int(face),
    }


def timestamp(unix_s: float) -> str:
    """``2024-01-01T12:00:00.000Z``, as trackerd.net.protocol writes it."""
    whole = int(unix_s)
    millis = int((unix_s - whole) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


def eye_data(n: int, captured_at: float) -> str:
    """The same keys in the same order and the same compact JSON as
    trackerd.net.protocol.eye_data."""
    fields = synthetic(n)
    return json.dumps(
        {
            "type": "eye_data",
            "timestamp": timestamp(captured_at),
            **fields,
            "frame": n,
            "captured_at": round(captured_at, 6),
        },
        separators=(",", ":"),
    )


def connection() -> str:
    return json.dumps(
        {
            "type": "connection",
            "message": "Eye tracking connected",
            "timestamp": timestamp(time.time()),
        },
        separators=(",", ":"),
    )


def raise_file_limit(wanted: int) -> None:
    """One descriptor per client: 1000 clients need more than the usual soft limit of 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, wanted), hard))


class Ticker:
    """Paces ticks at ``rate`` Hz on an absolute schedule; a tick that is late by more than a
    period is dropped rather than bursted, so an overloaded server sends less, never more."""

    def __init__(self, rate: float) -> None:
        self.period = 1.0 / rate
        self.next_at = time.monotonic()

    def delay(self) -> float:
        """Seconds to wait for the next tick."""
        self.next_at += self.period
        now = time.monotonic()
        if now - self.next_at > self.period:
            self.next_at = now
        return max(0.0, self.next_at - now)


async def serve(rate: float) -> None:
    from websockets.asyncio.server import ServerConnection, broadcast
    from websockets.asyncio.server import serve as ws_serve

    subscribers: set[ServerConnection] = set()
    spent = {"broadcast_cpu_s": 0.0, "ticks": 0}

    async def handler(ws: ServerConnection) -> None:
        await ws.send(connection())
        try:
            async for message in ws:
                kind = json.loads(message).get("type")
                if kind == "start_tracking":
                    subscribers.add(ws)
                elif kind == "stop_tracking":
                    subscribers.discard(ws)
        finally:
            subscribers.discard(ws)

    async def tick() -> None:
        ticker, n = Ticker(rate), 0
        while True:
            await asyncio.sleep(ticker.delay())
            n += 1
            # thread_time: this thread's CPU, i.e. serialising plus broadcast's writes (whose
            # loopback TCP work the kernel bills to this thread), without the event loop.
            start = time.thread_time()
            if subscribers:
                broadcast(subscribers, eye_data(n, time.time()))
            spent["broadcast_cpu_s"] += time.thread_time() - start
            spent["ticks"] = n

    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _settle, stop)
    loop.add_reader(sys.stdin.fileno(), _on_stdin, stop, spent)
    async with ws_serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"PORT {port}", flush=True)
        ticking = asyncio.create_task(tick())
        await stop
        ticking.cancel()


def _settle(stop: asyncio.Future[None]) -> None:
    if not stop.done():
        stop.set_result(None)


def _on_stdin(stop: asyncio.Future[None], spent: dict[str, Any]) -> None:
    # The parent writes one short line at a time, so a read returns whole lines.
    data = os.read(sys.stdin.fileno(), 4096)
    if not data:  # the benchmark is gone: so are we
        asyncio.get_running_loop().remove_reader(sys.stdin.fileno())
        _settle(stop)
        return
    for _ in range(data.count(b"stats")):
        print(f"STATS {json.dumps(spent)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=RATE_HZ, help="eye_data per second")
    args = parser.parse_args()
    raise_file_limit(4096)
    asyncio.run(serve(args.rate))


if __name__ == "__main__":
    main()
