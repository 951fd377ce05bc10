"""The tracker: one frame and its timestamp in, one :class:`Observation` out. Pure, no I/O.

Where the speed comes from (docs/design.md): the original ran the face cascade over the whole
640x480 frame at scale 1.1 for every frame (48-86 ms per 640x360 frame here). This tracker

1. converts to grey once;
2. while it follows a face, searches only a margin around the previous face box, shrunk so the
   face is close to the cascade's 24 px window, over a narrow band of sizes (a fraction of a ms);
3. when that misses, searches the whole frame at once (so a single miss costs one frame), then
   at most every ``lost_search_interval_s`` while the face stays lost;
4. refreshes ``face_count`` with a coarse full-frame search every ``recount_interval_s``, for faces
   at least half the tracked one's size (someone joining the person at the screen);
5. looks for eyes only in the band of the face box where eyes are, shrunk so an eye is about
   the eye cascade's 20 px window, and keeps at most one eye per half of the face.

The per-frame evidence becomes an *attention score* (:func:`attention_score`), which the numba
kernels smooth into ``confidence`` and turn into ``looking_away`` with hysteresis and minimum
durations measured in seconds, so a blink is never "away" at any frame rate.

A tracker is a plain per-session object: one for the shared capture, and later one per client
that pushes its own frames. It is not thread-safe (OpenCV's cascades are not): use one tracker
from one thread at a time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Final, cast

import cv2
import numpy as np
from numpy.typing import NDArray

import kernels
from trackerd.cascades import EYE_CASCADE, FACE_CASCADE, load_cascade
from trackerd.errors import TrackerdError
from trackerd.observation import Box, Observation

FACE_WINDOW_PX: Final = 24
"""Native window of haarcascade_frontalface_default."""
EYE_WINDOW_PX: Final = 20
"""Native window of haarcascade_eye."""


class TrackerSettingsError(TrackerdError, ValueError):
    """A tracker setting is out of range; the message names it."""


@dataclass(frozen=True, slots=True)
class TrackerSettings:
    """Every knob of the tracker, with the reason for its default."""

    # --- Finding faces in the whole frame -------------------------------------------------------
    min_face_px: int = 30
    """Smallest face (frame pixels) a full-frame search finds: the original's ``minSize``, so
    the tracker never misses a face the original would have found for being small."""
    full_scale_factor: float = 1.1
    full_min_neighbors: int = 5
    """The original's full-frame parameters: same sensitivity, same false-positive rate."""
    lost_search_interval_s: float = 0.2
    """While no face is found, the full search (the expensive part) runs at most this often.
    With the smoothing below a returning face is still reported within ~0.5 s."""
    lost_hold_s: float = 0.5
    """For this long after losing a face, the region where it was is searched on every frame
    (a few ms), so a face that was hidden briefly is found the moment it is back."""
    recount_interval_s: float = 1.0
    """While a face is tracked, a coarse full search this often refreshes ``face_count``."""
    recount_min_fraction: float = 0.5
    """…for faces at least this fraction of the tracked face's width (bystanders at the screen)."""

    # --- Following a face -----------------------------------------------------------------------
    track_face_px: int = 32
    """Face width in the shrunk region-of-interest image. Smaller is faster (the cost grows with
    the region's area): 1.5 ms at 40 px, ~0.6 ms at 32 px. The small search misses more often
    (5-8 % of frames on a clip with strong expressions), which the retry below absorbs."""
    track_margin: float = 0.25
    """The region is the previous face box grown by this fraction of its size on each side:
    a face moving up to a quarter of its width between frames stays inside it."""
    retry_face_px: int = 80
    retry_margin: float = 0.5
    """When the small search misses, one more region search at this face width and margin.
    A face at the frame's edge in an unusual pose was lost at 40 px but found at 80 px."""
    track_size_range: tuple[float, float] = (0.7, 1.4)
    """Sizes searched in the region, as fractions of the previous face width."""
    track_scale_factor: float = 1.15
    """Coarser than the full search's 1.1: the size is known to within the range above."""
    track_min_neighbors: int = 3
    """Fewer neighbours than the full search: the region already says where the face is."""

    # --- Finding eyes ---------------------------------------------------------------------------
    eye_face_px: int = 90
    """Face width at which eyes are searched (an eye is then ~20-26 px, the cascade's window).
    The eye search is the cost centre. Measured on the two real clips in tests/data (both eyes
    found / ms): 90 px, 1.15, 2 neighbours: 97 % and 63 % for ~0.8-1.0 ms; 100 px, 1.1,
    3 neighbours: 99 % and 77 % for 1.6-2.0 ms; 150 px: 99 % and 85 % for 4-5 ms."""
    eye_band: tuple[float, float, float, float] = (0.08, 0.18, 0.92, 0.58)
    """Where eyes sit in a frontal face box: (left, top, right, bottom) as fractions of it."""
    eye_min_neighbors: int = 2
    eye_scale_factor: float = 1.15
    """At most one eye per half of the face is kept, which filters the extra hits that
    fewer neighbours let through (eyebrows, nostrils)."""

    # --- From evidence to attention -------------------------------------------------------------
    score_face_no_eyes: float = 0.6
    """A face with no eye found is a blink, closed eyes or an eye-cascade miss (glasses, light):
    kept above ``away_below``, so on its own it never means "looking away"."""
    score_one_eye: float = 0.85
    score_two_eyes: float = 1.0
    off_centre_penalty: float = 1.0
    """Score lost per unit of horizontal offset of the eyes' midpoint from the face centre
    (in face widths): a turned head lowers confidence. Never below ``score_face_no_eyes``."""
    confidence_tau_s: float = 0.2
    """Time constant of the confidence filter."""
    away_below: float = 0.4
    """Confidence below this for ``min_away_s`` means looking away."""
    back_above: float = 0.55
    """…and above this for ``min_back_s`` means looking back."""
    min_away_s: float = 0.25
    min_back_s: float = 0.1
    """With tau 0.2 s the confidence of a face that vanishes is below ``away_below`` after
    0.18 s, so it is "away" after ~0.43 s; a face missing for less than ~0.37 s (a blink, a
    missed detection, a hand passing) never flips the decision. A returning face is "back"
    ~0.25 s after it is found."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            values = value if isinstance(value, tuple) else (value,)
            if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
                raise TrackerSettingsError(f"{f.name} must be a finite number, got {value!r}")
        checks = [
            (self.min_face_px >= FACE_WINDOW_PX, "min_face_px must be >= 24 (the cascade window)"),
            (self.full_scale_factor > 1.0, "full_scale_factor must be > 1"),
            (self.track_scale_factor > 1.0, "track_scale_factor must be > 1"),
            (self.eye_scale_factor > 1.0, "eye_scale_factor must be > 1"),
            (self.full_min_neighbors >= 0, "full_min_neighbors must be >= 0"),
            (self.track_min_neighbors >= 0, "track_min_neighbors must be >= 0"),
            (self.eye_min_neighbors >= 0, "eye_min_neighbors must be >= 0"),
            (self.lost_search_interval_s >= 0, "lost_search_interval_s must be >= 0"),
            (self.recount_interval_s > 0, "recount_interval_s must be > 0"),
            (self.lost_hold_s >= 0, "lost_hold_s must be >= 0"),
            (0 < self.recount_min_fraction <= 1, "recount_min_fraction must be in (0, 1]"),
            (self.track_face_px >= FACE_WINDOW_PX, "track_face_px must be >= 24"),
            (0 <= self.track_margin <= 2, "track_margin must be in [0, 2]"),
            (self.retry_face_px >= FACE_WINDOW_PX, "retry_face_px must be >= 24"),
            (0 <= self.retry_margin <= 2, "retry_margin must be in [0, 2]"),
            (
                0 < self.track_size_range[0] < 1 < self.track_size_range[1],
                "track_size_range must be (low < 1 < high)",
            ),
            (self.eye_face_px >= 3 * EYE_WINDOW_PX, "eye_face_px must be >= 60"),
            (
                0 <= self.eye_band[0] < self.eye_band[2] <= 1
                and 0 <= self.eye_band[1] < self.eye_band[3] <= 1,
                "eye_band must be (left, top, right, bottom) fractions with left<right, top<bottom",
            ),
            (
                0 <= self.score_face_no_eyes <= self.score_one_eye <= self.score_two_eyes <= 1,
                "scores must satisfy 0 <= face_no_eyes <= one_eye <= two_eyes <= 1",
            ),
            (self.off_centre_penalty >= 0, "off_centre_penalty must be >= 0"),
            (self.confidence_tau_s >= 0, "confidence_tau_s must be >= 0"),
            (
                0 <= self.away_below <= self.back_above <= 1,
                "need 0 <= away_below <= back_above <= 1",
            ),
            (self.min_away_s >= 0 and self.min_back_s >= 0, "min_away_s/min_back_s must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise TrackerSettingsError(message)


def attention_score(settings: TrackerSettings, face: Box | None, eyes: tuple[Box, ...]) -> float:
    """One frame's evidence in [0, 1]: 0 without a face, higher with eyes and a centred gaze."""
    if face is None:
        return 0.0
    if len(eyes) < 2:
        return settings.score_one_eye if eyes else settings.score_face_no_eyes
    fx, _, fw, _ = face
    mid = sum(ex + ew / 2 for ex, _, ew, _ in eyes) / 2
    offset = abs(mid - (fx + fw / 2)) / fw
    score = settings.score_two_eyes - settings.off_centre_penalty * offset
    return max(settings.score_face_no_eyes, min(settings.score_two_eyes, score))


