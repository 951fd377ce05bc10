"""The annotated ZJU eyeblink clips (``../shared/data/zju-dev``): reading them, and scoring eyes.

Used by ``tests/test_eyes.py`` (a subset, with assertions) and by ``python -m benchmarks tracker``
(every clip, with timings), so that both measure the same way. The clips may not be
redistributed: they are read in place and never copied into the repository.

What is measured, on the same frames for trackerd and for the original's approach:

- **open-eye frames**: both eyes annotated visible and not closed, and no blink within
  :data:`BLINK_GUARD_FRAMES` frames (the eyelids move before and after a labelled blink);
- **per-eye recall** on those frames: an annotated eye counts as found when a reported eye box
  contains its centre (the midpoint of its corners) and is no wider than the distance between
  the eyes (a box over both eyes finds neither); each box finds at most one eye;
- **false boxes per frame**: reported eye boxes that find no eye (eyebrows, nostrils, mouths, a
  face in the background), over the same frames;
- **closed**: on frames with both eyes annotated closed, how often ``eyes_closed`` is reported;
  on open-eye frames, how often it is (falsely). The original has no such output; its nearest
  is "a face and no eye found", which is what it showed a client for closed eyes;
- **blinks**: a labelled blink (its frames share a blink id) is found when a counted blink
  (``blinks`` going up) falls within it, give or take :data:`BLINK_SLACK_FRAMES`; a count that
  finds no labelled blink is a false count, reported as a share of all counts;
- **eye-centre error** ``e``: for each eye, the distance from the reported centre to the
  corners' midpoint over the distance between the two midpoints; a frame counts at the worse
  eye (Timm & Barth's measure), and a frame with no centre for an open eye counts as a miss.
  The original reports no centres; its eye boxes' centres stand in for them.
"""

from __future__ import annotations

import itertools
import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Self

import numpy as np
from numpy.typing import NDArray

from benchmarks.original import Analysis, Original
from trackerd.sources import open_source
from trackerd.vision.observation import Box
from trackerd.vision.tracker import Tracker

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT.parent / "shared" / "data" / "zju-dev"
"""Where the clips are: ``../shared/data/zju-dev`` beside the repository."""

BLINK_GUARD_FRAMES = 6
"""A frame is an open-eye frame only with no blink labelled within this many frames of it."""

BLINK_SLACK_FRAMES = 2
"""A count this many frames before or after a labelled blink still finds it: the lids move
before and after the frames labelled as the blink."""

Point = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Label:
    """One frame's annotation (see ../shared/data/README.md for the format)."""

    blink: int
    """The blink's id, or -1."""
    closed: tuple[bool, bool]
    """Each eye (image left, image right) fully closed."""
    visible: tuple[bool, bool]
    face: Box
    corners: tuple[tuple[Point, Point], tuple[Point, Point]]
    """Each eye's two corners, image left eye first."""

    @property
    def centres(self) -> tuple[Point, Point]:
        (a, b), (c, d) = self.corners
        return ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2), ((c[0] + d[0]) / 2, (c[1] + d[1]) / 2)

    @property
    def eye_distance(self) -> float:
        left, right = self.centres
        return math.dist(left, right)


@dataclass(frozen=True)
class Clip:
    name: str
    images: tuple[NDArray[np.uint8], ...]
    times: tuple[float, ...]
    labels: tuple[Label, ...]
    glasses: bool

    def open_frames(self) -> list[int]:
        """Frames with both eyes open and visible and no blink within the guard."""
        blinking = [i for i, lab in enumerate(self.labels) if lab.blink >= 0]
        return [
            i
            for i, lab in enumerate(self.labels)
            if all(lab.visible)
            and not any(lab.closed)
            and not any(abs(i - b) <= BLINK_GUARD_FRAMES for b in blinking)
        ]

    def head(self, frames: int) -> Clip:
        """The clip's first ``frames`` frames (the quick benchmark's short run)."""
        return replace(
            self,
            images=self.images[:frames],
            times=self.times[:frames],
            labels=self.labels[:frames],
        )

    def closed_frames(self) -> list[int]:
        """Frames with both eyes annotated closed (during a blink)."""
        return [i for i, lab in enumerate(self.labels) if all(lab.closed) and all(lab.visible)]

    def blinks(self) -> list[tuple[int, int]]:
        """Each labelled blink's first and last frame."""
        spans: dict[int, tuple[int, int]] = {}
        for i, lab in enumerate(self.labels):
            if lab.blink >= 0:
                spans[lab.blink] = (spans.get(lab.blink, (i, i))[0], i)
        return list(spans.values())


