"""Every face's box (``faces`` in ``eye_data``) against the hand-drawn boxes of dlib-faces.

``python -m benchmarks.faces`` (or ``python -m benchmarks faces``) prints a table and writes
``benchmarks/results/faces.json``; ``tests/test_faces.py`` asserts floors and ceilings on the
same figures. The photos
(``../shared/data/dlib-faces``: nine PASCAL VOC photos, 43 faces drawn by hand in dlib's imglab
XML) may not be redistributed: they are read in place and never copied into the repository.

What is compared, photo by photo:

- **the original**: its whole-frame search (:class:`benchmarks.original.Original`), which is
  all it did with every frame;
- **trackerd**: the :class:`~trackerd.vision.tracker.Tracker` given the photo as a still frame
  at 30 fps for 1.5 s (:data:`FRAMES`). Its first frame is a full-frame search; from then on the
  main face is followed and the others' boxes are those of the last search, until the recount
  at ``recount_interval_s`` (1 s) searches again, for faces at least half the followed one's
  width. Reported: the first frame, the last (after the recount: what a client sees from then
  on), and the mean over every frame.

A hand-drawn box is **found** when a reported box matches it, one box per face, the best
matches first; a reported box that matches none is a **false box**. Two rules, both reported:

- ``iou``: intersection over union at least :data:`MIN_IOU`;
- ``centre``: the reported box's centre inside the drawn one and its width within 2x of it.
  Haar boxes take in the forehead and dlib's are drawn from the brows down, so a face found
  well can fall under IoU 0.5 (the rule ``tests/test_tracker.py`` used first).

The drawn boxes are not every face in every photo (a face turned away or a small one in the
back may be left out), so a "false" box is sometimes a real face: compare the two programs'
counts, not either against zero.
"""

from __future__ import annotations

import math
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import cv2
import numpy as np
from numpy.typing import NDArray

from benchmarks.original import Original
from benchmarks.zju import iou
from trackerd.vision.geometry import u8
from trackerd.vision.observation import Box, Observation
from trackerd.vision.tracker import Tracker

FOLDER: Final = Path(__file__).resolve().parents[2] / "shared" / "data" / "dlib-faces"
"""``../shared/data/dlib-faces`` beside the repository."""
LABELS: Final = ("training.xml", "testing.xml")
FPS: Final = 30.0
FRAMES: Final = 46
"""1.5 s at 30 fps: past the recount at 1 s, and past the face template's first confirmations."""
MIN_IOU: Final = 0.5


@dataclass(frozen=True, slots=True)
class Photo:
    path: Path
    drawn: tuple[Box, ...]


def photos(folder: Path = FOLDER) -> list[Photo]:
    """Every labelled photo of both files, with its hand-drawn boxes."""
    found = []
    for name in LABELS:
        for image in ET.parse(folder / name).getroot().iter("image"):
            drawn = tuple(
                (
                    int(b.get("left", 0)),
                    int(b.get("top", 0)),
                    int(b.get("width", 0)),
                    int(b.get("height", 0)),
                )
                for b in image.iter("box")
            )
            found.append(Photo(folder / image.get("file", ""), drawn))
    return found


def by_iou(drawn: Box, box: Box) -> float:
    """The IoU when it is at least :data:`MIN_IOU`, else 0: no match."""
    overlap = iou(drawn, box)
    return overlap if overlap >= MIN_IOU else 0.0


def by_centre(drawn: Box, box: Box) -> float:
    """1 minus the centres' distance in drawn widths when the box's centre is inside the drawn
    box and the widths agree within 2x, else 0: no match."""
    dx, dy, dw, dh = drawn
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    if not (dx <= cx <= dx + dw and dy <= cy <= dy + dh and 0.5 <= box[2] / dw <= 2):
        return 0.0
    return max(1e-6, 1.0 - math.hypot(cx - dx - dw / 2, cy - dy - dh / 2) / dw)


Rule = Callable[[Box, Box], float]
RULES: Final[dict[str, Rule]] = {"iou": by_iou, "centre": by_centre}


