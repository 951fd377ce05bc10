"""What the tracker says about one frame: a plain, frozen value shared by every layer above it."""

from __future__ import annotations

from dataclasses import dataclass

Box = tuple[int, int, int, int]
"""An axis-aligned box ``(x, y, w, h)`` in the analysed frame's pixel coordinates."""


@dataclass(frozen=True, slots=True)
class Observation:
    """The result of tracking one frame.

    ``face_detected``/``eye_count``/``looking_away``/``confidence`` are the documented protocol
    fields. ``looking_away`` and ``confidence`` are *smoothed over time* (see
    :mod:`trackerd.tracker`); ``attention`` is this frame's raw score before smoothing.
    """

    t: float
    """The frame's timestamp in seconds (media time for files, monotonic time for live sources)."""
    face_detected: bool
    eye_count: int
    looking_away: bool
    confidence: float
    face_count: int
    """Faces found by the most recent full-frame search (at least 1 while a face is tracked)."""
    face: Box | None
    """The tracked (main) face, or ``None``."""
    eyes: tuple[Box, ...]
    """Eyes found inside the tracked face, at most two."""
    faces: tuple[Box, ...]
    """Every face found by the full-frame search made on *this* frame; empty when the frame was
    tracked inside a region of interest instead."""
    attention: float
    """This frame's unsmoothed attention score in [0, 1]."""
