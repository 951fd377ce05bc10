"""``trackerd analyze PATH...``: run the tracker over files and print one JSON object per frame.

Each path is a video file, an image, or a folder of images. Every path gets a fresh tracker:
unrelated clips share no track and no smoothing.

A folder is taken as separate photos: each of its images (in name order) is analysed from a fresh
tracker, exactly as if it had been given on its own (its rows name the photo as ``source``, with
``frame`` 0 and ``t`` 0). Run as one sequence, a face in one photo would carry its confidence
into the next, unrelated one, and the tracker would look for it where it was in the photo before.
With ``--sequence`` every folder is instead one frame sequence (frames exported from a video,
``frame_0001.png``...), in name order at 30 fps, as the server plays a folder; its rows name the
folder. File names cannot tell the two apart (a camera names its photos ``IMG_0001.JPG``...), so
the choice is the caller's, and the default is the one that cannot mix unrelated pictures.
A photo has no duration: its ``confidence`` is its attention score, and ``looking_away`` (which
needs a low confidence for a while) stays false on it.

stdout carries only results (JSON lines); progress and a summary go to stderr. Every path is
checked before the first is analysed: one that does not exist, cannot be read, or is a folder
with no images stops the run at once, naming it, with exit status 2. A path that cannot be
decoded stops the run when its turn comes, with the same status, and nothing for that path is
printed to stdout, so no partial output looks like a result.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from trackerd.options import Parser
from trackerd.sources import Frame, SourceError, check_source, folder_images, open_source
from trackerd.vision.cascades import CascadeError
from trackerd.vision.observation import Observation, eye_fields
from trackerd.vision.tracker import Tracker, TrackerSettings

EXIT_BAD_INPUT = 2


@dataclass
class Summary:
    frames: int = 0
    faces: int = 0
    away: int = 0
    ms: list[float] = field(default_factory=list)

    def add(self, observation: Observation, ms: float) -> None:
        self.frames += 1
        self.faces += observation.face_detected
        self.away += observation.looking_away
        self.ms.append(ms)

    def line(self, name: str) -> str:
        if not self.frames:
            return f"{name}: no frames"
        ordered = sorted(self.ms)
        p50 = ordered[len(ordered) // 2]
        return (
            f"{name}: {self.frames} frames, face in {100 * self.faces / self.frames:.1f} %, "
            f"looking away in {100 * self.away / self.frames:.1f} %, "
            f"tracker ms p50 {p50:.2f} mean {sum(ordered) / len(ordered):.2f}"
        )


def record(source: str, frame: Frame, observation: Observation, ms: float) -> dict[str, object]:
    """The documented per-frame JSON object."""
    return {
        "source": source,
        "frame": frame.index,
        "t": round(frame.t, 6),
        "face_detected": observation.face_detected,
        "eye_count": observation.eye_count,
        "looking_away": observation.looking_away,
        "confidence": round(observation.confidence, 4),
        "face": list(observation.face) if observation.face else None,
        "eyes": [list(eye) for eye in observation.eyes],
        "ms": round(ms, 3),
        **eye_fields(observation),
        "face_count": observation.face_count,
    }


PROGRESS_EVERY_FRAMES = 250


def analyze_path(
    path: str, tracker: Tracker, progress: TextIO | None = None, *, sequence: bool = False
) -> tuple[list[dict[str, object]], Summary]:
    """Every frame of ``path`` as JSON-ready records. Raises SourceError before any result.
    A folder is separate photos, or with ``sequence`` one frame sequence (see the module)."""
    summary = Summary()
    rows: list[dict[str, object]] = []
    for spec in _parts(path, sequence=sequence):
        tracker.reset()  # nothing carries over from the clip or the photo before
        with open_source(spec) as source:
            for frame in source:
                start = time.perf_counter()
                observation = tracker.process(frame.image, frame.t)
                ms = (time.perf_counter() - start) * 1000.0
                summary.add(observation, ms)
                rows.append(record(spec, frame, observation, ms))
                if progress is not None and summary.frames % PROGRESS_EVERY_FRAMES == 0:
                    print(f"{path}: {summary.frames} frames…", file=progress, flush=True)
    return rows, summary


def _parts(path: str, *, sequence: bool) -> list[str]:
    """What is analysed, each from a fresh tracker: a folder's photos one by one, else the path."""
    folder = Path(path)
    if sequence or not folder.is_dir():
        return [path]
    return [str(image) for image in folder_images(folder)]


def main(argv: Sequence[str], stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    parser = Parser(
        prog="trackerd analyze",
        description="Analyse videos, images or image folders offline: one JSON object per frame "
        "on stdout (source, frame, t, face_detected, eye_count, looking_away, confidence, face, "
        "eyes, ms, pupils, eyes_closed, blinks, gaze, face_count); progress and a summary on "
        "stderr.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="video file, image, or folder")
    parser.add_argument(
        "--sequence",
        action="store_true",
        help="take each folder as one frame sequence (name order, 30 fps) rather than as "
        "separate photos analysed one by one",
    )
    args = parser.parse_args(list(argv))
    try:
        # All of them first: a typo in the last of ten long videos is found now, not after
        # the first nine.
        for path in args.paths:
            check_source(path)
    except SourceError as exc:
        print(f"trackerd analyze: {exc}", file=err)
        return EXIT_BAD_INPUT
    try:
        tracker = Tracker(TrackerSettings())
    except CascadeError as exc:
        print(f"trackerd analyze: {exc}", file=err)
        return 1
    for path in args.paths:
        try:
            # Each path is analysed in full before any of it is printed, so a file that fails
            # half way leaves nothing on stdout that could be mistaken for its result.
            rows, summary = analyze_path(path, tracker, progress=err, sequence=args.sequence)
        except SourceError as exc:
            print(f"trackerd analyze: {exc}", file=err)
            return EXIT_BAD_INPUT
        for row in rows:
            out.write(json.dumps(row, separators=(",", ":")) + "\n")
        out.flush()
        print(summary.line(path), file=err)
    return 0
