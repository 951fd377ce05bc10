"""One box followed through frames: template matching, confirmed by a cascade every few frames.

Used for the face (:mod:`trackerd.vision.tracker`) and for each eye
(:mod:`trackerd.vision.eyes`). A cascade search, even in a small window, costs many times what
matching the box's look when the cascade last found it costs. So the cascade confirms the box
only every ``confirm_every`` frames, and at once whenever the match weakens (the face turned,
an eye closed). When the cascade misses, the box may *coast* on its template for a while: a
blink hides a face from the face cascade, which leans on the eyes.

The follower's states are data, in the spirit of h11's ``_state.py``: :class:`State`, the
:class:`Event` that happened on a frame, and :data:`TRANSITIONS`. An event the table does not
allow raises :class:`TrackStateError`, which names both.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass
from enum import Enum
from typing import Final

import cv2
import numpy as np
from numpy.typing import NDArray

from trackerd.errors import TrackerdError
from trackerd.vision.geometry import grown, resize
from trackerd.vision.observation import Box


class State(Enum):
    LOST = "lost"
    """No box: never found, or the cascade and the template both missed it."""
    CONFIRMED = "confirmed"
    """A cascade found the box on this frame; its template was taken again."""
    MATCHED = "matched"
    """Followed by its template; the cascade's confirmation was not due."""
    COASTING = "coasting"
    """The cascade was asked and missed; kept because its template still matches."""


class Event(Enum):
    ACQUIRE = "acquire"
    """A search outside the follower found the box (full-frame search, eye band, recount)."""
    MATCH = "match"
    FIND = "find"
    """The cascade found the box near where it was."""
    COAST = "coast"
    MISS = "miss"
    DROP = "drop"
    """The owner let the box go (an eye that drifted to the other half of the face)."""


_FOLLOWING: Final = (State.CONFIRMED, State.MATCHED, State.COASTING)

TRANSITIONS: Final[dict[tuple[State, Event], State]] = {
    (State.LOST, Event.ACQUIRE): State.CONFIRMED,
    (State.LOST, Event.DROP): State.LOST,
    **{(state, Event.ACQUIRE): State.CONFIRMED for state in _FOLLOWING},
    **{(state, Event.MATCH): State.MATCHED for state in _FOLLOWING},
    **{(state, Event.FIND): State.CONFIRMED for state in _FOLLOWING},
    **{(state, Event.COAST): State.COASTING for state in _FOLLOWING},
    **{(state, Event.MISS): State.LOST for state in _FOLLOWING},
    **{(state, Event.DROP): State.LOST for state in _FOLLOWING},
}


class TrackerSettingsError(TrackerdError, ValueError):
    """A tracker or eye setting is out of range; the message names it."""


class TrackStateError(TrackerdError, RuntimeError):
    """An event the follower's transition table does not allow in its state (a bug)."""


@dataclass(frozen=True, slots=True)
class FollowSettings:
    """How one kind of box is followed (the face's and the eyes' values live with their
    settings)."""

    confirm_every: int
    """The cascade confirms the box every this many frames (1: every frame)."""
    template_px: int
    """Matching runs with the box shrunk to this width."""
    margin: float
    """The box is looked for within this fraction of its size on each side."""
    min_ncc: float
    """A match correlating less than this is weak: the cascade is asked at once."""
    search_from_match: bool
    """Match on every frame and search the cascade where the match put the box (eyes); else
    match only when the confirmation is not due, and search where the box was (the face)."""
    coast_s: float = math.inf
    """Coast only while the cascade confirmed the box at most this long ago…"""
    coast_after_s: float = 0.0
    """…for a box followed at least this long…"""
    max_misses: float = math.inf
    """…and missed by the cascade at most this many times running."""


def check_finite(settings: object) -> None:
    """Refuse a settings dataclass whose numbers (or tuples of them) are not all finite."""
    for f in fields(settings):  # type: ignore[arg-type]
        value = getattr(settings, f.name)
        if is_dataclass(value):
            continue  # checked by its own __post_init__
        values = value if isinstance(value, tuple) else (value,)
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            raise TrackerSettingsError(f"{f.name} must be a finite number, got {value!r}")


def refuse_failed(checks: list[tuple[bool, str]]) -> None:
    """Raise with the message of the first check that failed."""
    for ok, message in checks:
        if not ok:
            raise TrackerSettingsError(message)


