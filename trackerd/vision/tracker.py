"""The tracker: one frame and its timestamp in, one :class:`Observation` out. Pure, no I/O.

Where the speed comes from (docs/design.md; the figures: docs/experiments.md): the original ran
the face cascade over the whole frame at scale 1.1 for every frame. This tracker

1. converts to grey once;
2. while it follows a face, searches only a margin around the previous face box, shrunk so the
   face is close to the cascade's 24 px window, over a narrow band of sizes, and that only on
   every other frame: in between, the face is followed by template matching, far cheaper, and a
   match that weakens asks the cascade at once (:class:`trackerd.vision.track.Follower`);
3. when that misses, searches the whole frame at once (so a single miss costs one frame), then
   at most every ``lost_search_interval_s`` while the face stays lost, at full sensitivity only
   every ``lost_fine_interval_s`` and in between for faces twice the smallest size;
4. refreshes ``face_count`` and the other faces' boxes (``faces``) with a full-frame search every
   ``recount_interval_s``: the first search's, for faces at least half the tracked one's size
   (someone joining the person at the screen), with the tracked face's inside painted over; a
   face found there 1.5 times wider than the tracked one becomes the main face (the tracker had
   started on someone small in the background);
5. follows each eye in a small window at the eye cascade's native scale, with template matching
   between cascade confirmations, and finds its centre, whether it is closed, and the gaze
   (:mod:`trackerd.vision.eyes`).

The per-frame evidence becomes an *attention score* (:func:`attention_score`), which the numba
kernels smooth into ``confidence`` and turn into ``looking_away`` with hysteresis and minimum
durations measured in seconds, so a blink is never "away" at any frame rate.

A tracker is a plain per-session object: one for the shared capture, and later one per client
that pushes its own frames. It is not thread-safe (OpenCV's cascades are not): use one tracker
from one thread at a time.
"""

from __future__ import annotations

import concurrent.futures
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

import cv2
import numpy as np
from numpy.typing import NDArray

import kernels
from trackerd.vision.cascades import (
    EYE_CASCADE,
    EYEGLASSES_CASCADE,
    FACE_CASCADE,
    PROFILE_CASCADE,
    load_cascade,
    load_here,
)
from trackerd.vision.eyes import EyeSettings, EyeStage
from trackerd.vision.geometry import boxes, clip, grown, resize, u8, unscale
from trackerd.vision.head import Head, HeadSettings, Look, ProfileSearch, estimate, eye_offset
from trackerd.vision.observation import Box, Observation, Point
from trackerd.vision.track import (
    Follower,
    FollowSettings,
    State,
    check_finite,
    refuse_failed,
)
from trackerd.vision.track import (
    TrackerSettingsError as TrackerSettingsError,
)

FACE_WINDOW_PX: Final = 24
"""Native window of haarcascade_frontalface_default."""
MAIN_FACE_RATIO: Final = 1.5
"""A face this many times wider than the tracked one, found by the recount, becomes the main face:
the person at the screen, not someone small in the background."""


