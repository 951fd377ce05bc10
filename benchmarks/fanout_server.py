"""The two servers the fan-out benchmark compares, each run in its own process.

``python -m benchmarks.fanout_server trackerd|baseline --rate 30`` prints ``PORT <n>`` once it
accepts connections on 127.0.0.1 (port 0), then serves until SIGTERM/SIGINT or stdin closes.

- ``trackerd``: the real server (``trackerd.app.run``: hub, per-client tasks, send path), with
  only the frame analysis replaced by a synthetic one, so that the fan-out alone is measured.
- ``baseline``: asyncio + ``websockets``, whose ``broadcast`` is the fastest fan-out that
  library offers, with compression off (as trio-websocket has it) and the same messages.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import sys
import time

import numpy as np
from numpy.typing import NDArray

from trackerd import protocol
from trackerd.observation import Observation


def observation(n: int) -> Observation:
    """A made-up observation that varies like a real one (this benchmark measures fan-out)."""
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


# --- trackerd ---------------------------------------------------------------------------------


def run_trackerd(rate: float) -> None:
    import trio

    from trackerd.app import Running, run
    from trackerd.settings import Settings
    from trackerd.sources import Source

    class Clock(Source):
        """A live 'camera' that delivers a tiny frame every 1/rate s."""

        live = True
        description = f"synthetic {rate:g} Hz"

        def __init__(self) -> None:
            super().__init__()
            self._next = time.monotonic()

        def _read(self) -> tuple[NDArray[np.uint8], float]:
            self._next += 1.0 / rate
            time.sleep(max(0.0, self._next - time.monotonic()))
            return np.zeros((2, 2, 3), np.uint8), time.monotonic()

    class Analyzer:
        def __init__(self) -> None:
            self.n = 0

        def process(self, image: NDArray[np.uint8], t: float) -> Observation:
            self.n += 1
            return observation(self.n)

        def reset(self) -> None:
            self.n = 0

    async def main() -> None:
        settings = Settings(host="127.0.0.1", port=0, source="synthetic", log_level="WARNING")
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_signal_or_stdin_trio, stop)
            running: Running = await nursery.start(
                lambda task_status: run(
                    settings,
                    open_source=lambda spec: Clock(),
                    make_tracker=Analyzer,
                    stop=stop,
                    task_status=task_status,
                )
            )
            print(f"PORT {running.port}", flush=True)
        # run() returned after stop: done.

    async def _stop_on_signal_or_stdin_trio(stop: trio.Event) -> None:
        async def on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    stop.set()
                    return

        async def on_stdin_closed() -> None:
            await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
            stop.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(on_signal)
            nursery.start_soon(on_stdin_closed)
            await stop.wait()
            nursery.cancel_scope.cancel()

    trio.run(main)


# --- the asyncio + websockets baseline ---------------------------------------------------------


def run_baseline(rate: float) -> None:
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    subscribers: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        await ws.send(protocol.connection())
        try:
            async for message in ws:
                kind = json.loads(message).get("type")
                if kind == "start_tracking":
                    subscribers.add(ws)
                elif kind == "stop_tracking":
                    subscribers.discard(ws)
        finally:
            subscribers.discard(ws)

    async def ticker() -> None:
        n = 0
        next_at = time.monotonic()
        while True:
            next_at += 1.0 / rate
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            n += 1
            # Serialised once per tick, like trackerd; broadcast frames it once too.
            broadcast(subscribers, protocol.eye_data(observation(n), time.time(), n))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set_result, None)
        loop.add_reader(sys.stdin.fileno(), lambda: stop.done() or stop.set_result(None))
        async with serve(handler, "127.0.0.1", 0, compression=None, ping_interval=20) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            print(f"PORT {port}", flush=True)
            task = asyncio.create_task(ticker())
            await stop
            task.cancel()

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("server", choices=["trackerd", "baseline"])
    parser.add_argument("--rate", type=float, default=30.0)
    args = parser.parse_args()
    # One descriptor per client: 1000 clients need more than the usual soft limit of 1024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4096)), hard))
    (run_trackerd if args.server == "trackerd" else run_baseline)(args.rate)


if __name__ == "__main__":
    main()
