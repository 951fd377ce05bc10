"""The tracker: one frame and its timestamp in, one :class:`Observation` out. Pure, no I/O.

Where the speed comes from (docs/design.md): the original ran the face cascade over the whole
640x480 frame at scale 1.1 for every frame (48-86 ms per 640x360 frame here). This tracker

1. converts to grey once;
2. while it follows a face, searches only a margin around the previous face box, shrunk so the
   face is close to the cascade's 24 px window, over a narrow band of sizes (~1 ms), and that
   only on every other frame: in between, the face is followed by template matching (~0.05 ms),
   and a match that weakens asks the cascade at once;
3. when that misses, searches the whole frame at once (so a single miss costs one frame), then
   at most every ``lost_search_interval_s`` while the face stays lost, at full sensitivity only
   every ``lost_fine_interval_s`` and in between for faces twice the smallest size;
4. refreshes ``face_count`` with a coarse full-frame search every ``recount_interval_s``, for faces
   at least half the tracked one's size (someone joining the person at the screen); a face found
   there 1.5 times wider than the tracked one becomes the main face (the tracker had started on
   someone small in the background);
5. follows each eye in a small window at the eye cascade's native scale, with template matching
   between cascade confirmations, and finds its centre, whether it is closed, and the gaze
   (:mod:`trackerd.eyes`).

The per-frame evidence becomes an *attention score* (:func:`attention_score`), which the numba
kernels smooth into ``confidence`` and turn into ``looking_away`` with hysteresis and minimum
durations measured in seconds, so a blink is never "away" at any frame rate.

A tracker is a plain per-session object: one for the shared capture, and later one per client
that pushes its own frames. It is not thread-safe (OpenCV's cascades are not): use one tracker
from one thread at a time.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, fields
from typing import Final

import cv2
import numpy as np
from numpy.typing import NDArray

import kernels
from trackerd.errors import TrackerdError
from trackerd.vision.cascades import EYE_CASCADE, EYEGLASSES_CASCADE, FACE_CASCADE, load_cascade
from trackerd.vision.eyes import EyeStage
from trackerd.vision.geometry import boxes, clip, grown, resize, u8, unscale
from trackerd.vision.observation import Box, Observation

FACE_WINDOW_PX: Final = 24
"""Native window of haarcascade_frontalface_default."""
EYE_WINDOW_PX: Final = 20
"""Native window of haarcascade_eye."""
MAIN_FACE_RATIO: Final = 1.5
"""A face this many times wider than the tracked one, found by the recount, becomes the main face:
the person at the screen, not someone small in the background."""


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
    lost_fine_interval_s: float = 1.0
    lost_coarse_factor: float = 2.0
    """While no face is found, only every ``lost_fine_interval_s`` does the search look for faces
    as small as ``min_face_px``; the searches between look for faces at least this factor
    wider, a quarter of the pixels. The first search after a face is lost is always the fine
    one. A face that comes back to the screen is big and is still found within
    ``lost_search_interval_s``; a small one (a bystander, someone far from the camera) within
    ``lost_fine_interval_s``. Why: a session whose face stays lost paid a full search and its
    equalised retry every 0.2 s, ~4x what a tracked face costs (measured in the README)."""
    lost_hold_s: float = 0.5
    """For this long after losing a face, the region where it was is searched on every frame
    (a few ms), so a face that was hidden briefly is found the moment it is back."""
    recount_interval_s: float = 1.0
    """While a face is tracked, a coarse full search this often refreshes ``face_count``."""
    recount_min_fraction: float = 0.5
    """…for faces at least this fraction of the tracked face's width (bystanders at the screen)."""

    # --- Following a face -----------------------------------------------------------------------
    track_face_px: int = 28
    """Face width in the shrunk region-of-interest image. Smaller is faster (the cost grows with
    the region's area, nearly all of it spent on windows over the face): 1.5 ms at 40 px; on the
    640x480 push frames 0.92 ms at 32 px and 0.62 ms at 28 px (the cascade alone). The small
    search misses more often (5-8 % of frames on a clip with strong expressions at 32 px), which
    the retry below absorbs.
    Measured 32 -> 28 on the same frames: the demo's 640x480 frames 2.14 -> 1.88 ms a frame, no
    face lost in the Pexels clip or single_face; zju-dev 2.30 -> 2.26 ms, faces found 95.1 ->
    95.0 % (IoU with the annotated boxes 0.608 -> 0.603), open eyes found 92.4 -> 92.6 %, false
    eye boxes 0.029 -> 0.021 a frame, worse-eye e <= 0.05 52.6 -> 51.5 %, <= 0.10 83.6 -> 84.4 %.
    At 28 the smallest size searched is the cascade's 24 px window, 0.86 of the face: a face that
    shrinks faster than that between two confirmations is found by the retry."""
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
    track_min_neighbors: int = 2
    """Fewer neighbours than the full search: the region already says where the face is, and
    in a region of ~1.5 face widths shrunk to ``track_face_px`` a face has few neighbouring
    windows to give. At 3 the region search found zju-dev's 320x240 faces (~100 px wide) on 62 %
    of its tries, and each miss cost a 2.1 ms retry at 80 px. Measured on the same frames:

    - 3 -> 1: zju-dev 2.13 -> 1.79 ms a frame (three interleaved runs), the demo's 640x480
      frames 1.97 -> 1.80 ms, faces found 95.7 -> 96.4 %, open eyes 93.0 -> 93.7 %, false eye
      boxes 0.020 both. But a false face, once the lost search finds one, is followed longer:
      on the no_face cartoon pushed as JPEGs at 40 random frame timings, up to 16 frames
      (0.5 s) against 2-4 at 3;
    - 2 (kept, with the equalised retry below): faces 97.3 %, open eyes 94.7 %, false eye boxes
      0.015, e <= 0.05 / 0.10 53.0 / 85.8 %, and a false face followed for at most 2 frames;
      a few hundredths of a ms a frame more than 1 (more retries);
    - 0 (every raw window) loses the box's fit: IoU with the annotated boxes 0.51 against 0.60.
    """
    face_confirm_every: int = 2
    """The cascade confirms the face every this many frames (1: every frame); in between, the
    face is followed by template matching against its look when last confirmed. Measured on
    the 40 zju-dev clips and the demo's 472 Pexels frames, same frames for each row (ms per
    zju-dev frame, faces found at IoU > 0.3 with the annotated box, open eyes found, false eye
    boxes per frame; Pexels frames without a face):

    - 1: 3.78 ms, 94.5 %, 91.7 %, 0.024; Pexels 0;
    - 2: ~2.9 ms, 95.1 %, 92.4 %, 0.029; Pexels 0 (kept: half the region searches);
    - 3: 2.71 ms, 95.2 %, 92.5 %, 0.021; Pexels 3 (459-461: lost at a turn near the frame's
      edge, a face the cascade finds only from a box a few pixels off where the match put it);
    - 4: 2.81 ms, 95.4 %, 93.0 %, 0.030; Pexels 0.

    The annotated face boxes overlap the reported ones equally (mean IoU 0.61) in every row; the
    rows' differences in eyes are within what a one-pixel change of the face box does to them.
    """
    face_template_px: int = 40
    """Template matching runs with the face shrunk to this width (~0.05 ms in all; the region
    search it replaces costs ~1.1 ms at 640x480)."""
    face_coast_s: float = 0.4
    """When both cascades miss a face that the cascade confirmed at most this long ago, the
    face is kept if its template still matches (``face_track_min_ncc``): the face cascade leans
    on the eyes, and a blink (0.1-0.4 s) or a glint on glasses can hide a face from it. On the
    40 zju-dev clips (frames in annotation order), faces found 96.6 -> 97.3 %, open eyes found
    94.7 -> 95.4 %; on 000017F_FTN (backlit, glasses) the main face on 93 -> 128 of 138 frames,
    where it was lost at every blink."""
    face_coast_after_s: float = 0.5
    """…only for a face followed at least this long: a false face the lost search finds in
    the cartoon is gone within a few frames, and was followed on 10 of 95 frames with no age
    limit (``tests/test_tracker.py``)."""
    face_track_min_ncc: float = 0.85
    """A match below this correlation (the face turned, left, or was covered) asks the cascade
    at once, so a face that leaves is noticed on the frame it leaves."""

    equalize_region: bool = True
    """When the region search misses, search the region again with its histogram equalised (a
    ~40 px crop: a few µs, then the cascade). A face against a bright window is found by the
    equalised full search and then lost by the plain region search a few frames later, over
    and over. Measured on 000017F_FTN (glasses, bangs, a bright window): main face followed on
    57 -> 107 of its 117 frames (the original's whole-frame search: 38 % in the issue's count;
    101 with two neighbours in the region search). On all 40 zju-dev clips, same frames (with
    one neighbour): faces found 96.4 -> 97.4 %, open eyes found 93.7 ->
    94.2 %, false eye boxes 0.020 -> 0.016 a frame, e <= 0.05 53.1 -> 53.4 %, <= 0.10 86.0 ->
    85.4 %; 1.77 -> 1.67 ms a frame (fewer lost-face searches; three interleaved runs), and the
    demo's 640x480 frames 1.76 -> 1.78 ms, the same within the runs' spread. Paid only on the
    region search's misses."""
    equalize_when_lost: bool = True
    """When the full search finds no face, search again on the histogram-equalised frame: a face
    against a bright window is too dark for the cascade as it is. Paid only while lost (rate
    limited as above). On zju-dev this finds the backlit faces of 000014F_UNN."""

    # --- Finding eyes (trackerd.eyes; measured there) --------------------------------------------
    eye_face_px: int = 100
    """Face width at which the eye band is searched when an eye has no window yet (acquisition):
    an eye is then ~20-30 px, the cascade's window. Measured on zju-dev (eyes found, band alone):
    90 px 75 % for ~1.5 ms, 120 px 86 % for ~3.8 ms; acquisition is rare once windows follow the
    eyes, so 100 px."""
    eye_band: tuple[float, float, float, float] = (0.08, 0.18, 0.92, 0.58)
    """Where eyes sit in a frontal face box: (left, top, right, bottom) as fractions of it."""
    eye_min_neighbors: int = 3
    eye_scale_factor: float = 1.1
    """At most one eye per half of the face is kept, which filters the extra hits (eyebrows,
    nostrils)."""
    eye_acquire_interval_s: float = 0.1
    """While an eye has no window, the band search runs at most this often. Measured on all 40
    zju-dev clips (eyes found on open-eye frames / eye stage ms per frame, same run, a shared
    machine): 0.1 s 91.9 % / 1.38 ms, 0.3 s 90.7 % / 1.34 ms, 1 s 88.4 %: the band search is
    rare once windows follow the eyes, so running it less often loses eyes for ~0.05 ms."""
    eye_glasses: bool = True
    """Also try haarcascade_eye_tree_eyeglasses where the plain eye cascade misses."""
    eye_px: int = 24
    """Eye box width in the window's shrunk image: the cascade's 20 px window, a little more."""
    eye_window_margin: float = 0.3
    """The window is the eye's box grown by this fraction of its size on each side."""
    eye_size_range: tuple[float, float] = (0.8, 1.3)
    """Sizes searched in the window, as fractions of ``eye_px``."""
    eye_window_scale_factor: float = 1.15
    """Step between the sizes searched in the window: 4 sizes from 0.8 to 1.3 x ``eye_px``. On
    the 40 zju-dev clips, each clip run with both in turn: 1.1 (5 sizes) 0.97 ms of eye stage a
    frame, 95.4 % of open eyes, 0.018 false boxes; 1.15: 0.88 ms, 95.8 %, 0.019, and the eye
    confirmed more often (closed eyes 82.8 % at 1.7 % -> 82.8 % at 1.4 % at the same threshold);
    1.2: 0.88 ms, 95.6 %, 0.014, closed 81.1 % at 1.9 %."""
    eye_window_min_neighbors: int = 2
    eye_confirm_every: int = 4
    """The cascade confirms each eye every this many frames (1: every frame, no tracking in
    between). Measured on zju-dev: 1: 91 % of eyes for ~1.9 ms; 4: 92.5 % for ~0.6 ms."""
    eye_track_px: int = 16
    """Template matching between confirmations runs with the eye box shrunk to this width."""
    eye_track_margin: float = 0.35
    eye_track_min_ncc: float = 0.7
    """A template match below this correlation asks the cascade at once."""
    eye_max_misses: int = 6
    """An eye the cascade failed to confirm this many times running is dropped."""

    # --- Eye centres, closed eyes, blinks ------------------------------------------------------
    centre_crop: tuple[float, float, float, float] = (0.1, 0.2, 0.9, 0.9)
    """The part of an eye box searched for the centre (the box has brow above the eye)."""
    centre_px: int = 24
    """Width at which the centre is searched: the kernel's cost grows with the square of it."""
    centre_threshold_sd: float = 0.3
    """Timm & Barth's gradient threshold (mean + 0.3 standard deviations)."""
    closed_score: float = 0.046
    """Closed when the mean over both eyes of the mismatch with the open-eye template, over its
    median (:mod:`trackerd.eyes`), exceeds this. Chosen on subjects 11-15 of zju-dev so that 3 %
    of their open frames are called closed (78.7 % of their closed frames); on subjects 16-20,
    not used to choose it: 1.1 % of open frames and 90.6 % of closed frames; all 40 clips: 2.1 %
    and 85.5 %. Chosen again each time the tracking changed which frames the template learns
    from (0.235-0.267 until the clips' frames were put in annotation order, with a change
    measure that no longer pays: see :mod:`trackerd.eyes`). Documented in the README."""
    closed_ncc_history: int = 60
    """Frames (two seconds at 30 fps) over which the template mismatch's median is taken."""
    closed_template_alpha: float = 0.2
    """Weight of each newly confirmed open eye in the template's running mean."""
    closed_min_history: int = 5
    """Mismatches needed before their median is trusted (the first frames of a track)."""
    blink_min_open_s: float = 0.1
    """A closure counts as a new blink only after the eyes were open this long."""

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
            (self.face_confirm_every >= 1, "face_confirm_every must be >= 1"),
            (self.face_template_px >= 8, "face_template_px must be >= 8"),
            (-1 <= self.face_track_min_ncc <= 1, "face_track_min_ncc must be in [-1, 1]"),
            (self.face_coast_s >= 0, "face_coast_s must be >= 0"),
            (self.face_coast_after_s >= 0, "face_coast_after_s must be >= 0"),
            (self.eye_min_neighbors >= 0, "eye_min_neighbors must be >= 0"),
            (self.lost_search_interval_s >= 0, "lost_search_interval_s must be >= 0"),
            (self.recount_interval_s > 0, "recount_interval_s must be > 0"),
            (self.lost_hold_s >= 0, "lost_hold_s must be >= 0"),
            (self.lost_fine_interval_s >= 0, "lost_fine_interval_s must be >= 0"),
            (self.lost_coarse_factor >= 1, "lost_coarse_factor must be >= 1"),
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
            (self.eye_px >= EYE_WINDOW_PX, "eye_px must be >= 20 (the cascade window)"),
            (self.eye_window_scale_factor > 1.0, "eye_window_scale_factor must be > 1"),
            (self.eye_window_min_neighbors >= 0, "eye_window_min_neighbors must be >= 0"),
            (0 <= self.eye_window_margin <= 2, "eye_window_margin must be in [0, 2]"),
            (0 <= self.eye_track_margin <= 2, "eye_track_margin must be in [0, 2]"),
            (
                0 < self.eye_size_range[0] <= 1 <= self.eye_size_range[1],
                "eye_size_range must be (low <= 1 <= high)",
            ),
            (self.eye_confirm_every >= 1, "eye_confirm_every must be >= 1"),
            (self.eye_track_px >= 4, "eye_track_px must be >= 4"),
            (-1 <= self.eye_track_min_ncc <= 1, "eye_track_min_ncc must be in [-1, 1]"),
            (self.eye_max_misses >= 0, "eye_max_misses must be >= 0"),
            (self.eye_acquire_interval_s >= 0, "eye_acquire_interval_s must be >= 0"),
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
            (self.blink_min_open_s >= 0, "blink_min_open_s must be >= 0"),
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
        glasses = load_cascade(EYEGLASSES_CASCADE) if self.settings.eye_glasses else None
        self._eyes = EyeStage(self.settings, load_cascade(EYE_CASCADE), glasses)
        self.reset()

    def reset(self) -> None:
        """Forget the track and the filters' history (a new, unrelated sequence follows)."""
        self._face: Box | None = None
        self._face_template: NDArray[np.uint8] | None = None
        self._since_face_confirmed = 0
        self._face_confirmed_at = -math.inf
        self._face_since = math.inf
        self._lost_face: Box | None = None
        self._lost_at = -math.inf
        self._face_count = 0
        self._last_t = math.nan
        self._next_full_t = -math.inf
        self._next_fine_t = -math.inf
        self._next_recount_t = -math.inf
        self._confidence = math.nan
        self._away = False
        self._pending_since = math.nan
        self._eyes.reset()
        self._blinks = 0
        self._closed = False
        self._open_since = -math.inf

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
        matched = False
        if previous is not None:
            tried_match = self._since_face_confirmed + 1 < s.face_confirm_every
            if tried_match:
                face = self._match_face(grey, previous)
                matched = face is not None
            if face is None:
                face = self._track(grey, previous, s.track_face_px, s.track_margin)
            if face is None:
                # The small search missed (a fast move, a turn, an odd expression): look again
                # around the same place at a resolution where the cascade is surer, before
                # calling the track lost. A few ms, paid only on the frames that need it.
                face = self._track(grey, previous, s.retry_face_px, s.retry_margin)
            if (
                face is None
                and not tried_match
                and t - self._face_confirmed_at <= s.face_coast_s
                and t - self._face_since >= s.face_coast_after_s
            ):
                # Both cascades missed a face that was confirmed moments ago: most often a blink
                # (the face cascade leans on the eyes). If it still looks as it did, keep it.
                face = self._match_face(grey, previous)
                matched = face is not None
            if face is None:
                self._lost_face, self._lost_at = previous, t
        elif self._lost_face is not None and t - self._lost_at <= s.lost_hold_s:
            # Recently lost: a blink, a hand, a sneeze. Faces come back where they were, so
            # look there on every frame rather than waiting for the rate-limited full search.
            face = self._track(grey, self._lost_face, s.retry_face_px, s.retry_margin)
        if face is None and t >= self._next_full_t:
            # Lost: the full-sensitivity search (the original's), rate-limited while lost, and
            # between fine searches only for faces big enough to be someone at the screen.
            fine = t >= self._next_fine_t or previous is not None
            min_px = s.min_face_px if fine else round(s.lost_coarse_factor * s.min_face_px)
            faces = self._full_search(grey, min_px, lost=True)
            face = _largest(faces) if faces else None
            self._face_count = len(faces)
            self._next_full_t = t + s.lost_search_interval_s
            if fine:
                self._next_fine_t = t + s.lost_fine_interval_s
            self._next_recount_t = t + s.recount_interval_s
        elif face is not None and t >= self._next_recount_t:
            others = self._full_search(grey, self._recount_min_px(face), hide=face)
            # A face found where the tracked one was painted over is its visible remainder.
            faces = (face, *(f for f in others if not _overlaps(face, f)))
            self._face_count = len(faces)
            self._next_recount_t = t + s.recount_interval_s
            bigger = tuple(f for f in faces if f[2] >= MAIN_FACE_RATIO * face[2])
            if bigger and not any(_overlaps(face, f) for f in bigger):
                # We were following someone small in the background (the one face the cascade
                # could see when the track started): the person at the screen is the main face.
                face = _largest(bigger)
        elif face is None:
            self._face_count = 0
        if face is None:
            self._face_template = None
        elif matched and not faces:
            self._since_face_confirmed += 1
        else:
            # Found by a cascade on this frame (region, retry, full search or recount): what
            # the matching follows until the next confirmation.
            self._face_template = resize(grown(grey, face, 0.0)[2], s.face_template_px / face[2])
            self._since_face_confirmed = 0
            self._face_confirmed_at = t
        if face is None:
            self._face_since = math.inf
        elif previous is None:
            self._face_since = t
        self._face = face

        found = self._eyes.step(grey, face, t)
        eyes = found.boxes
        self._count_blinks(found.closed, t)
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
            pupils=found.pupils if face is not None else None,
            eyes_closed=found.closed,
            blinks=self._blinks,
            gaze=found.gaze,
        )

    def _count_blinks(self, closed: bool, t: float) -> None:
        """A blink is a closure after the eyes were open for ``blink_min_open_s``."""
        if closed and not self._closed and t - self._open_since >= self.settings.blink_min_open_s:
            self._blinks += 1
        if not closed and (self._closed or math.isinf(self._open_since)):
            self._open_since = t
        self._closed = closed

    # --- searches ---------------------------------------------------------------------------

    def _full_search(
        self,
        grey: NDArray[np.uint8],
        min_face_px: int,
        *,
        lost: bool = False,
        hide: Box | None = None,
    ) -> tuple[Box, ...]:
        """Every face at least ``min_face_px`` wide, in frame coordinates, except one at
        ``hide``: that part of the frame is painted flat first.

        The frame is shrunk so that ``min_face_px`` maps onto the cascade's 24 px window: the
        smallest faces are found exactly as the original found them, and no pyramid levels are
        spent on sizes below the minimum.

        Why hide: the recount looks for faces *other* than the tracked one, and nearly all of
        its cost was the tracked face itself (windows over a face run deep into the cascade's
        stages, at every pyramid level): 5.2 ms a recount on the 640x480 push frames, 1.4 ms
        with the face painted over (its mean grey, which the cascade's first stage rejects).
        """
        s = self.settings
        scale = min(1.0, FACE_WINDOW_PX / min_face_px)
        small = resize(grey, scale)
        if hide is not None:
            small = small.copy() if small is grey else small
            x0, y0, x1, y1 = clip(
                small,
                hide[0] * scale,
                hide[1] * scale,
                (hide[0] + hide[2]) * scale,
                (hide[1] + hide[3]) * scale,
            )
            region = small[y0:y1, x0:x1]
            if region.size:
                region[:] = int(region.mean())
        found = self._faces(
            small,
            s.full_scale_factor,
            s.full_min_neighbors,
            FACE_WINDOW_PX,
            None,
            equalise=lost and s.equalize_when_lost,
        )
        return tuple(unscale(box, scale, 0, 0) for box in found)

    def _recount_min_px(self, face: Box) -> int:
        return max(self.settings.min_face_px, int(self.settings.recount_min_fraction * face[2]))

    def _match_face(self, grey: NDArray[np.uint8], previous: Box) -> Box | None:
        """The face near ``previous`` by template matching (same size), or ``None`` when the
        best match correlates less than ``face_track_min_ncc``."""
        template = self._face_template
        if template is None:
            return None
        s = self.settings
        w, h = previous[2:]
        scale = s.face_template_px / w
        x0, y0, crop = grown(grey, previous, s.track_margin)
        region = resize(crop, scale)
        if region.shape[0] < template.shape[0] or region.shape[1] < template.shape[1]:
            return None  # at the frame's edge: the cascade decides
        scores = cv2.matchTemplate(region, template, cv2.TM_CCOEFF_NORMED)
        _, best, _, (bx, by) = cv2.minMaxLoc(scores)
        if best < s.face_track_min_ncc:
            return None
        return (x0 + round(bx / scale), y0 + round(by / scale), w, h)

    def _track(
        self, grey: NDArray[np.uint8], previous: Box, face_px: int, margin: float
    ) -> Box | None:
        """The face near ``previous``, searched with the face shrunk to ``face_px``, or ``None``."""
        s = self.settings
        x0, y0, crop = grown(grey, previous, margin)
        scale = face_px / previous[2]
        roi = resize(crop, scale)
        low, high = s.track_size_range
        min_px = max(FACE_WINDOW_PX, round(low * face_px))
        max_px = round(high * face_px)
        hits = self._faces(
            roi,
            s.track_scale_factor,
            s.track_min_neighbors,
            min_px,
            max_px,
            equalise=s.equalize_region,
        )
        return unscale(_largest(hits), scale, x0, y0) if hits else None

    def _faces(
        self,
        image: NDArray[np.uint8],
        scale_factor: float,
        min_neighbors: int,
        min_px: int,
        max_px: int | None,
        *,
        equalise: bool,
    ) -> tuple[Box, ...]:
        """The face cascade over ``image``; when it finds nothing and ``equalise``, once more
        over the image with its histogram equalised (a face against a bright window)."""
        largest = (max_px, max_px) if max_px is not None else (0, 0)
        found = boxes(
            self._face_cascade.detectMultiScale(
                image,
                scaleFactor=scale_factor,
                minNeighbors=min_neighbors,
                minSize=(min_px, min_px),
                maxSize=largest,
            )
        )
        if found or not equalise:
            return found
        return self._faces(
            u8(cv2.equalizeHist(image)), scale_factor, min_neighbors, min_px, max_px, equalise=False
        )


