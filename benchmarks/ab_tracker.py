"""A/B a tracker setting on the annotated zju-dev clips and the demo's Pexels frames.

``python -m benchmarks.ab_tracker [--clips GLOB ...] VARIANT ...``: each VARIANT is
``name=value[,name=value...]`` over :class:`~trackerd.vision.tracker.TrackerSettings`
(``eyes.NAME`` for :class:`~trackerd.vision.eyes.EyeSettings`); the defaults run first as
``default``. Every variant sees the same frames, clip by clip in turn (so they share the
machine's noise), and gets one row:

- faces: annotated frames whose face box the reported one overlaps at IoU > 0.3;
- the eye scores of :mod:`benchmarks.zju` (recall and false boxes on open-eye frames, closed
  eyes on closed and on open frames, the worse eye's centre error within 0.05 / 0.10);
- demo lost: frames of the demo's Pexels part (a face in every one) without a face;
- ms: tracker time per zju-dev frame.

docs/experiments.md gives the command behind each setting's value. Example:
``python -m benchmarks.ab_tracker face_confirm_every=1 face_confirm_every=3``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import fnmatch
import time
from typing import Any

from benchmarks import zju
from benchmarks.bench_tracker import _frames
from trackerd.sources import demo_clip_path
from trackerd.vision.tracker import Tracker, TrackerSettings

DEMO_FACE_FRAMES = 472
"""The demo clip's Pexels part: a face in every frame."""


def parse(variant: str) -> TrackerSettings:
    """``a=1,eyes.b=2`` as settings; values are Python literals."""
    top: dict[str, Any] = {}
    eyes: dict[str, Any] = {}
    for item in filter(None, variant.split(",")):
        name, _, text = item.partition("=")
        value = ast.literal_eval(text)
        if name.startswith("eyes."):
            eyes[name.removeprefix("eyes.")] = value
        else:
            top[name] = value
    default = TrackerSettings()
    return dataclasses.replace(default, eyes=dataclasses.replace(default.eyes, **eyes), **top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="*", help="name=value[,name=value...]")
    parser.add_argument(
        "--clips", action="append", help="zju-dev clip names (a glob; repeat for more)"
    )
    args = parser.parse_args()
    variants = {"default": TrackerSettings()} | {v: parse(v) for v in args.variants}
    trackers = {name: Tracker(settings) for name, settings in variants.items()}
    scores = {name: zju.Score() for name in variants}
    faces = dict.fromkeys(variants, 0)
    seconds = dict.fromkeys(variants, 0.0)
    frames = 0
    patterns = args.clips or ["*"]
    chosen = [n for n in zju.names() if any(fnmatch.fnmatch(n, p) for p in patterns)]
    for clip_name in chosen:
        clip = zju.load(clip_name)
        frames += len(clip.images)
        for name, tracker in trackers.items():
            tracker.reset()
            found: list[zju.Result | None] = []
            for image, t, label in zip(clip.images, clip.times, clip.labels, strict=True):
                start = time.perf_counter()
                o = tracker.process(image, t)
                seconds[name] += time.perf_counter() - start
                found.append(zju.Result(o.eyes, o.pupils, o.eyes_closed))
                faces[name] += o.face is not None and zju.iou(o.face, label.face) > 0.3
            scores[name].add(zju.score_clip(clip, found))
    demo = _frames(demo_clip_path(), DEMO_FACE_FRAMES)
    print(f"{frames} zju-dev frames ({len(chosen)} clips); demo: {len(demo)} frames with a face")
    columns = ("faces", "eyes", "false", "closed", "open-closed", "e<=.05", "e<=.10", "demo-lost")
    print(f"{'':32}" + "".join(f"{c:>12}" for c in (*columns, "ms")))
    for name, tracker in trackers.items():
        tracker.reset()
        lost = sum(not tracker.process(image, i / 30).face_detected for i, image in enumerate(demo))
        s = scores[name]
        rates = (faces[name] / max(1, frames), s.recall)
        cells = [f"{r:.1%}" for r in rates] + [f"{s.false_per_frame:.3f}"]
        cells += [f"{r:.1%}" for r in (s.closed_recall, s.open_said_closed_rate, s.e005, s.e010)]
        cells += [str(lost), f"{seconds[name] * 1000 / max(1, frames):.2f}"]
        print(f"{name[:32]:32}" + "".join(f"{c:>12}" for c in cells))


if __name__ == "__main__":
    main()