def names(folder: Path = FOLDER) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.tag"))


def parse_tag(text: str) -> tuple[list[Label], bool]:
    """The labels after ``#start``, and whether the header says the subject wears glasses."""
    labels: list[Label] = []
    glasses = False
    started = False
    for line in text.splitlines():
        if line.startswith("#glasses:"):
            glasses = line.split(":", 1)[1].strip().upper() == "YES"
        if line.strip() == "#start":
            started = True
            continue
        if not started or not line.strip():
            continue
        if line.startswith("#end"):
            break
        f = line.strip().split(":")
        v = [float(x) for x in f[7:19]]
        labels.append(
            Label(
                blink=int(f[1]),
                closed=(f[3] == "C", f[5] == "C"),
                visible=(f[4] != "N", f[6] != "N"),
                face=(int(v[0]), int(v[1]), int(v[2]), int(v[3])),
                corners=(((v[4], v[5]), (v[6], v[7])), ((v[8], v[9]), (v[10], v[11]))),
            )
        )
    return labels, glasses


FPS = 30
"""The clips' frame rate: a video chunk's index over it is its time."""


def video_chunk_sizes(path: Path) -> list[int]:
    """The sizes of an AVI's video chunks, in order, from its ``idx1`` index.

    The clips are Indeo 5. Their capture left two kinds of chunk that are not a picture: empty
    ones (a frame the capture dropped: time passes, no frame) and 2-byte ones ("the same picture
    again"). The annotation has a line per non-empty chunk (the ``.txt`` lists exactly those).
    FFmpeg's decoder returns no picture for a 2-byte chunk, so OpenCV yields fewer frames than
    there are lines (79 for 134 in ``000020F_FNN``): paired in order, the labels drift up to
    dozens of frames away from their pictures, and blinks land on open eyes.
    """
    data = path.read_bytes()
    at = data.rfind(b"idx1")
    if at < 0:
        raise ValueError(f"{path}: no idx1 index")
    (length,) = struct.unpack_from("<I", data, at + 4)
    sizes = []
    for entry in range(at + 8, at + 8 + length - 15, 16):
        chunk, _flags, _offset, size = struct.unpack_from("<4sIII", data, entry)
        if chunk[2:] in (b"dc", b"db"):
            sizes.append(size)
    return sizes


def load(name: str, folder: Path = FOLDER) -> Clip:
    """The clip with one picture per annotation line: the picture shown at that line's chunk.

    Lines go with the *last* non-empty chunks: where a clip has fewer lines than non-empty
    chunks (``000016F_FNN``: 125 for 137), its first chunks were not annotated. Paired from the
    start, those clips' blinks land up to 12 frames early, on open eyes; paired from the end,
    the eyes on every clip's lines labelled closed are seen closed (checked on strips of eye
    crops around each blink, and by ``tests/test_eyes.py``). A line whose chunk is a 2-byte
    repeat gets the picture decoded before it, as any player shows it; times are the chunks'.
    """
    labels, glasses = parse_tag((folder / f"{name}.tag").read_text())
    path = folder / f"{name}.avi"
    chunks = [i for i, size in enumerate(video_chunk_sizes(path)) if size > 0]
    annotated = chunks[max(0, len(chunks) - len(labels)) :]
    labels = labels[: len(annotated)]
    with open_source(str(path)) as source:
        decoded = {round(f.t * FPS): f.image for f in source}
    images: list[NDArray[np.uint8]] = []
    shown: NDArray[np.uint8] | None = None
    wanted = set(annotated)
    for chunk in range(annotated[-1] + 1):
        shown = decoded.get(chunk, shown)
        if chunk in wanted:
            if shown is None:
                raise ValueError(f"{path}: chunk {chunk} has no picture at or before it")
            images.append(shown)
    return Clip(
        name=name,
        images=tuple(images),
        times=tuple(chunk / FPS for chunk in annotated),
        labels=tuple(labels),
        glasses=glasses,
    )


