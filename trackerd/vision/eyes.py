"""The eye stage: each eye followed in its own small window, its centre, and whether it is closed.

Pure, no I/O; one :class:`EyeStage` per :class:`~trackerd.vision.tracker.Tracker`.

Finding eyes: an eye without a window is searched for in the face's eye band (at most every
``acquire_interval_s``), one eye per half of the face. Once found, each eye is followed by a
:class:`~trackerd.vision.track.Follower`: in a small window around where it was, at the eye
cascade's native scale (a cascade costs much even over a small window), confirmed by the
cascade only every ``confirm_every`` frames, with template matching in between and whenever the
match weakens.
The eyeglasses cascade is tried where the plain one misses.

Closed eyes: a missing cascade hit says little (the cascade finds shut eyes too, and misses open
ones). The evidence is the eye region's own appearance: how poorly the eye's middle correlates
with an *open-eye template* of this person, learned online from the frames where the cascade
confirmed the eye (Grauman et al. 2001: a closed lid correlates poorly with the open eye), over
its own median of the last two seconds (people, light and glasses differ far more than a blink
changes one person's eye), plus how much lighter the darkest part of the eye's middle is than its
own median (the lid covers the iris), averaged over both eyes. A blink shuts both eyes: the less
closed eye must show it too, so that one eye's window drifting onto a brow or a frame is not a
blink. Blinks in a track's first ~0.1 s, before there is a template, are missed.

What each choice gained, and the rejected alternatives: docs/experiments.md.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Final

import cv2
import numpy as np
from numpy.typing import NDArray

import kernels
from trackerd.vision.cascades import Cascade
from trackerd.vision.geometry import Box, boxes, clip, grown, resize, unscale
from trackerd.vision.observation import Point
from trackerd.vision.track import Follower, FollowSettings, State, check_finite, refuse_failed

EYE_WINDOW_PX: Final = 20
"""Native window of haarcascade_eye and haarcascade_eye_tree_eyeglasses."""

OPEN_BOX_PX = 24
"""The eye box is shrunk to this square for the open-eye template; the template is its middle
(rows 6-18, columns 3-21: the eye without brow and cheek), matched within +-3 px."""
OPEN_CORE = (6, 18, 3, 21)
OPEN_SHIFT = 3


@dataclass(frozen=True, slots=True)
class EyeSettings:
    """Every knob of the eye stage, one line each: what it does and why its value (the
    measurements behind them: docs/experiments.md)."""

    # --- Finding eyes in the face's eye band (acquisition) --------------------------------------
    band_face_px: int = 100
    """Face width the band is searched at: eyes of ~20-30 px, the cascade's window."""
    band: tuple[float, float, float, float] = (0.08, 0.18, 0.92, 0.58)
    """Where eyes sit in a frontal face box: (left, top, right, bottom) as fractions of it."""
    band_min_neighbors: int = 3
    """Neighbours in the band: one eye per half of the face filters the extra hits (brows)."""
    band_scale_factor: float = 1.1
    """The original's pyramid step for eyes: the band is searched rarely, so finely."""
    acquire_interval_s: float = 0.1
    """The band search runs at most this often: rare once windows follow the eyes."""
    glasses: bool = True
    """Also try haarcascade_eye_tree_eyeglasses where the plain eye cascade misses."""

    # --- Following each eye in its window ---------------------------------------------------------
    window_eye_px: int = 24
    """Eye box width in the window's shrunk image: the cascade's 20 px window, a little more."""
    window_margin: float = 0.3
    """The window is the eye's box grown by this fraction of its size on each side."""
    size_range: tuple[float, float] = (0.8, 1.3)
    """Sizes searched in the window, as fractions of ``window_eye_px``."""
    window_scale_factor: float = 1.15
    """Step between the sizes searched: 4 sizes, as fast as 1.2, confirming the eye more often."""
    window_min_neighbors: int = 2
    """Few neighbours: the window already says where the eye is."""
    confirm_every: int = 4
    """The cascade confirms each eye every this many frames: far cheaper, as many eyes found."""
    track_px: int = 16
    """Template matching between confirmations runs with the eye box shrunk to this width."""
    track_margin: float = 0.35
    """The match is looked for within this fraction of the eye box on each side."""
    track_min_ncc: float = 0.7
    """A template match below this correlation asks the cascade at once."""
    max_misses: int = 6
    """An eye the cascade failed to confirm this many times running is dropped."""

    # --- Eye centres and closed eyes ------------------------------------------------------------
    centre_crop: tuple[float, float, float, float] = (0.1, 0.2, 0.9, 0.9)
    """The part of an eye box searched for the centre (the box has brow above the eye)."""
    centre_px: int = 24
    """Width at which the centre is searched: the kernel's cost grows with the square of it."""
    centre_threshold_sd: float = 0.3
    """Timm & Barth's gradient threshold (mean + 0.3 standard deviations)."""
    closed_score: float = 0.08375
    """Closed above this mean mismatch (see module): ``benchmarks.crossval``'s rule on all 40."""
    closed_both: float = 0.5
    """The less closed eye must pass this fraction of it too (0: off): a blink shuts both eyes."""
    closed_dark_weight: float = 0.01
    """Added to the mismatch per grey level the eye's darkest tenth is above its median: no iris."""
    closed_ncc_history: int = 60
    """Frames (two seconds at 30 fps) over which the template mismatch's median is taken."""
    closed_template_alpha: float = 0.2
    """Weight of each newly confirmed open eye in the template's running mean."""
    closed_min_updates: int = 1
    """Confirmed frames the open-eye template needs before use: one, to catch early blinks."""
    closed_min_history: int = 3
    """Mismatches needed before their median is trusted (the first frames of a track)."""

    # --- Gaze -------------------------------------------------------------------------------------
    gaze_tau_s: float = 0.3
    """Time constant of the gaze's smoothing on a still eye (0: the raw offsets). Raw, a steady
    face's gaze changes by ~0.1 a frame (a pupil found a pixel off); smoothed, by ~0.013."""
    gaze_jump: float = 0.35
    """A gaze change this large is followed at once, a smaller one more slowly the smaller it is
    (``kernels.adaptive_ema_step``). Both chosen on zju-dev subjects 11-15: benchmarks/gaze.py."""

    def __post_init__(self) -> None:
        check_finite(self)
        checks = [
            (self.band_face_px >= 3 * EYE_WINDOW_PX, "band_face_px must be >= 60"),
            (
                0 <= self.band[0] < self.band[2] <= 1 and 0 <= self.band[1] < self.band[3] <= 1,
                "band must be (left, top, right, bottom) fractions with left<right, top<bottom",
            ),
            (self.band_min_neighbors >= 0, "band_min_neighbors must be >= 0"),
            (self.band_scale_factor > 1.0, "band_scale_factor must be > 1"),
            (self.acquire_interval_s >= 0, "acquire_interval_s must be >= 0"),
            (self.window_eye_px >= EYE_WINDOW_PX, "window_eye_px must be >= 20 (the window)"),
            (0 <= self.window_margin <= 2, "window_margin must be in [0, 2]"),
            (
                0 < self.size_range[0] <= 1 <= self.size_range[1],
                "size_range must be (low <= 1 <= high)",
            ),
            (self.window_scale_factor > 1.0, "window_scale_factor must be > 1"),
            (self.window_min_neighbors >= 0, "window_min_neighbors must be >= 0"),
            (self.confirm_every >= 1, "confirm_every must be >= 1"),
            (self.track_px >= 4, "track_px must be >= 4"),
            (0 <= self.track_margin <= 2, "track_margin must be in [0, 2]"),
            (-1 <= self.track_min_ncc <= 1, "track_min_ncc must be in [-1, 1]"),
            (self.max_misses >= 0, "max_misses must be >= 0"),
            (
                0 <= self.centre_crop[0] < self.centre_crop[2] <= 1
                and 0 <= self.centre_crop[1] < self.centre_crop[3] <= 1,
                "centre_crop must be (left, top, right, bottom) fractions",
            ),
            (self.centre_px >= 4, "centre_px must be >= 4"),
            (self.centre_threshold_sd >= 0, "centre_threshold_sd must be >= 0"),
            (
                self.closed_min_history <= self.closed_ncc_history,
                "need closed_min_history <= closed_ncc_history",
            ),
            (0 < self.closed_template_alpha <= 1, "closed_template_alpha must be in (0, 1]"),
            (self.closed_min_history >= 1, "closed_min_history must be >= 1"),
            (self.closed_min_updates >= 1, "closed_min_updates must be >= 1"),
            (0 <= self.closed_both <= 1, "closed_both must be in [0, 1]"),
            (self.closed_dark_weight >= 0, "closed_dark_weight must be >= 0"),
        ]
        refuse_failed(checks)
        refuse_failed(
            [
                (self.gaze_tau_s >= 0, "gaze_tau_s must be >= 0"),
                (self.gaze_jump > 0, "gaze_jump must be > 0"),
            ]
        )

    def follow(self) -> FollowSettings:
        """How each eye's window is followed between cascade confirmations."""
        return FollowSettings(
            confirm_every=self.confirm_every,
            template_px=self.track_px,
            margin=self.track_margin,
            min_ncc=self.track_min_ncc,
            search_from_match=True,
            max_misses=self.max_misses,
        )


