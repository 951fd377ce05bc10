"""What the tracker says about one frame (a plain, frozen value shared by every layer above it),
and what anything that analyses frames must offer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

Box = tuple[int, int, int, int]
"""An axis-aligned box ``(x, y, w, h)`` in the analysed frame's pixel coordinates."""
Point = tuple[float, float]
"""``(x, y)`` in the analysed frame's pixel coordinates."""


@dataclass(frozen=True, slots=True)
class Observation:
    """The result of tracking one frame.

    ``face_detected``/``eye_count``/``looking_away``/``confidence`` are the documented protocol
    fields. ``looking_away`` and ``confidence`` are *smoothed over time* (see
    :mod:`trackerd.vision.tracker`); ``attention`` is this frame's raw score before smoothing.
    """

    t: float
    """The frame's timestamp in seconds (media time for files, monotonic time for live sources)."""
    face_detected: bool
    eye_count: int
    looking_away: bool
    confidence: float
    face_count: int
    """Faces found by the most recent full-frame search (at least 1 while a face is tracked, 0
    without one): ``len(faces)``."""
    face: Box | None
    """The tracked (main) face, or ``None``."""
    eyes: tuple[Box, ...]
    """Eyes found inside the tracked face, at most two."""
    faces: tuple[Box, ...]
    """Every face counted in ``face_count``: ``face`` first (its box on this frame), then the
    other faces as the most recent full-frame search found them (refreshed every
    ``recount_interval_s`` while a face is tracked, so they may lag up to that); empty without a
    face."""
    attention: float
    """This frame's unsmoothed attention score in [0, 1]."""
    pupils: tuple[Point | None, Point | None] | None = None
    """Eye centres (means of gradients), image left eye first, each ``None`` when that eye is
    not found; ``None`` when there is no face."""
    eyes_closed: bool = False
    """A face is found and both its eyes are judged closed in this frame."""
    blinks: int = 0
    """Blinks counted since the tracker started (or was reset)."""
    gaze: tuple[float, float] | None = None
    """The pupils' offset inside their eye boxes, ``(gx, gy)`` in [-1, 1] (see docs/protocol.md), or
    ``None`` without a pupil."""
    head: tuple[int, int] | None = None
    """The head's coarse ``(yaw, pitch)`` in whole degrees (:mod:`trackerd.vision.head`): yaw > 0
    toward the image's right, pitch > 0 chin up; ``None`` without a face or evidence."""
    head_turned: bool = False
    """The head has been turned past ``max_head_yaw_deg`` or pitched down past
    ``max_head_pitch_deg`` for ``head_turn_s``: this counts as looking away."""


def eye_fields(observation: Observation) -> dict[str, object]:
    """``pupils``, ``eyes_closed``, ``blinks``, ``gaze`` and ``head`` as JSON-ready values: the
    same in ``eye_data`` and in ``trackerd analyze``. Pupils to 0.1 px, gaze to 0.001, the head
    to whole degrees."""
    pupils = observation.pupils
    return {
        "pupils": None
        if pupils is None
        else [None if p is None else [round(p[0], 1), round(p[1], 1)] for p in pupils],
        "eyes_closed": observation.eyes_closed,
        "blinks": observation.blinks,
        "gaze": None
        if observation.gaze is None
        else [round(observation.gaze[0], 3), round(observation.gaze[1], 3)],
        "head": None
        if observation.head is None
        else {"yaw": observation.head[0], "pitch": observation.head[1]},
    }


class FrameAnalyzer(Protocol):
    """What the capture and push sessions need of a tracker: the
    :class:`~trackerd.vision.tracker.Tracker` is one; tests and the fan-out benchmark inject
    made-up ones. Here, beside what it returns, so that the network side and the app name it
    without importing the capture."""

    def process(self, image: NDArray[np.uint8], t: float) -> Observation: ...

    def reset(self) -> None: ...