Search = Callable[[NDArray[np.uint8], Box], Box | None]
"""The cascade near a box: ``(grey, around)`` to the box found, or ``None``."""


class Follower:
    """One box and its template; see the module docstring."""

    def __init__(self, settings: FollowSettings, search: Search) -> None:
        self.settings = settings
        self._search = search
        self.state = State.LOST
        self.box: Box | None = None
        self.since_confirmed = 0
        """Frames since a cascade last found the box (0: on this frame)."""
        self.misses = 0
        self.confirmed_at = -math.inf
        self.started_at = math.inf
        self._template: NDArray[np.uint8] | None = None

    def _to(self, event: Event) -> State:
        try:
            self.state = TRANSITIONS[self.state, event]
        except KeyError:
            message = f"can't {event.value} a box in state {self.state.value}"
            raise TrackStateError(message) from None
        return self.state

    def acquire(self, grey: NDArray[np.uint8], box: Box, t: float, *, fresh: bool) -> State:
        """``box`` was found by a search of the owner's; ``fresh``: a new track starts."""
        if fresh:
            self.started_at = t
        if not (self.state is State.CONFIRMED and self.box == box and self.confirmed_at == t):
            # (Else the cascade confirmed this very box on this frame: the template is taken.)
            self._confirm(grey, box, t)
        return self._to(Event.ACQUIRE)

    def drop(self) -> State:
        self.box = None
        self._template = None
        return self._to(Event.DROP)

    def step(self, grey: NDArray[np.uint8], predicted: Box, t: float) -> State:
        """Follow the box from where it is expected on this frame (``predicted``)."""
        if self.state is State.LOST:
            raise TrackStateError("can't follow a box in state lost: acquire it first")
        s = self.settings
        due = self.since_confirmed + 1 >= s.confirm_every
        match: tuple[Box | None, float] | None = None
        if s.search_from_match or not due:
            match = self._match(grey, predicted)
            if not due and _strong(match[1], s.min_ncc):
                return self._keep(match[0], Event.MATCH)
        around = match[0] if match is not None and match[0] is not None else predicted
        found = self._search(grey, around if s.search_from_match else predicted)
        if found is not None:
            self._confirm(grey, found, t)
            return self._to(Event.FIND)
        self.misses += 1
        if self._may_coast(t):
            match = match or self._match(grey, predicted)
            if _strong(match[1], s.min_ncc):
                return self._keep(match[0], Event.COAST)
        self.box = None
        self._template = None
        return self._to(Event.MISS)

    def _may_coast(self, t: float) -> bool:
        s = self.settings
        return (
            self.misses <= s.max_misses
            and t - self.confirmed_at <= s.coast_s
            and t - self.started_at >= s.coast_after_s
        )

    def _keep(self, box: Box | None, event: Event) -> State:
        self.box = box
        self.since_confirmed += 1
        return self._to(event)

    def _confirm(self, grey: NDArray[np.uint8], box: Box, t: float) -> None:
        self.box = box
        self._template = resize(grown(grey, box, 0.0)[2], self.settings.template_px / box[2])
        self.since_confirmed = 0
        self.misses = 0
        self.confirmed_at = t

    def _match(self, grey: NDArray[np.uint8], predicted: Box) -> tuple[Box | None, float]:
        """The best place for the template near ``predicted`` (same size) and its correlation;
        ``(None, -inf)`` at the frame's edge, where the cascade decides."""
        template = self._template
        if template is None:
            return None, -math.inf
        s = self.settings
        w, h = predicted[2:]
        scale = s.template_px / w
        x0, y0, crop = grown(grey, predicted, s.margin)
        region = resize(crop, scale)
        if region.shape[0] < template.shape[0] or region.shape[1] < template.shape[1]:
            return None, -math.inf
        scores = cv2.matchTemplate(region, template, cv2.TM_CCOEFF_NORMED)
        _, best, _, (bx, by) = cv2.minMaxLoc(scores)
        return (x0 + round(bx / scale), y0 + round(by / scale), w, h), float(best)


def _strong(score: float, min_ncc: float) -> bool:
    # Written as "not below": a NaN correlation (a flat region) has always counted as a match.
    return not score < min_ncc