def score(drawn: Sequence[Box], reported: Sequence[Box], rule: Rule) -> tuple[int, int]:
    """(drawn boxes found, reported boxes false): one-to-one, the best-scoring pairs first."""
    pairs = sorted(
        ((rule(d, r), i, j) for i, d in enumerate(drawn) for j, r in enumerate(reported)),
        reverse=True,
    )
    used_drawn: set[int] = set()
    used_reported: set[int] = set()
    for value, i, j in pairs:
        if value > 0 and i not in used_drawn and j not in used_reported:
            used_drawn.add(i)
            used_reported.add(j)
    return len(used_drawn), len(reported) - len(used_reported)


def read(path: Path) -> NDArray[np.uint8]:
    """A photo as the camera would give it (BGR), or :class:`FileNotFoundError`."""
    image = cv2.imread(str(path))
    if image is None:
        raise FileNotFoundError(path)
    return u8(image)


def tracked(image: NDArray[np.uint8], frames: int = FRAMES) -> list[Observation]:
    """The tracker on ``frames`` frames of the still photo, at :data:`FPS`."""
    tracker = Tracker()
    return [tracker.process(image, i / FPS) for i in range(frames)]


def totals(per_photo: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """Recall and false boxes per photo over every photo, under each rule, for one column."""
    drawn = sum(p["drawn"] for p in per_photo)
    out: dict[str, Any] = {}
    for rule in RULES:
        found = sum(p[key][rule]["found"] for p in per_photo)
        false = sum(p[key][rule]["false"] for p in per_photo)
        out[rule] = {
            "found": round(found, 2),
            "recall": round(found / drawn, 4),
            "false": round(false, 2),
            "false_per_photo": round(false / len(per_photo), 3),
        }
    return out


COLUMNS: Final = (
    "original",
    "trackerd first frame",
    "trackerd after recount",
    "trackerd every frame",
)


def measure(photo: Photo, original: Original) -> dict[str, Any]:
    image = read(photo.path)
    theirs = original.faces(image)
    ours = [o.faces for o in tracked(image)]

    def scored(reported: Sequence[Box]) -> dict[str, dict[str, int]]:
        return {
            name: dict(zip(("found", "false"), score(photo.drawn, reported, rule), strict=True))
            for name, rule in RULES.items()
        }

    every = [scored(faces) for faces in ours]
    mean = {
        name: {k: sum(s[name][k] for s in every) / len(every) for k in ("found", "false")}
        for name in RULES
    }
    return {
        "photo": photo.path.name,
        "drawn": len(photo.drawn),
        "original": scored(theirs),
        "trackerd first frame": scored(ours[0]),
        "trackerd after recount": scored(ours[-1]),
        "trackerd every frame": mean,
        "original_boxes": [list(b) for b in theirs],
        "trackerd_boxes_after_recount": [list(map(int, b)) for b in ours[-1]],
    }


def run(quick: bool = False, folder: Path = FOLDER) -> dict[str, Any]:
    """Every photo, quick or not: the whole suite takes a few seconds."""
    original = Original()
    per_photo = [measure(photo, original) for photo in photos(folder)]
    summary = {column: totals(per_photo, column) for column in COLUMNS}
    drawn = sum(p["drawn"] for p in per_photo)
    print(
        f"{len(per_photo)} photos, {drawn} hand-drawn faces; trackerd: {FRAMES} frames, {FPS:g} fps"
    )
    heads = ("recall IoU>=0.5", "false/photo", "recall centre", "false/photo")
    print(f"{'':24}" + "".join(f" {h:>15}" for h in heads))
    for column, rules in summary.items():
        cells = "".join(
            f" {rules[r]['recall'] * 100:>14.1f}% {rules[r]['false_per_photo']:>15.2f}"
            for r in RULES
        )
        print(f"{column:24}{cells}")
    return {
        "photos": len(per_photo),
        "drawn": drawn,
        "frames": FRAMES,
        "fps": FPS,
        "min_iou": MIN_IOU,
        "summary": summary,
        "per_photo": per_photo,
    }


if __name__ == "__main__":
    from benchmarks.__main__ import main

    raise SystemExit(main(["faces", *sys.argv[1:]]))