# --- small geometry helpers ---------------------------------------------------------------------


_warmed = threading.local()


def warm_up() -> None:
    """Pay the one-time costs of analysis now, once per process and once per thread: the
    kernels (numba's cache), and OpenCV's set-up of a cascade search, per process and again in
    each new thread (~20 ms each). The server runs this before it listens, and again in a new
    analysis thread before it starts a frame's clock, so that no candidate's frame is charged
    for them against its CPU budget (``--frame-cpu-budget``)."""
    if getattr(_warmed, "done", False):
        return
    kernels.warm_up()
    Tracker().process(np.zeros((480, 640), np.uint8), 0.0)
    _warmed.done = True


def _to_grey(image: NDArray[np.uint8]) -> NDArray[np.uint8]:
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return u8(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    if image.ndim == 3 and image.shape[2] == 4:
        return u8(cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY))
    raise ValueError(f"expected a grey (h, w) or BGR (h, w, 3) image, got shape {image.shape}")


def _largest(found: tuple[Box, ...]) -> Box:
    return max(found, key=lambda b: b[2] * b[3])


def _overlaps(a: Box, b: Box) -> bool:
    """True when the centre of either box lies inside the other."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return (ax <= bx + bw / 2 <= ax + aw and ay <= by + bh / 2 <= ay + ah) or (
        bx <= ax + aw / 2 <= bx + bw and by <= ay + ah / 2 <= by + bh
    )