# --- scoring ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Result:
    """What one approach reported for one frame."""

    eyes: tuple[Box, ...]
    centres: tuple[Point | None, Point | None] | None
    """Eye centres, image left first, or None when there is no face."""
    closed: bool
    blinks: int = 0
    """Blinks counted so far in the clip (the original counts none)."""


class Sums:
    """Counts over frames or clips, added field by field (a subclass is a dataclass)."""

    def add(self, other: Self) -> None:
        for name in self.__dataclass_fields__:  # type: ignore[attr-defined]
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Blinks(Sums):
    """Counted blinks against labelled ones (see the module); sums, with rates as properties."""

    labelled: int = 0
    found: int = 0
    counted: int = 0
    false: int = 0

    @property
    def found_rate(self) -> float:
        return self.found / max(1, self.labelled)

    @property
    def false_rate(self) -> float:
        return self.false / max(1, self.counted)

    def summary(self) -> dict[str, float]:
        return {
            "blinks_labelled": self.labelled,
            "blinks_counted": self.counted,
            "blinks_found": self.found_rate,
            "false_counts": self.false_rate,
        }


def score_blinks(clip: Clip, results: Sequence[Result]) -> Blinks:
    """Counted blinks (the frames where ``blinks`` goes up) against the clip's labelled ones."""
    counted_at = [
        i for i, (a, b) in enumerate(itertools.pairwise([0, *[r.blinks for r in results]])) if b > a
    ]
    spans = clip.blinks()
    slack = BLINK_SLACK_FRAMES
    finds = [
        {k for k, (a, b) in enumerate(spans) if a - slack <= i <= b + slack} for i in counted_at
    ]
    return Blinks(
        labelled=len(spans),
        found=len(set[int]().union(*finds)),
        counted=len(counted_at),
        false=sum(not f for f in finds),
    )


@dataclass
class Score(Sums):
    """Sums over frames; the rates are properties."""

    open_frames: int = 0
    eyes_found: int = 0
    both_found: int = 0
    false_boxes: int = 0
    closed_frames: int = 0
    closed_said_closed: int = 0
    open_said_closed: int = 0
    e_within_005: int = 0
    e_within_010: int = 0
    e_worse: list[float] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return self.eyes_found / max(1, 2 * self.open_frames)

    @property
    def both_rate(self) -> float:
        return self.both_found / max(1, self.open_frames)

    @property
    def false_per_frame(self) -> float:
        return self.false_boxes / max(1, self.open_frames)

    @property
    def closed_recall(self) -> float:
        return self.closed_said_closed / max(1, self.closed_frames)

    @property
    def open_said_closed_rate(self) -> float:
        return self.open_said_closed / max(1, self.open_frames)

    @property
    def e005(self) -> float:
        return self.e_within_005 / max(1, self.open_frames)

    @property
    def e010(self) -> float:
        return self.e_within_010 / max(1, self.open_frames)

    def summary(self) -> dict[str, float]:
        return {
            "open_frames": self.open_frames,
            "closed_frames": self.closed_frames,
            "eye_recall": self.recall,
            "both_eyes": self.both_rate,
            "false_boxes_per_frame": self.false_per_frame,
            "closed_on_closed": self.closed_recall,
            "closed_on_open": self.open_said_closed_rate,
            "e_le_005": self.e005,
            "e_le_010": self.e010,
            "e_median": float(np.median(self.e_worse)) if self.e_worse else math.nan,
        }


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``[x, y, w, h]`` boxes (0 when either is empty)."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    union = a[2] * a[3] + b[2] * b[3] - ix * iy
    return ix * iy / union if union > 0 else 0.0


