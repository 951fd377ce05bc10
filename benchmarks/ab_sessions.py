"""A/B of push sessions at fixed sizes: another checkout (or this tree under other settings)
against this tree, in turns, repeated.

``python -m benchmarks.ab_sessions CHECKOUT [--sizes 22,28] [--workers 1,2] [--repeats 3]
[--env NAME=VALUE ...] [--flag=--name=value ...]``: for each repeat, workers and size, one
:func:`benchmarks.bench_sessions.measure` row of CHECKOUT's server (``.``: this tree) and one of
this tree's with ``--env`` added to its environment and ``--flag`` to its command line; the
order of the two alternates between repeats. Then, per side, workers and size, the medians over
the repeats: eye_data a second (mean and slowest session), p99, server CPU a frame, and how
many rows held. The sessions suite's largest-N bisection moves by a few sessions from run to
run; rows at fixed sizes, alternated and repeated, are what tells two servers apart.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.bench_sessions import measure, print_header, print_row, webcam_jpegs
from benchmarks.sessions_clients import write_frames

WINDOW_S = 8.0
WARMUP_S = 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", type=Path, help="the other checkout ('.': this tree)")
    parser.add_argument("--sizes", default="22,28", help="session counts (default 22,28)")
    parser.add_argument("--workers", default="1,2", help="--workers values (default 1,2)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE, this tree's")
    parser.add_argument("--flag", action="append", default=[], help="a flag, this tree's")
    args = parser.parse_args()
    env = dict(item.partition("=")[::2] for item in args.env)
    sides = (("before", args.checkout.resolve(), {}, []), ("after", None, env, args.flag))
    rows: dict[tuple[int, int, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        frames = Path(tmp) / "frames.bin"
        write_frames(frames, webcam_jpegs(None)[1])
        print_header()
        for repeat in range(args.repeats):
            for workers in map(int, args.workers.split(",")):
                for n in map(int, args.sizes.split(",")):
                    for label, root, side_env, flags in sides[:: 1 if repeat % 2 == 0 else -1]:
                        row = measure(
                            n, frames, WINDOW_S, WARMUP_S, workers, flags, root, side_env, False
                        )
                        print_row(row, note=f"{label} --workers {workers}")
                        rows.setdefault((workers, n, label), []).append(row)
    for (workers, n, label), runs in sorted(rows.items()):
        median = {
            key: statistics.median(r[key] for r in runs if r[key] is not None)
            for key in ("fps_mean", "fps_min", "p99_ms", "server_cpu_ms_per_frame")
        }
        print(
            f"--workers {workers}, {n} sessions, {label:6}: eye_data/s {median['fps_mean']:.1f}"
            f" (slowest {median['fps_min']:.1f}), p99 {median['p99_ms']:.0f} ms, server CPU"
            f" {median['server_cpu_ms_per_frame']:.2f} ms a frame, held"
            f" {sum(r['holds'] for r in runs)} of {len(runs)}"
        )


if __name__ == "__main__":
    main()