@dataclass(frozen=True, slots=True)
class TrackerSettings:
    """Every knob of the tracker, one line each: what it does and why its value (the
    measurements behind them: docs/experiments.md)."""

    # --- Finding faces in the whole frame -------------------------------------------------------
    min_face_px: int = 30
    """Smallest face a full search finds: the original's ``minSize``, so none it found is missed."""
    full_scale_factor: float = 1.1
    """The original's pyramid step over the whole frame: the same sensitivity."""
    full_min_neighbors: int = 5
    """The original's neighbours over the whole frame: the same false-positive rate."""
    lost_search_interval_s: float = 0.2
    """While no face is found, the full search runs at most this often: a face is back in ~0.5 s."""
    lost_fine_interval_s: float = 1.0
    """While lost, only this often down to ``min_face_px``: a bystander is found within it."""
    lost_coarse_factor: float = 2.0
    """Between fine searches, faces at least this much wider: a quarter of the pixels to search."""
    lost_hold_s: float = 0.5
    """After a loss, the face's region is searched on every frame this long: a brief hiding."""
    recount_interval_s: float = 1.0
    """While a face is tracked, a full search this often refreshes ``face_count`` and ``faces``…"""
    recount_min_fraction: float = 0.5
    """…for faces at least this fraction of the tracked face's width (bystanders at the screen)."""
    recount_hide_inset: float = 0.1
    """The recount paints the tracked face over but this fraction of its box on each side: a
    face touching it keeps its edge (dlib's 2008_007676 lost one with the whole box painted)."""

    # --- Following a face -----------------------------------------------------------------------
    track_face_px: int = 28
    """Face width in the shrunk region searched: the cascade's 24 px window and a little more."""
    track_margin: float = 0.25
    """The region is the face box grown by this on each side: a quarter-width move stays inside."""
    retry_face_px: int = 80
    """When the small search misses, one more at this face width: the cascade is surer there."""
    retry_margin: float = 0.5
    """…over this wider margin: a face that moved fast."""
    track_size_range: tuple[float, float] = (0.7, 1.4)
    """Sizes searched in the region, as fractions of the previous face width."""
    track_scale_factor: float = 1.15
    """Coarser than the full search's 1.1: the size is known to within the range above."""
    track_min_neighbors: int = 2
    """Few neighbours, as the region says where the face is; a false face is dropped in 2 frames."""
    face_confirm_every: int = 2
    """The cascade confirms the face every other frame: half the region searches, the same faces."""
    face_template_px: int = 40
    """Template matching runs with the face shrunk to this width: cheap, and enough texture."""
    face_coast_s: float = 0.4
    """A face confirmed this recently is kept on its template when the cascades miss: a blink."""
    face_coast_after_s: float = 0.5
    """…only for a face followed at least this long: a false face is not kept."""
    face_track_min_ncc: float = 0.85
    """A match below this correlation asks the cascade at once: a face that leaves is noticed."""
    equalize_region: bool = True
    """When the region search misses, search it equalised too: a face against a bright window."""
    equalize_when_lost: bool = True
    """When the full search misses, search the equalised frame too: backlit faces."""

    # --- Eyes (trackerd.vision.eyes) -------------------------------------------------------------
    eyes: EyeSettings = field(default_factory=EyeSettings)
    """The eye stage's own settings."""
    blink_min_open_s: float = 0.1
    """A closure counts as a new blink only after the eyes were open this long."""

    # --- From evidence to attention -------------------------------------------------------------
    score_face_no_eyes: float = 0.6
    """A face without eyes (a blink, glasses) scores above ``away_below``: never "away" alone."""
    score_one_eye: float = 0.85
    """One eye found (a turned head, a miss): between a face alone and both eyes."""
    score_two_eyes: float = 1.0
    """Both eyes found: full attention, before the off-centre penalty."""
    off_centre_penalty: float = 1.0
    """Score lost per face width of the eyes' offset from the face centre: a turned head."""
    confidence_tau_s: float = 0.2
    """Time constant of the confidence filter."""
    away_below: float = 0.4
    """Confidence below this for ``min_away_s`` means looking away."""
    back_above: float = 0.55
    """…and above this for ``min_back_s`` means looking back."""
    min_away_s: float = 0.25
    """A face missing for less than ~0.37 s (a blink, a hand) never flips the decision."""
    min_back_s: float = 0.1
    """A returning face is "back" ~0.25 s after it is found."""

    # --- Head turns (trackerd.vision.head) ------------------------------------------------------
    head: HeadSettings = field(default_factory=HeadSettings)
    """The head estimator's own settings."""
    max_head_yaw_deg: float = 30.0
    """A head turned further than this to either side (``--max-head-yaw``)…"""
    max_head_pitch_deg: float = 35.0
    """…or pitched down further than this (``--max-head-pitch``; why 35: docs/tracker.md)…"""
    head_turn_s: float = 1.0
    """…for this long is looking away (``--head-turn-s``), whatever the confidence."""

    def __post_init__(self) -> None:
        check_finite(self)
        refuse_failed(self._face_checks() + self._attention_checks())

    def _face_checks(self) -> list[tuple[bool, str]]:
        return [
            (self.min_face_px >= FACE_WINDOW_PX, "min_face_px must be >= 24 (the cascade window)"),
            (self.full_scale_factor > 1.0, "full_scale_factor must be > 1"),
            (self.track_scale_factor > 1.0, "track_scale_factor must be > 1"),
            (self.full_min_neighbors >= 0, "full_min_neighbors must be >= 0"),
            (self.track_min_neighbors >= 0, "track_min_neighbors must be >= 0"),
            (self.face_confirm_every >= 1, "face_confirm_every must be >= 1"),
            (self.face_template_px >= 8, "face_template_px must be >= 8"),
            (-1 <= self.face_track_min_ncc <= 1, "face_track_min_ncc must be in [-1, 1]"),
            (self.face_coast_s >= 0, "face_coast_s must be >= 0"),
            (self.face_coast_after_s >= 0, "face_coast_after_s must be >= 0"),
            (self.lost_search_interval_s >= 0, "lost_search_interval_s must be >= 0"),
            (self.recount_interval_s > 0, "recount_interval_s must be > 0"),
            (self.lost_hold_s >= 0, "lost_hold_s must be >= 0"),
            (self.lost_fine_interval_s >= 0, "lost_fine_interval_s must be >= 0"),
            (self.lost_coarse_factor >= 1, "lost_coarse_factor must be >= 1"),
            (0 < self.recount_min_fraction <= 1, "recount_min_fraction must be in (0, 1]"),
            (0 <= self.recount_hide_inset < 0.5, "recount_hide_inset must be in [0, 0.5)"),
            (self.track_face_px >= FACE_WINDOW_PX, "track_face_px must be >= 24"),
            (0 <= self.track_margin <= 2, "track_margin must be in [0, 2]"),
            (self.retry_face_px >= FACE_WINDOW_PX, "retry_face_px must be >= 24"),
            (0 <= self.retry_margin <= 2, "retry_margin must be in [0, 2]"),
            (
                0 < self.track_size_range[0] < 1 < self.track_size_range[1],
                "track_size_range must be (low < 1 < high)",
            ),
        ]

    def _attention_checks(self) -> list[tuple[bool, str]]:
        return [
            (self.blink_min_open_s >= 0, "blink_min_open_s must be >= 0"),
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
            (0 < self.max_head_yaw_deg <= 90, "max_head_yaw_deg must be in (0, 90]"),
            (0 < self.max_head_pitch_deg <= 90, "max_head_pitch_deg must be in (0, 90]"),
            (self.head_turn_s >= 0, "head_turn_s must be >= 0"),
        ]


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