def matched(label: Label, eyes: Sequence[Box]) -> tuple[list[bool], int]:
    """Which of the two eyes a box finds, and how many boxes find none (see the module)."""
    found = [False, False]
    false = 0
    limit = label.eye_distance
    for x, y, w, h in eyes:
        hits = [
            i
            for i, (cx, cy) in enumerate(label.centres)
            if x <= cx <= x + w and y <= cy <= y + h and w <= limit
        ]
        if not hits:
            false += 1
            continue
        # The nearer eye, if a box holds both centres.
        i = min(hits, key=lambda k: math.dist(label.centres[k], (x + w / 2, y + h / 2)))
        if found[i]:
            false += 1  # a second box on an eye already found is a duplicate, not a find
        found[i] = True
    return found, false


def score_frame(label: Label, result: Result, is_open: bool, is_closed: bool) -> Score:
    s = Score()
    if is_closed:
        s.closed_frames = 1
        s.closed_said_closed = int(result.closed)
    if not is_open:
        return s
    s.open_frames = 1
    found, s.false_boxes = matched(label, result.eyes)
    s.eyes_found = sum(found)
    s.both_found = int(all(found))
    s.open_said_closed = int(result.closed)
    d = label.eye_distance
    centres = result.centres or (None, None)
    if d > 0 and all(c is not None for c in centres):
        worse = max(
            math.dist(c, truth) / d
            for c, truth in zip(centres, label.centres, strict=True)
            if c is not None
        )
        s.e_worse = [worse]
        s.e_within_005 = int(worse <= 0.05)
        s.e_within_010 = int(worse <= 0.10)
    return s


def score_clip(clip: Clip, results: Sequence[Result | None]) -> Score:
    """Score the frames that have a result (``None``: not evaluated, e.g. subsampled)."""
    open_ = set(clip.open_frames())
    closed = set(clip.closed_frames())
    total = Score()
    for i, (label, result) in enumerate(zip(clip.labels, results, strict=True)):
        if result is not None:
            total.add(score_frame(label, result, i in open_, i in closed))
    return total


def box_centres(eyes: Iterable[Box], face: Box | None) -> tuple[Point | None, Point | None]:
    """Eye boxes' centres by side of the face (the original's stand-in for eye centres)."""
    out: list[Point | None] = [None, None]
    if face is None:
        return (None, None)
    mid = face[0] + face[2] / 2
    for x, y, w, h in eyes:
        c = (x + w / 2, y + h / 2)
        side = 0 if c[0] < mid else 1
        if out[side] is None:
            out[side] = c
    return (out[0], out[1])


def run_trackerd(clip: Clip, tracker: Tracker) -> list[Result | None]:
    """trackerd over every frame of ``clip``, from a fresh track."""
    tracker.reset()
    out: list[Result | None] = []
    for image, t in zip(clip.images, clip.times, strict=True):
        o = tracker.process(image, t)
        out.append(Result(o.eyes, o.pupils, o.eyes_closed, o.blinks))
    return out


def original_result(analysis: Analysis) -> Result:
    """What the original found, as a :class:`Result`: the eye boxes of every face it searched
    (boxes in a face in the background count as false boxes), and the centres and "closed" of
    the face that decided its message (the last one; see benchmarks/original.py). Its
    closed-eye stand-in is a face with no eye found."""
    if not analysis.faces:
        return Result((), None, False)
    eyes = tuple(box for boxes in analysis.eyes for box in boxes)
    last = analysis.eyes[-1]
    return Result(eyes, box_centres(last, analysis.faces[-1]), not last)


def run_original(
    clip: Clip, every: int = 1, original: Original | None = None
) -> list[Result | None]:
    """The original on every ``every``-th frame (``None`` for the frames it skipped)."""
    original = original or Original()
    return [
        original_result(original.analyse(image)) if i % every == 0 else None
        for i, image in enumerate(clip.images)
    ]
