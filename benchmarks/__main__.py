"""``python -m benchmarks [NAME ...] [--quick]``: run the suites, print tables, write JSON.

Every suite measures its baseline in the same run and reports ratios. Results go to
``benchmarks/results/NAME.json`` with the machine, the versions and the command that made them.
``--quick`` runs each suite briefly: a smoke test that the code works (CI runs it), not a timing.
Each suite but attacks and faces also draws ``NAME.png`` beside its JSON.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import charts

SUITES = {
    "tracker": "benchmarks.bench_tracker",
    "kernels": "benchmarks.bench_kernels",
    "gaze": "benchmarks.gaze",
    "fanout": "benchmarks.bench_fanout",
    "startup": "benchmarks.bench_startup",
    "memory": "benchmarks.bench_memory",
    "sessions": "benchmarks.bench_sessions",
    "attacks": "benchmarks.bench_attacks",
    "faces": "benchmarks.faces",
}
RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    import cv2
    import numba
    import numpy

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "opencv": cv2.__version__,
        "numpy": numpy.__version__,
        "numba": numba.__version__,
    }


def make_record(
    suite: str, command: list[str], quick: bool, started: float, results: Any
) -> dict[str, Any]:
    """What a suite's JSON holds: its results, how and when they were made, and on what."""
    return {
        "suite": suite,
        "command": " ".join([Path(sys.executable).name, *command]),
        "quick": quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "machine": machine(),
        "results": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"suites to run (default: all): {', '.join(SUITES)}",
    )
    parser.add_argument("--quick", action="store_true", help="brief smoke run, not for timings")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON results")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in SUITES]
    if unknown:
        parser.error(f"unknown suite {', '.join(unknown)}; choose from {', '.join(SUITES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.names or list(SUITES):
        print(f"== {name}{' (quick)' if args.quick else ''}", flush=True)
        started = time.time()
        results = importlib.import_module(SUITES[name]).run(quick=args.quick)
        command = ["-m", "benchmarks", *(argv or sys.argv[1:])]
        record = make_record(name, command, args.quick, started, results)
        stem = f"{name}{'-quick' if args.quick else ''}"
        path = args.out / f"{stem}.json"
        path.write_text(json.dumps(record, indent=1))
        if name in charts.DRAW:  # attacks, faces: the table says it all
            charts.DRAW[name](results, args.out / f"{stem}.png")
        print(f"-> {path}{f' and {stem}.png' if name in charts.DRAW else ''}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