class Phase(Enum):
    """Where the face track is, from which follow the searches a frame gets."""

    FOLLOWING = "following"
    """A face box: the follower's states (:class:`trackerd.vision.track.State`)."""
    HOLDING = "holding"
    """Lost at most ``lost_hold_s`` ago: the region where it was is searched on every frame."""
    SEARCHING = "searching"
    """Lost: the full-frame search, at most every ``lost_search_interval_s``."""


class Tracker:
    """Follows one main face through a sequence of frames. See the module docstring."""

    def __init__(self, settings: TrackerSettings | None = None) -> None:
        self.settings = settings or TrackerSettings()
        s = self.settings
        self._face_cascade = load_cascade(FACE_CASCADE)
        glasses = load_cascade(EYEGLASSES_CASCADE) if s.eyes.glasses else None
        self._eyes = EyeStage(s.eyes, load_cascade(EYE_CASCADE), glasses)
        self._profile = ProfileSearch(s.head, load_cascade(PROFILE_CASCADE))
        self._follow_settings = FollowSettings(
            confirm_every=s.face_confirm_every,
            template_px=s.face_template_px,
            margin=s.track_margin,
            min_ncc=s.face_track_min_ncc,
            search_from_match=False,
            coast_s=s.face_coast_s,
            coast_after_s=s.face_coast_after_s,
        )
        self.reset()

    def reset(self) -> None:
        """Forget the track and the filters' history (a new, unrelated sequence follows)."""
        self._face = Follower(self._follow_settings, self._search_near)
        self._lost_face: Box | None = None
        self._lost_at = -math.inf
        # The faces besides the main one that the last full-frame search found, as it found
        # them: reported beside the main face's current box until the next search or a loss.
        self._others: tuple[Box, ...] = ()
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
        self._look: Look | None = None
        self._profile_face: Box | None = None
        self._last_look_t = -math.inf
        self._eye_level = self.settings.head.level_eye_offset
        self._turned = False
        self._turned_since = math.nan
        self._yaw = self._pitch = math.nan
        self._head_t = math.nan

    def _phase(self, t: float) -> Phase:
        """The track's phase for a frame at ``t``, before that frame is processed."""
        if self._face.box is not None:
            return Phase.FOLLOWING
        if self._lost_face is not None and t - self._lost_at <= self.settings.lost_hold_s:
            return Phase.HOLDING
        return Phase.SEARCHING

    # --- the per-frame entry point ----------------------------------------------------------

    def process(self, image: NDArray[np.uint8], t: float) -> Observation:
        """Analyse one frame (BGR or grey) taken at ``t`` seconds. Blocking CPU work."""
        grey = _to_grey(image)
        if t < self._last_t:
            # Time went backwards: a new, unrelated sequence follows. (NaN compares False.)
            self.reset()
        dt = 0.0 if math.isnan(self._last_t) else t - self._last_t
        self._last_t = t
        face, faces = self._find_face(grey, t)
        return self._observe(grey, t, dt, face, faces)

    def _find_face(self, grey: NDArray[np.uint8], t: float) -> tuple[Box | None, tuple[Box, ...]]:
        """The main face on this frame, and every face counted: the main face's box first,
        then the others as the last full-frame search found them."""
        previous = self._face.box
        followed = self._follow(grey, t)
        # Lost: the full-sensitivity search (the original's) is due, rate-limited while lost,
        # and fine (between fine searches it looks only for faces big enough to be someone at
        # the screen). A face a fine search misses is looked for in profile over the whole frame.
        due = followed is None and t >= self._next_full_t
        fine = t >= self._next_fine_t or previous is not None
        face, faces = self._search(grey, t, followed, due, fine)
        if faces or face is None:
            self._others = tuple(f for f in faces if f != face)
        if face is not None and (faces or self._face.state is State.LOST):
            # Found by a search of the whole frame or of the lost face's region: what the
            # matching follows until the next confirmation.
            self._face.acquire(grey, face, t, fresh=previous is None)
        self._profile_face = None if face is not None else self._find_profile(grey, t, due and fine)
        face = face or self._profile_face
        return face, ((face, *self._others) if face is not None else ())

    def _find_profile(self, grey: NDArray[np.uint8], t: float, searched: bool) -> Box | None:
        """A face the frontal cascade lost, found in profile: a turned head, not an empty seat.
        Looked for where a face was moments ago (in profile, or frontal and lost at least
        ``head.profile_after_s`` ago), else over the whole frame when the fine frontal search
        there has just missed. Not followed
        by the frontal track: its region search finds the face when it turns back."""
        holding = self._phase(t) is Phase.HOLDING
        if (
            holding
            and not self._profile_face
            and t - self._lost_at < self.settings.head.profile_after_s
        ):
            return None  # the frontal search finds a face missed for a moment
        held = self._lost_face if holding else None
        around = self._profile_face or held
        if around is not None:
            look, box = self._profile.look(grey, around)
            if box is not None:
                # The hit's box takes in hair and grows from frame to frame until the face is
                # too small in the region to be found (a turned head lost in ~3 frames on the
                # Pexels clip): the region keeps its size and follows the hit's centre.
                x, y, w, h = box
                box = (x + (w - around[2]) // 2, y + (h - around[3]) // 2, around[2], around[3])
        elif searched:
            look, box = self._profile.find(grey, self.settings.head.profile_min_face_px)
        else:
            return None
        if box is None or not look.side(self.settings.head.min_neighbors):
            return None
        self._look = look
        self._lost_face, self._lost_at = box, t  # the frontal region search looks there
        return box

    def _search(
        self, grey: NDArray[np.uint8], t: float, face: Box | None, due: bool, fine: bool
    ) -> tuple[Box | None, tuple[Box, ...]]:
        """The main face and every face a full-frame search found on this frame: the lost
        search if ``due``, else the recount if it is time, else ``face`` as followed."""
        if due:
            faces = self._lost_search(grey, t, fine=fine)
            return (_largest(faces) if faces else None), faces
        if face is not None and t >= self._next_recount_t:
            return self._recount(grey, face, t)
        return face, ()

    def _follow(self, grey: NDArray[np.uint8], t: float) -> Box | None:
        """The face followed from the previous frame, or found where it was lost moments ago."""
        phase = self._phase(t)
        if phase is Phase.FOLLOWING:
            previous = self._face.box
            assert previous is not None
            if self._face.step(grey, previous, t) is State.LOST:
                self._lost_face, self._lost_at = previous, t
            return self._face.box
        if phase is Phase.HOLDING:
            # Recently lost: a blink, a hand, a sneeze. Faces come back where they were, so
            # look there on every frame rather than waiting for the rate-limited full search.
            assert self._lost_face is not None
            s = self.settings
            return self._track(grey, self._lost_face, s.retry_face_px, s.retry_margin)
        return None

    def _search_near(self, grey: NDArray[np.uint8], previous: Box) -> Box | None:
        """The face cascade around ``previous``: the small search, then the retry."""
        s = self.settings
        face = self._track(grey, previous, s.track_face_px, s.track_margin)
        if face is None:
            # The small search missed (a fast move, a turn, an odd expression): look again
            # around the same place at a resolution where the cascade is surer, before
            # calling the track lost. A few ms, paid only on the frames that need it.
            face = self._track(grey, previous, s.retry_face_px, s.retry_margin)
        return face

    def _lost_search(self, grey: NDArray[np.uint8], t: float, *, fine: bool) -> tuple[Box, ...]:
        s = self.settings
        min_px = s.min_face_px if fine else round(s.lost_coarse_factor * s.min_face_px)
        faces = self._full_search(grey, min_px, lost=True)
        self._next_full_t = t + s.lost_search_interval_s
        if fine:
            self._next_fine_t = t + s.lost_fine_interval_s
        self._next_recount_t = t + s.recount_interval_s
        return faces

    def _recount(self, grey: NDArray[np.uint8], face: Box, t: float) -> tuple[Box, tuple[Box, ...]]:
        """The faces besides the tracked one, and the main face: a much bigger one if any."""
        s = self.settings
        # Over the image the first search used (shrunk for min_face_px), from a larger size up,
        # rather than over an image shrunk for the larger size: OpenCV's cascade tries windows
        # at every pixel on pyramid levels shrunk more than twice and at every other pixel
        # below that (cascadedetect.cpp: yStep = factor > 2 ? 1 : 2), so a face up to twice
        # the minimum was tried at half the places the first search tried it, and missed (a
        # 110 px face beside a 128 px one, dlib's 2008_002506). Its price, once a second:
        # docs/experiments.md.
        others = self._full_search(
            grey, self._recount_min_px(face), hide=face, window_px=s.min_face_px
        )
        # A face found where the tracked one was painted over is its visible remainder.
        faces = (face, *(f for f in others if not _overlaps(face, f)))
        self._next_recount_t = t + s.recount_interval_s
        bigger = tuple(f for f in faces if f[2] >= MAIN_FACE_RATIO * face[2])
        if bigger and not any(_overlaps(face, f) for f in bigger):
            # We were following someone small in the background (the one face the cascade
            # could see when the track started): the person at the screen is the main face.
            face = _largest(bigger)
        return face, faces

    def _observe(
        self,
        grey: NDArray[np.uint8],
        t: float,
        dt: float,
        face: Box | None,
        faces: tuple[Box, ...],
    ) -> Observation:
        """The eyes on the face, and the frame's evidence smoothed into the decision."""
        s = self.settings
        found = self._eyes.step(grey, face, t)
        eyes = found.boxes
        head = self._head(grey, t, face, found.pupils, len(eyes))
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
            looking_away=self._away or self._turned,
            confidence=min(1.0, max(0.0, self._confidence)),
            face_count=len(faces),
            face=face,
            eyes=eyes,
            faces=faces,
            attention=score,
            pupils=found.pupils if face is not None else None,
            eyes_closed=found.closed,
            blinks=self._blinks,
            gaze=found.gaze,
            head=None if head is None else (head.yaw_deg, head.pitch_deg),
            head_turned=self._turned,
        )

    def _head(
        self,
        grey: NDArray[np.uint8],
        t: float,
        face: Box | None,
        pupils: tuple[Point | None, Point | None],
        eye_count: int,
    ) -> Head | None:
        """The head's pose, and whether it has been turned past the limits for
        ``head_turn_s``. The profile cascade looks only while the frontal track is weak
        (coasting, an eye missing), every ``look_interval_s`` (a look costs several times a
        followed frame; between looks the last one stands): a strong track's yaw is its eyes'."""
        s = self.settings
        profile_only = face is not None and face == self._profile_face
        weak = self._face.state not in (State.CONFIRMED, State.MATCHED) or eye_count < 2
        dt = t - self._head_t
        if face is None:
            self._look = None
        elif weak and not profile_only and t >= self._last_look_t + s.head.look_interval_s:
            self._look, _ = self._profile.look(grey, face)
            self._last_look_t = t
        offset = None if face is None or weak else eye_offset(face, pupils)
        if offset is not None:
            # This person's frontal offset, over the minutes they face the screen (the
            # default's is the Yale faces' median; faces and the cascade's boxes differ).
            level = kernels.ema_step(self._eye_level, offset, dt, s.head.level_tau_s)
            default, most = s.head.level_eye_offset, s.head.max_level_shift
            self._eye_level = max(default - most, min(default + most, level))
        look = self._look if weak or profile_only else None
        head = self._smooth(
            estimate(
                s.head, face, pupils, look, profile_only=profile_only, eye_level=self._eye_level
            ),
            dt,
        )
        self._head_t = t
        self._turned = self._turned_for_long(head, t)
        return head

    def _turned_for_long(self, head: Head | None, t: float) -> bool:
        """Whether the head has been past ``max_head_yaw_deg`` or pitched down past
        ``max_head_pitch_deg`` since at least ``head_turn_s`` ago."""
        s = self.settings
        past = head is not None and (
            abs(head.yaw_deg) > s.max_head_yaw_deg or -head.pitch_deg > s.max_head_pitch_deg
        )
        if not past:
            self._turned_since = math.nan
        elif math.isnan(self._turned_since):
            self._turned_since = t
        return past and t - self._turned_since >= s.head_turn_s

    def _smooth(self, head: Head | None, dt: float) -> Head | None:
        """Each frame's estimate flickers by ~10 degrees (a look's hits come and go, the eyes'
        height moves with expressions): yaw and pitch are smoothed with ``head.tau_s``."""
        if head is None:
            self._yaw = self._pitch = math.nan
            return None
        tau = self.settings.head.tau_s
        self._yaw = kernels.ema_step(self._yaw, float(head.yaw_deg), dt, tau)
        self._pitch = kernels.ema_step(self._pitch, float(head.pitch_deg), dt, tau)
        return Head(round(self._yaw), round(self._pitch))

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
        window_px: int | None = None,
    ) -> tuple[Box, ...]:
        """Every face at least ``min_face_px`` wide, in frame coordinates, except one at
        ``hide``: the inside of that box is painted flat first.

        The frame is shrunk so that ``window_px`` (by default ``min_face_px``) maps onto the
        cascade's 24 px window: at ``min_face_px`` the smallest faces are found exactly as the
        original found them, and no pyramid levels are spent on sizes below the minimum.

        Why hide: the recount looks for faces *other* than the tracked one, and nearly all of
        its cost was the tracked face itself (windows over a face run deep into the cascade's
        stages, at every pyramid level); painted over with its mean grey, the face is rejected
        by the cascade's first stage. Its rim (``recount_hide_inset``) is left: a face beside
        it is found with its own edges.
        """
        s = self.settings
        scale = min(1.0, FACE_WINDOW_PX / (window_px or min_face_px))
        small = resize(grey, scale)
        if hide is not None:
            small = small.copy() if small is grey else small
            x, y, w, h = hide
            inset = s.recount_hide_inset
            x0, y0, x1, y1 = clip(
                small,
                (x + inset * w) * scale,
                (y + inset * h) * scale,
                (x + (1 - inset) * w) * scale,
                (y + (1 - inset) * h) * scale,
            )
            region = small[y0:y1, x0:x1]
            if region.size:
                region[:] = int(region.mean())
        found = self._faces(
            small,
            s.full_scale_factor,
            s.full_min_neighbors,
            max(FACE_WINDOW_PX, round(min_face_px * scale)),
            None,
            equalise=lost and s.equalize_when_lost,
        )
        return tuple(unscale(box, scale, 0, 0) for box in found)

    def _recount_min_px(self, face: Box) -> int:
        return max(self.settings.min_face_px, int(self.settings.recount_min_fraction * face[2]))

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
_process_warmed = threading.Lock()
_process_done = False


