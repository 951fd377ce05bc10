"""The fan-out benchmark's trackerd: the real server with only the frame analysis made up.

``python -m benchmarks.fanout_server [--rate 30] [--profile FILE]`` starts ``trackerd.app.run``
(hub, capture task, per-client tasks, the real send path) on 127.0.0.1 port 0 under trio, prints
``PORT <n>`` once it accepts connections, and serves until SIGTERM/SIGINT or until stdin closes
(so it never outlives the benchmark). A line ``stats`` on stdin is answered with one line
``STATS {json}``: the server's send counters and the CPU time spent in ``Hub.publish``.

Only two things are replaced, through ``run``'s own parameters: the source is a live "camera" that
delivers a tiny frame every 1/rate s, and the analyzer returns made-up observations (the same as
the baseline's, :func:`benchmarks.fanout_baseline.synthetic`), so that the fan-out alone is
measured. The frame's capture time is still taken by trackerd's capture task, as in production.

``--profile FILE`` runs the server under cProfile (event-loop thread only) and writes the stats
to FILE on exit, to see where trackerd's CPU goes; the profiler slows it, so not for timings.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import json
import os
import signal
import time
from typing import Any

import numpy as np
import trio
from numpy.typing import NDArray

from benchmarks.fanout_baseline import RATE_HZ, Ticker, raise_file_limit, synthetic
from trackerd.app import Running, run
from trackerd.ops import logs
from trackerd.settings import Settings
from trackerd.sources import Source
from trackerd.vision.observation import Observation

FRAME = np.zeros((8, 8, 3), np.uint8)


class Clock(Source):
    """A live camera that delivers a tiny frame every 1/rate s (it blocks, as a camera does;
    the capture task calls it in a worker thread)."""

    live = True

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.description = f"synthetic {rate:g} Hz"
        self._ticker = Ticker(rate)

    def _read(self) -> tuple[NDArray[np.uint8], float]:
        time.sleep(self._ticker.delay())
        return FRAME, time.monotonic()


class Analyzer:
    """A FrameAnalyzer that makes observations up instead of looking at the frame."""

    def __init__(self) -> None:
        self.n = 0

    def process(self, image: NDArray[np.uint8], t: float) -> Observation:
        self.n += 1
        fields = synthetic(self.n)
        face = fields["face_detected"]
        return Observation(
            t=t,
            **fields,
            face=(100, 80, 200, 200) if face else None,
            eyes=(),
            faces=(),
            attention=1.0 if face else 0.0,
        )

    def reset(self) -> None:
        self.n = 0


class PublishTimer:
    """Wraps ``Hub.publish`` to add up this thread's CPU time inside it: serialising once plus
    every client's ``offer`` (the fast path's ``os.write``, whose loopback TCP work the kernel
    bills to the writer). Two clock reads per frame; the server's behaviour is unchanged."""

    def __init__(self, running: Running) -> None:
        self.cpu_s = 0.0
        self._publish = running.hub.publish
        running.hub.publish = self  # type: ignore[method-assign]

    def __call__(self, observation: Observation, captured_at: float) -> Any:
        start = time.thread_time()
        try:
            return self._publish(observation, captured_at)
        finally:
            self.cpu_s += time.thread_time() - start


def stats(running: Running, timer: PublishTimer) -> dict[str, Any]:
    """The publish time and the server's own counters (whatever fields its statistics record
    has: fast and slow sends, skipped observations, …)."""
    return {
        "publish_cpu_s": timer.cpu_s,
        "frames": running.capture.statistics().frames,
        **dataclasses.asdict(running.server.statistics().clients),
    }


async def serve(rate: float) -> None:
    settings = Settings(
        host="127.0.0.1", port=0, source="synthetic", log_level="WARNING", max_connections=4000
    )
    stop = trio.Event()
    async with trio.open_nursery() as helpers:
        helpers.start_soon(_stop_on_signal, stop)
        async with trio.open_nursery() as server:
            running: Running = await server.start(_run, settings, rate, stop)
            timer = PublishTimer(running)
            print(f"PORT {running.port}", flush=True)
            helpers.start_soon(_commands, running, timer, stop)
        # run() has returned: it saw ``stop``, closed every client and released the source.
        helpers.cancel_scope.cancel()


async def _run(
    settings: Settings, rate: float, stop: trio.Event, *, task_status: trio.TaskStatus[Running]
) -> None:
    await run(
        settings,
        open_source=lambda spec: Clock(rate),
        make_tracker=Analyzer,
        stop=stop,
        task_status=task_status,
    )


async def _stop_on_signal(stop: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            stop.set()
            return


async def _commands(running: Running, timer: PublishTimer, stop: trio.Event) -> None:
    """``stats`` lines from the benchmark; end of input means the benchmark is gone."""
    async with trio.lowlevel.FdStream(os.dup(0)) as stdin:
        while data := await stdin.receive_some(4096):
            for _ in range(data.count(b"stats")):
                print(f"STATS {json.dumps(stats(running, timer))}", flush=True)
    stop.set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=RATE_HZ, help="frames per second")
    parser.add_argument("--profile", metavar="FILE", help="write cProfile stats here on exit")
    args = parser.parse_args()
    raise_file_limit(4096)
    logs.configure("WARNING", "text")
    if not args.profile:
        trio.run(serve, args.rate)
        return
    profiler = cProfile.Profile()
    try:
        profiler.runcall(trio.run, serve, args.rate)
    finally:
        profiler.dump_stats(args.profile)


if __name__ == "__main__":
    main()