@dataclass
class _Side:
    """One eye: its follower (where it is), and what its open look is."""

    follower: Follower
    last_box: Box | None = None
    """Where the eye was last seen (moved with the face): where closed eyes are looked for."""
    open_template: NDArray[np.float32] | None = None
    """Running mean of the eye's middle on frames where the cascade confirmed it (see module)."""
    open_updates: int = 0
    mismatches: deque[float] = field(default_factory=deque)
    """The last ``closed_ncc_history`` values of 1 - correlation with the open template."""
    darks: deque[float] = field(default_factory=deque)
    """The last ``closed_ncc_history`` darkest tenths of the eye's middle (see module)."""

    @property
    def box(self) -> Box | None:
        return self.follower.box


@dataclass(frozen=True, slots=True)
class Eyes:
    """What the eye stage says about one frame."""

    boxes: tuple[Box, ...]
    """Eyes found, image left first, at most one per side of the face."""
    pupils: tuple[Point | None, Point | None]
    """Eye centres in frame pixels, image left eye first."""
    closed: bool
    closedness: float
    """The evidence that both eyes are closed (see module): the eyes' mean mismatch."""
    gaze: tuple[float, float] | None
    lower: float = 0.0
    """The less closed eye's mismatch (see :func:`closed_decision`)."""


