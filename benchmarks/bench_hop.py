"""The hand-off of a pushed frame to an analysis thread and back, on its own.

``python -m benchmarks.bench_hop [--calls N]``: N calls of a function that does nothing, through
``trio.to_thread.run_sync`` and through :func:`trackerd.net.sessions.in_thread` (what the
sessions use), in turns of 1000 calls each, alternating, in one trio run. Each row is the
process's CPU time a call (both threads: the event loop's and the worker's) and the wall time a
call, the least over the turns. Every push frame pays it once; the difference is Python run
under the GIL, which is what bounds one process's sessions (docs/performance.md).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Awaitable, Callable

import trio

from trackerd.net.sessions import in_thread

TURN = 1000


def _nothing() -> int:
    return 1


async def _to_thread() -> int:
    return await trio.to_thread.run_sync(_nothing)


async def _in_thread() -> int:
    return await in_thread(_nothing)


async def _turn(hop: Callable[[], Awaitable[int]]) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(TURN):
        await hop()
    return (time.process_time() - cpu) / TURN, (time.perf_counter() - wall) / TURN


async def measure(calls: int) -> dict[str, tuple[float, float]]:
    """The least CPU and wall seconds a call over the turns, by path."""
    hops = {"trio.to_thread.run_sync": _to_thread, "in_thread": _in_thread}
    best = dict.fromkeys(hops, (float("inf"), float("inf")))
    for _ in range(max(1, calls // TURN)):
        for name, hop in hops.items():
            cpu, wall = await _turn(hop)
            best[name] = (min(best[name][0], cpu), min(best[name][1], wall))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="calls a path (default 20000)")
    args = parser.parse_args()
    for name, (cpu, wall) in trio.run(measure, args.calls).items():
        print(f"{name:25} {cpu * 1e6:6.1f} us CPU  {wall * 1e6:6.1f} us wall  a call")


if __name__ == "__main__":
    main()
