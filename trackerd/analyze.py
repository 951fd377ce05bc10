"""``trackerd analyze PATH...``: run the tracker over files and print one JSON object per frame.

Each path is a video file, an image, or a folder of images (taken as one frame sequence, in name
order). Every path gets a fresh tracker: unrelated clips share no track and no smoothing.
stdout carries only results (JSON lines); progress and a summary go to stderr. A path that does
not exist or cannot be decoded stops the run with a message and exit status 2, and nothing for
that path is printed to stdout, so no partial output looks like a result.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

from trackerd.cascades import CascadeError
from trackerd.observation import Observation
from trackerd.sources import Frame, SourceError, open_source
from trackerd.tracker import Tracker, TrackerSettings

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
    }


PROGRESS_EVERY_FRAMES = 250


def analyze_path(
    path: str, tracker: Tracker, progress: TextIO | None = None
) -> tuple[list[dict[str, object]], Summary]:
    """Every frame of ``path`` as JSON-ready records. Raises SourceError before any result."""
    tracker.reset()
    summary = Summary()
    rows: list[dict[str, object]] = []
    with open_source(path) as source:
        for frame in source:
            start = time.perf_counter()
            observation = tracker.process(frame.image, frame.t)
            ms = (time.perf_counter() - start) * 1000.0
            summary.add(observation, ms)
            rows.append(record(path, frame, observation, ms))
            if progress is not None and summary.frames % PROGRESS_EVERY_FRAMES == 0:
                print(f"{path}: {summary.frames} frames…", file=progress, flush=True)
    return rows, summary


def main(argv: Sequence[str], stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    parser = argparse.ArgumentParser(
        prog="trackerd analyze",
        description="Analyse videos, images or image folders offline: one JSON object per frame "
        "on stdout (source, frame, t, face_detected, eye_count, looking_away, confidence, face, "
        "eyes, ms); progress and a summary on stderr.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="video file, image, or folder")
    args = parser.parse_args(list(argv))
    try:
        tracker = Tracker(TrackerSettings())
    except CascadeError as exc:
        print(f"trackerd analyze: {exc}", file=err)
        return 1
    for path in args.paths:
        try:
            # Each path is analysed in full before any of it is printed, so a file that fails
            # half way leaves nothing on stdout that could be mistaken for its result.
            rows, summary = analyze_path(path, tracker, progress=err)
        except SourceError as exc:
            print(f"trackerd analyze: {exc}", file=err)
            return EXIT_BAD_INPUT
        for row in rows:
            out.write(json.dumps(row, separators=(",", ":")) + "\n")
        out.flush()
        print(summary.line(path), file=err)
    return 0