class Tracker:
    """Follows one main face through a sequence of frames. See the module docstring."""

    def __init__(self, settings: TrackerSettings | None = None) -> None:
        self.settings = settings or TrackerSettings()
        self._face_cascade = load_cascade(FACE_CASCADE)
        self._eye_cascade = load_cascade(EYE_CASCADE)
        self.reset()

    def reset(self) -> None:
        """Forget the track and the filters' history (a new, unrelated sequence follows)."""
        self._face: Box | None = None
        self._lost_face: Box | None = None
        self._lost_at = -math.inf
        self._face_count = 0
        self._last_t = math.nan
        self._next_full_t = -math.inf
        self._next_recount_t = -math.inf
        self._confidence = math.nan
        self._away = False
        self._pending_since = math.nan

    # --- the per-frame entry point ----------------------------------------------------------

    def process(self, image: NDArray[np.uint8], t: float) -> Observation:
        """Analyse one frame (BGR or grey) taken at ``t`` seconds. Blocking CPU work."""
        grey = _to_grey(image)
        s = self.settings
        if t < self._last_t:
            # Time went backwards: a new, unrelated sequence follows. (NaN compares False.)
            self.reset()
        dt = 0.0 if math.isnan(self._last_t) else t - self._last_t
        self._last_t = t

        faces: tuple[Box, ...] = ()
        previous = self._face
        face = None
        if previous is not None:
            face = self._track(grey, previous, s.track_face_px, s.track_margin)
            if face is None:
                # The small search missed (a fast move, a turn, an odd expression): look again
                # around the same place at a resolution where the cascade is surer, before
                # calling the track lost. A few ms, paid only on the frames that need it.
                face = self._track(grey, previous, s.retry_face_px, s.retry_margin)
            if face is None:
                self._lost_face, self._lost_at = previous, t
        elif self._lost_face is not None and t - self._lost_at <= s.lost_hold_s:
            # Recently lost: a blink, a hand, a sneeze. Faces come back where they were, so
            # look there on every frame rather than waiting for the rate-limited full search.
            face = self._track(grey, self._lost_face, s.retry_face_px, s.retry_margin)
        if face is None and t >= self._next_full_t:
            # Lost: the full-sensitivity search (the original's), rate-limited while lost.
            faces = self._full_search(grey, s.min_face_px)
            face = _largest(faces) if faces else None
            self._face_count = len(faces)
            self._next_full_t = t + s.lost_search_interval_s
            self._next_recount_t = t + s.recount_interval_s
        elif face is not None and t >= self._next_recount_t:
            faces = self._full_search(grey, self._recount_min_px(face))
            self._face_count = len(faces) + (0 if any(_overlaps(face, f) for f in faces) else 1)
            self._next_recount_t = t + s.recount_interval_s
        elif face is None:
            self._face_count = 0
        self._face = face

        eyes = self._find_eyes(grey, face) if face is not None else ()
        score = attention_score(s, face, eyes)
        self._confidence = kernels.ema_step(self._confidence, score, dt, s.confidence_tau_s)
        self._away, self._pending_since = kernels.hysteresis_step(
            self._confidence,
            t,
            self._away,
            self._pending_since,
            s.away_below,
            s.back_above,
            s.min_away_s,
            s.min_back_s,
        )
        return Observation(
            t=t,
            face_detected=face is not None,
            eye_count=len(eyes),
            looking_away=self._away,
            confidence=min(1.0, max(0.0, self._confidence)),
            face_count=max(self._face_count, 1) if face is not None else self._face_count,
            face=face,
            eyes=eyes,
            faces=faces,
            attention=score,
        )

    # --- searches ---------------------------------------------------------------------------

    def _full_search(self, grey: NDArray[np.uint8], min_face_px: int) -> tuple[Box, ...]:
        """Every face at least ``min_face_px`` wide, in frame coordinates.

        The frame is shrunk so that ``min_face_px`` maps onto the cascade's 24 px window: the
        smallest faces are found exactly as the original found them, and no pyramid levels are
        spent on sizes below the minimum.
        """
        s = self.settings
        scale = min(1.0, FACE_WINDOW_PX / min_face_px)
        small = _resize(grey, scale)
        found = self._face_cascade.detectMultiScale(
            small,
            scaleFactor=s.full_scale_factor,
            minNeighbors=s.full_min_neighbors,
            minSize=(FACE_WINDOW_PX, FACE_WINDOW_PX),
        )
        return tuple(_unscale(box, scale, 0, 0) for box in _boxes(found))

    def _recount_min_px(self, face: Box) -> int:
        return max(self.settings.min_face_px, int(self.settings.recount_min_fraction * face[2]))

    def _track(
        self, grey: NDArray[np.uint8], previous: Box, face_px: int, margin: float
    ) -> Box | None:
        """The face near ``previous``, searched with the face shrunk to ``face_px``, or ``None``."""
        s = self.settings
        x, y, w, h = previous
        x0, y0, x1, y1 = _clip(
            grey, x - margin * w, y - margin * h, x + w + margin * w, y + h + margin * h
        )
        scale = face_px / w
        roi = _resize(grey[y0:y1, x0:x1], scale)
        low, high = s.track_size_range
        min_px = max(FACE_WINDOW_PX, round(low * face_px))
        max_px = round(high * face_px)
        found = self._face_cascade.detectMultiScale(
            roi,
            scaleFactor=s.track_scale_factor,
            minNeighbors=s.track_min_neighbors,
            minSize=(min_px, min_px),
            maxSize=(max_px, max_px),
        )
        boxes = _boxes(found)
        return _unscale(_largest(boxes), scale, x0, y0) if boxes else None

    def _find_eyes(self, grey: NDArray[np.uint8], face: Box) -> tuple[Box, ...]:
        """At most one eye in each half of the face's eye band, left to right in the image."""
        s = self.settings
        fx, fy, fw, fh = face
        left, top, right, bottom = s.eye_band
        x0, y0, x1, y1 = _clip(
            grey, fx + left * fw, fy + top * fh, fx + right * fw, fy + bottom * fh
        )
        if x1 - x0 < 2 or y1 - y0 < 2:
            return ()
        scale = s.eye_face_px / fw
        band = _resize(grey[y0:y1, x0:x1], scale)
        # An eye is roughly a quarter of the face wide; search from the cascade window to 40 %.
        found = self._eye_cascade.detectMultiScale(
            band,
            scaleFactor=s.eye_scale_factor,
            minNeighbors=s.eye_min_neighbors,
            minSize=(EYE_WINDOW_PX, EYE_WINDOW_PX),
            maxSize=(round(0.4 * s.eye_face_px),) * 2,
        )
        centre = (fx + fw / 2 - x0) * scale
        best: dict[bool, Box] = {}
        for eye in _boxes(found):
            is_left = eye[0] + eye[2] / 2 < centre
            if is_left not in best or eye[2] > best[is_left][2]:
                best[is_left] = eye
        return tuple(_unscale(best[side], scale, x0, y0) for side in (True, False) if side in best)