def warm_up() -> None:
    """Pay the one-time costs of analysis now: once per process, the kernels (numba's cache)
    and OpenCV's set-up of a cascade search; once per thread, this thread's classifiers of
    the cascades. The server runs this before it listens, and again in a new analysis thread
    before it starts a frame's clock, so that no candidate's frame is charged for them against
    its CPU budget (``--frame-cpu-budget``)."""
    global _process_done
    if getattr(_warmed, "done", False):
        return
    tracker = Tracker()  # loads the default cascades, once per process
    with _process_warmed:
        if not _process_done:
            kernels.warm_up()
            tracker.process(np.zeros((480, 640), np.uint8), 0.0)
            _process_done = True
    # Not a search per thread: a thread's first search costs no more than its second, but
    # its classifiers are built on first use (the eye cascade's only once a face is found).
    load_here()
    _warmed.done = True


def warm_up_soon() -> Callable[[], None]:
    """:func:`warm_up` on a thread of its own, started now; returns what waits for it and
    raises what it raised. ``trackerd`` starts it before it imports its network side, ~0.15 s
    of Python holding the GIL, which the cascades' parsing and the first search (both release
    the GIL) then overlap on another core."""
    done: concurrent.futures.Future[None] = concurrent.futures.Future()

    def work() -> None:
        try:
            warm_up()
        except Exception as exc:  # not lost: raised again by whoever waits for it
            done.set_exception(exc)
        else:
            done.set_result(None)

    threading.Thread(target=work, name="warm-up", daemon=True).start()
    return done.result


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