class EyeStage:
    def __init__(self, settings: EyeSettings, plain: Cascade, glasses: Cascade | None) -> None:
        self.settings = settings
        self._plain = plain
        self._glasses = glasses
        self._follow_settings = settings.follow()
        self.reset()

    def reset(self) -> None:
        self._sides = (self._side(), self._side())
        self._previous_face: Box | None = None
        self._next_acquire_t = -math.inf
        self._gaze_state: tuple[float, float, float] | None = None
        """The last smoothed gaze and its time; None starts the smoothing afresh."""

    def _side(self) -> _Side:
        return _Side(Follower(self._follow_settings, self._window))

    # --- the per-frame entry point ----------------------------------------------------------

    def step(self, grey: NDArray[np.uint8], face: Box | None, t: float) -> Eyes:
        if face is None:
            self.reset()
            return Eyes((), (None, None), False, 0.0, None)
        self._follow(grey, face, t)
        self._acquire(grey, face, t)
        self._keep_sides(face)
        pupils = (self._pupil(grey, self._sides[0].box), self._pupil(grey, self._sides[1].box))
        # Missing evidence (no template or history yet, no box) counts as open: 0.
        evidence = [self._mismatch(grey, side) for side in self._sides]
        closedness = sum(_or0(e) for e in evidence) / 2
        lower = min((e for e in evidence if not math.isnan(e)), default=0.0)
        closed = closed_decision(self.settings, closedness, lower)
        eyes = tuple(side.box for side in self._sides if side.box is not None)
        return Eyes(eyes, pupils, closed, closedness, self._gaze(pupils, t), lower)

    # --- following one eye ------------------------------------------------------------------

    def _follow(self, grey: NDArray[np.uint8], face: Box, t: float) -> None:
        """Each eye that has a window, moved as the face moved, then followed."""
        dx, dy = self._face_motion(face)
        for side in self._sides:
            side.last_box = _moved(side.last_box, dx, dy)
            if side.box is not None:
                side.follower.step(grey, _move(side.box, dx, dy), t)

    def _acquire(self, grey: NDArray[np.uint8], face: Box, t: float) -> None:
        """An eye without a window: search the face's eye band, at most this often."""
        if all(side.box is not None for side in self._sides) or t < self._next_acquire_t:
            return
        self._next_acquire_t = t + self.settings.acquire_interval_s
        for side, found in zip(self._sides, self._band(grey, face), strict=True):
            if side.box is None and found is not None:
                side.follower.acquire(grey, found, t, fresh=True)

    def _keep_sides(self, face: Box) -> None:
        """An eye that drifted to the other half of the face is no longer this side's eye."""
        middle = face[0] + face[2] / 2
        for is_left, side in zip((True, False), self._sides, strict=True):
            box = side.box
            if box is not None and (box[0] + box[2] / 2 < middle) != is_left:
                side.follower.drop()
            if side.box is not None:
                side.last_box = side.box

    def _face_motion(self, face: Box) -> tuple[float, float]:
        previous, self._previous_face = self._previous_face, face
        if previous is None:
            return 0.0, 0.0
        return (
            face[0] + face[2] / 2 - previous[0] - previous[2] / 2,
            face[1] + face[3] / 2 - previous[1] - previous[3] / 2,
        )

    def _window(self, grey: NDArray[np.uint8], box: Box) -> Box | None:
        """The eye cascade (then the eyeglasses one) in a small window around ``box``, at the
        scale where the eye is ``window_eye_px``: the nearest hit to the box's centre."""
        s = self.settings
        x, y, w, h = box
        x0, y0, crop = grown(grey, box, s.window_margin)
        scale = s.window_eye_px / w
        roi = resize(crop, scale)
        low = max(EYE_WINDOW_PX, round(s.size_range[0] * s.window_eye_px))
        high = round(s.size_range[1] * s.window_eye_px)
        cx, cy = (x + w / 2 - x0) * scale, (y + h / 2 - y0) * scale
        for cascade in (self._plain, self._glasses):
            if cascade is None:
                continue
            found = boxes(
                cascade.detectMultiScale(
                    roi,
                    scaleFactor=s.window_scale_factor,
                    minNeighbors=s.window_min_neighbors,
                    minSize=(low, low),
                    maxSize=(high, high),
                )
            )
            if found:
                near = min(
                    found, key=lambda e: (e[0] + e[2] / 2 - cx) ** 2 + (e[1] + e[3] / 2 - cy) ** 2
                )
                return unscale(near, scale, x0, y0)
        return None

    def _band(self, grey: NDArray[np.uint8], face: Box) -> tuple[Box | None, Box | None]:
        """At most one eye in each half of the face's eye band (image left first)."""
        s = self.settings
        fx, fy, fw, fh = face
        left, top, right, bottom = s.band
        x0, y0, x1, y1 = clip(
            grey, fx + left * fw, fy + top * fh, fx + right * fw, fy + bottom * fh
        )
        if x1 - x0 < 2 or y1 - y0 < 2:
            return None, None
        scale = s.band_face_px / fw
        band = resize(grey[y0:y1, x0:x1], scale)
        centre = (fx + fw / 2 - x0) * scale
        best: list[Box | None] = [None, None]
        for cascade in (self._plain, self._glasses):
            if cascade is None or all(b is not None for b in best):
                continue
            found = cascade.detectMultiScale(
                band,
                scaleFactor=s.band_scale_factor,
                minNeighbors=s.band_min_neighbors,
                minSize=(EYE_WINDOW_PX, EYE_WINDOW_PX),
                maxSize=(round(0.4 * s.band_face_px),) * 2,
            )
            for eye in boxes(found):
                i = 0 if eye[0] + eye[2] / 2 < centre else 1
                current = best[i]
                if current is None or eye[2] > current[2]:
                    best[i] = eye
        left_eye, right_eye = (None if b is None else unscale(b, scale, x0, y0) for b in best)
        return left_eye, right_eye

    # --- what the eye says -----------------------------------------------------------------

    def _pupil(self, grey: NDArray[np.uint8], box: Box | None) -> Point | None:
        """Means of gradients over the middle of the eye box (the cascade's box has brow and
        cheek above and below), shrunk to ``centre_px`` wide, weighted by darkness."""
        if box is None:
            return None
        s = self.settings
        x, y, w, h = box
        left, top, right, bottom = s.centre_crop
        x0, y0, x1, y1 = clip(grey, x + left * w, y + top * h, x + right * w, y + bottom * h)
        if x1 - x0 < 2 or y1 - y0 < 2:
            return None
        scale = s.centre_px / (x1 - x0)
        patch = resize(grey[y0:y1, x0:x1], scale).astype(np.float64)
        weight = np.asarray(
            (255.0 - cv2.GaussianBlur(patch, (0, 0), 1.0)) / 255.0, dtype=np.float64
        )
        cx, cy, _ = kernels.eye_centre(patch, weight, s.centre_threshold_sd)
        return (x0 + (cx + 0.5) / scale, y0 + (cy + 0.5) / scale)

    def _mismatch(self, grey: NDArray[np.uint8], side: _Side) -> float:
        """1 - the eye's best correlation with its open-eye template, over its own median of
        the last ``closed_ncc_history`` frames, plus ``closed_dark_weight`` times as much as the
        darkest tenth of the eye's middle is lighter than its own median (a shut lid hides the
        iris); then, if the cascade confirmed the eye this frame, the frame joins the template.
        NaN without a template or enough history."""
        box = side.box or side.last_box
        if box is None:
            return math.nan
        s = self.settings
        x, y, w, h = box
        x0, y0, x1, y1 = clip(grey, x, y, x + w, y + h)
        if x1 - x0 < 4 or y1 - y0 < 4:
            return math.nan
        small = cv2.resize(grey[y0:y1, x0:x1], (OPEN_BOX_PX,) * 2, interpolation=cv2.INTER_AREA)
        eye = np.asarray(small, dtype=np.float32)
        r0, r1, c0, c1 = OPEN_CORE
        middle = eye[r0:r1, c0:c1]
        darkest = float(np.partition(middle, middle.size // 10, axis=None)[middle.size // 10])
        lighter = self._over_median(side.darks, darkest)
        result = math.nan
        template = side.open_template
        if template is not None and side.open_updates >= s.closed_min_updates:
            region = eye[max(0, r0 - OPEN_SHIFT) : r1 + OPEN_SHIFT, max(0, c0 - OPEN_SHIFT) :]
            best = float(cv2.matchTemplate(region, template, cv2.TM_CCOEFF_NORMED).max())
            mismatch = self._over_median(side.mismatches, 1.0 - best)
            if not math.isnan(mismatch):
                result = mismatch + s.closed_dark_weight * _or0(lighter)
        if side.follower.state is State.CONFIRMED:
            core = eye[r0:r1, c0:c1]
            a = s.closed_template_alpha
            side.open_template = core.copy() if template is None else (1 - a) * template + a * core
            side.open_updates += 1
        return result

    def _over_median(self, past: deque[float], value: float) -> float:
        """``value`` over the median of ``past`` (NaN while it is too short), then ``value``
        joins ``past``, which keeps the last ``closed_ncc_history``."""
        s = self.settings
        result = math.nan
        if len(past) >= s.closed_min_history:
            # statistics.median: the same value as np.median, ~10x faster on 60 floats.
            result = value - statistics.median(past)
        past.append(value)
        while len(past) > s.closed_ncc_history:
            past.popleft()
        return result

    def _gaze(
        self, pupils: tuple[Point | None, Point | None], t: float
    ) -> tuple[float, float] | None:
        """Each pupil's offset from its eye box's centre over a quarter of the box, averaged over
        the eyes that have one, clipped to [-1, 1]; then smoothed over time, each component on
        its own (``gaze_tau_s``, ``gaze_jump``). None without a pupil, and the smoothing then
        starts afresh: a gaze is never carried over from eyes that are no longer seen."""
        offsets = []
        for side, pupil in zip(self._sides, pupils, strict=True):
            if side.box is None or pupil is None:
                continue
            x, y, w, h = side.box
            offsets.append(((pupil[0] - x - w / 2) / (w / 4), (pupil[1] - y - h / 2) / (h / 4)))
        if not offsets:
            self._gaze_state = None
            return None
        gx = max(-1.0, min(1.0, sum(o[0] for o in offsets) / len(offsets)))
        gy = max(-1.0, min(1.0, sum(o[1] for o in offsets) / len(offsets)))
        if self._gaze_state is not None:
            # The pupil is found to a pixel of a ~24 px eye: a steady eye's raw gaze steps by
            # ~0.07 from frame to frame, and a glance aside moves it by 0.5 or more in a frame.
            px, py, pt = self._gaze_state
            tau, jump = self.settings.gaze_tau_s, self.settings.gaze_jump
            gx = kernels.adaptive_ema_step(px, gx, t - pt, tau, jump)
            gy = kernels.adaptive_ema_step(py, gy, t - pt, tau, jump)
        self._gaze_state = (gx, gy, t)
        return (gx, gy)


def closed_decision(s: EyeSettings, closedness: float, lower: float) -> bool:
    """Closed: the eyes' mean mismatch over the threshold, and the less closed eye's over
    ``closed_both`` of it. Pure, so that ``benchmarks.crossval`` replays it over recorded evidence
    to choose ``closed_score``."""
    threshold = s.closed_score
    return closedness > threshold and (s.closed_both == 0 or lower > s.closed_both * threshold)


def _or0(value: float) -> float:
    return 0.0 if math.isnan(value) else value


def _moved(box: Box | None, dx: float, dy: float) -> Box | None:
    return None if box is None else _move(box, dx, dy)


def _move(box: Box, dx: float, dy: float) -> Box:
    x, y, w, h = box
    return (round(x + dx), round(y + dy), w, h)