# --- small geometry helpers ---------------------------------------------------------------------


def _to_grey(image: NDArray[np.uint8]) -> NDArray[np.uint8]:
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return _u8(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    if image.ndim == 3 and image.shape[2] == 4:
        return _u8(cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY))
    raise ValueError(f"expected a grey (h, w) or BGR (h, w, 3) image, got shape {image.shape}")


def _resize(image: NDArray[np.uint8], scale: float) -> NDArray[np.uint8]:
    if abs(scale - 1.0) < 1e-3:
        return image
    # INTER_AREA averages when shrinking (no aliasing); bilinear when enlarging.
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return _u8(cv2.resize(image, None, fx=scale, fy=scale, interpolation=interpolation))


def _clip(
    image: NDArray[np.uint8], x0: float, y0: float, x1: float, y1: float
) -> tuple[int, int, int, int]:
    h, w = image.shape[:2]
    return max(0, int(x0)), max(0, int(y0)), min(w, math.ceil(x1)), min(h, math.ceil(y1))


def _u8(image: object) -> NDArray[np.uint8]:
    """cv2's stubs type every result as a generic array; ours are 8-bit by construction."""
    return cast(NDArray[np.uint8], image)


def _boxes(found: Sequence[Sequence[int]]) -> tuple[Box, ...]:
    """detectMultiScale's (n, 4) array as plain int tuples."""
    return tuple((int(x), int(y), int(w), int(h)) for x, y, w, h in found)


def _unscale(box: Box, scale: float, dx: int, dy: int) -> Box:
    x, y, w, h = box
    return (
        dx + round(x / scale),
        dy + round(y / scale),
        round(w / scale),
        round(h / scale),
    )


def _largest(boxes: tuple[Box, ...]) -> Box:
    return max(boxes, key=lambda b: b[2] * b[3])


def _overlaps(a: Box, b: Box) -> bool:
    """True when the centre of either box lies inside the other."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return (ax <= bx + bw / 2 <= ax + aw and ay <= by + bh / 2 <= ay + ah) or (
        bx <= ax + aw / 2 <= bx + bw and by <= ay + ah / 2 <= by + bh
    )
