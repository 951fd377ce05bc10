"""Head pose, coarse: yaw and pitch in whole degrees from what the Haar pipeline sees. Pure, no I/O.

Conventions (those of AFLW2000's labels): yaw > 0 when the face points toward the image's
right, pitch > 0 when the chin is up.

The method, and why each cue:

- **Yaw, the eyes**, while the frontal track is strong (confirmed or matched, both eyes): no
  cascade runs for it. The pupils' midpoint off the face box's centre, in eye distances
  (:func:`eye_offset`), moves by ``eye_offset_gain`` per unit of ``sin(yaw)`` from the person's
  level: ``asin((offset - level) / gain)``, up to ``max_frontal_yaw_deg``. The frontal box
  follows the features as the head turns, so the cue is weak and noisy (~0.06 frame to frame,
  ~12 degrees, before smoothing), and people's levels differ (spread 0.035 over 15 ZJU clips;
  single_face.mp4's man: -0.10). So the level starts at ``level_eye_offset`` and follows this
  person's offset over ``level_tau_s`` while the track is strong, at most ``max_level_shift``
  from it: a webcam's user faces the screen most of the time.
- **Yaw, the profile cascade**, only while the frontal track is weak (coasting, an eye
  missing), every ``look_interval_s`` (a look costs several times a followed frame).
  ``haarcascade_profileface`` finds faces turned toward one side only: it fires on the image
  while the face points to the image's left, and on the mirrored image while it points right
  (the Pexels clip by eye, tests/data/head_segments.json; AFLW 00251, a right profile, by the
  shared data's README).
  So :class:`ProfileSearch` runs it on the face's region (shrunk so the face is ``look_face_px``
  wide) and on that region's mirror. A grouped hit with at least ``min_neighbors`` on one side
  only says the head is turned that way; the more neighbours (overlapping windows that accepted
  it), the more turned: ``min_yaw_deg`` at the threshold, ``deg_per_neighbour`` more each, up to
  ``max_frontal_yaw_deg`` while the frontal cascade still finds the face (it finds faces turned
  up to ~45 degrees). Hits on both sides, or on neither, say nothing about the side: the eyes'
  yaw stands, if both are found, else 0.
- **Yaw, a face only the profile cascade finds** (the frontal track lost it): turned past the
  frontal cascade's range, ``profile_yaw_deg``.
- **Yaw, one eye missing** says nothing: the far eye should be lost first, but turning toward
  the missing eye's side by 20 degrees put 3 more AFLW photos on the wrong side (tried once
  there and dropped: not a result to report).
- **Pitch, the eyes' height in the face box.** The frontal cascade's box spans brows to mouth;
  with the chin down the eyes sit lower in it, with the chin up higher. Level is the median
  height on frontal Yale faces (0.395 of the box), ``deg_per_height`` per unit of box height.
- **The face box's aspect** carries nothing: both cascades (24x24 and 20x20 windows) return
  square boxes, whatever the pose.

What was tuned on what (no figure is reported on the frames it was tuned on): the level eye
height on 34 frontal Yale faces (every third file); the level eye offset on 23 frontal Yale
faces (every fourth file from the second; 15 frontal ZJU clips, every second, agree: -0.012);
the profile cascade's scale, neighbours and the degrees per neighbour, the pitch gain, the eye
offset's gain and ``level_tau_s`` (of 3, 5, 10, 20 s, the most frames on their side) on the
Pexels clip's frames 0-131 and 300-471, by eye (frontal 40-90 and 300-345, ~22 degrees toward
the image's right 355-399). Reported: the 16 AFLW2000 photos, the clip's frames 132-299
(benchmarks/head.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from trackerd.vision.cascades import Cascade
from trackerd.vision.geometry import Box, grown, resize, u8, unscale
from trackerd.vision.observation import Point
from trackerd.vision.track import check_finite, refuse_failed

PROFILE_WINDOW_PX = 20
"""Native window of haarcascade_profileface."""


@dataclass(frozen=True, slots=True)
class HeadSettings:
    """The head estimator's knobs, one line each (the method: the module docstring)."""

    look_face_px: int = 36
    """Face width in the region the profile cascade looks at: at 28 px the turned frames of the
    Pexels clip got half as many hits; 48 px cost twice as much for no clearer side."""
    look_margin: float = 0.3
    """The region is the face box grown by this on each side: a profile is off-centre in it."""
    look_scale_factor: float = 1.1
    """The profile cascade's pyramid step in the region."""
    min_neighbors: int = 5
    """A side's hit counts with at least this many neighbours: at 3, single frontal frames of
    the clip got hits on one side."""
    look_interval_s: float = 0.25
    """While the frontal track is weak (coasting, an eye missing) the cascade looks this often:
    a turn is followed at a quarter of a look's cost per frame (every frame cost 3-7 ms a frame
    more on the Pexels clip, in the same run), and the estimate is smoothed over ``tau_s``
    anyway. A strong track is not looked at: its yaw is the eyes'."""
    level_eye_offset: float = -0.02
    """The pupils' midpoint off the face box's centre, in eye distances, on a frontal face: the
    median on 23 frontal Yale faces (every fourth file, from the second)."""
    level_tau_s: float = 10.0
    """This person's level offset is followed over this time while the track is strong (a
    webcam's user faces the screen most of the time)…"""
    max_level_shift: float = 0.1
    """…up to this far from ``level_eye_offset`` (~20 degrees): a long turn does not become
    the level."""
    eye_offset_gain: float = 0.3
    """…and how far it moves per unit of ``sin(yaw)``: 0.12 between the Pexels clip's frontal
    frames 300-345 and 40-90 and its turn toward the image's right, frames 355-399 (~22 degrees
    by eye)."""
    tau_s: float = 0.3
    """Time constant over which yaw and pitch are smoothed (a look's hits come and go)."""
    min_yaw_deg: float = 20.0
    """Yaw at a hit of exactly ``min_neighbors``: where the profile cascade starts to fire."""
    deg_per_neighbour: float = 1.5
    """…and this much more per neighbour beyond it."""
    max_frontal_yaw_deg: float = 45.0
    """The most yaw said while the frontal cascade still finds the face: its range."""
    profile_yaw_deg: float = 60.0
    """A face only the profile cascade finds: past the frontal cascade's range."""
    level_eye_height: float = 0.395
    """Eyes' centre height in a frontal box, as a fraction of it, on a level head."""
    deg_per_height: float = 430.0
    """Pitch per unit of the eyes' height off level (0.08 of the box between the clip's
    chin-down and chin-up frames, ~35 degrees apart by eye)."""
    profile_min_face_px: int = 80
    """A lost face is looked for over the whole frame in profile only this big: someone at the
    screen. With ``find_scale_factor`` a search costs ~1/4 of one down to 60 px at 1.1 (~35 ms
    on a loaded 640x480 frame, once a second while no face is found)."""
    find_scale_factor: float = 1.2
    """The pyramid step of that search: a face at the screen is big, the step need not be fine."""
    profile_after_s: float = 0.2
    """A frontal face lost this recently is not looked for in profile: the frontal search
    around where it was finds a face missed for a moment (glasses' glare, a hand) again, and a
    profile hit there moved the frontal track off the face on a zju-dev clip (eye recall
    98.48 % -> 98.41 % on subjects 16-20). A head turned past the frontal cascade's range stays
    lost longer."""

    def __post_init__(self) -> None:
        check_finite(self)
        refuse_failed(
            [
                (self.look_face_px >= PROFILE_WINDOW_PX, "look_face_px must be >= 20"),
                (0 <= self.look_margin <= 2, "look_margin must be in [0, 2]"),
                (self.look_scale_factor > 1.0, "look_scale_factor must be > 1"),
                (self.min_neighbors >= 1, "min_neighbors must be >= 1"),
                (self.look_interval_s >= 0, "look_interval_s must be >= 0"),
                (-1 < self.level_eye_offset < 1, "level_eye_offset must be in (-1, 1)"),
                (self.eye_offset_gain > 0, "eye_offset_gain must be > 0"),
                (self.level_tau_s >= 0, "level_tau_s must be >= 0"),
                (0 <= self.max_level_shift < 1, "max_level_shift must be in [0, 1)"),
                (self.tau_s >= 0, "tau_s must be >= 0"),
                (
                    0 <= self.min_yaw_deg <= self.max_frontal_yaw_deg <= 90,
                    "need 0 <= min_yaw_deg <= max_frontal_yaw_deg <= 90",
                ),
                (0 <= self.profile_yaw_deg <= 90, "profile_yaw_deg must be in [0, 90]"),
                (self.deg_per_neighbour >= 0, "deg_per_neighbour must be >= 0"),
                (0 < self.level_eye_height < 1, "level_eye_height must be in (0, 1)"),
                (self.profile_min_face_px >= PROFILE_WINDOW_PX, "profile_min_face_px >= 20"),
                (self.find_scale_factor > 1.0, "find_scale_factor must be > 1"),
                (self.profile_after_s >= 0, "profile_after_s must be >= 0"),
            ]
        )


@dataclass(frozen=True, slots=True)
class Look:
    """The profile cascade's strongest hit on the image and on its mirror (neighbours; 0: none)."""

    left: int
    """On the image: a face pointing toward the image's left."""
    right: int
    """On the mirror: a face pointing toward the image's right."""

    def side(self, min_neighbors: int) -> int:
        """+1 turned toward the image's right, -1 left, 0 neither or both."""
        right, left = self.right >= min_neighbors, self.left >= min_neighbors
        return int(right) - int(left)


@dataclass(frozen=True, slots=True)
class Head:
    yaw_deg: int
    pitch_deg: int


def estimate(
    settings: HeadSettings,
    face: Box | None,
    pupils: tuple[Point | None, Point | None] | None,
    look: Look | None,
    *,
    profile_only: bool = False,
    eye_level: float | None = None,
) -> Head | None:
    """The head's pose from the frame's evidence (the method: the module docstring): ``face``
    the box followed, ``look`` the profile cascade's, if it looked, ``profile_only`` when only
    the profile cascade found the face, ``eye_level`` this person's frontal :func:`eye_offset`
    (``level_eye_offset`` if not given). ``None`` without a face, or with neither a look nor
    both pupils."""
    if face is None:
        return None
    s = settings
    offset = eye_offset(face, pupils)
    if look is None and offset is None and not profile_only:
        return None
    yaw = 0.0
    pitch = 0.0
    if offset is not None:
        assert pupils is not None and pupils[0] is not None and pupils[1] is not None
        level = s.level_eye_offset if eye_level is None else eye_level
        sine = (offset - level) / s.eye_offset_gain
        yaw = math.degrees(math.asin(max(-1.0, min(1.0, sine))))
        yaw = max(-s.max_frontal_yaw_deg, min(s.max_frontal_yaw_deg, yaw))
        height = ((pupils[0][1] + pupils[1][1]) / 2 - face[1]) / face[3]
        pitch = s.deg_per_height * (s.level_eye_height - height)
    if look is not None:
        side = look.side(s.min_neighbors)
        if profile_only:
            yaw = side * s.profile_yaw_deg
        elif side:
            strongest = look.right if side > 0 else look.left
            extra = s.deg_per_neighbour * (strongest - s.min_neighbors)
            yaw = side * min(s.max_frontal_yaw_deg, s.min_yaw_deg + extra)
    return Head(round(yaw), round(max(-90.0, min(90.0, pitch))))


def eye_offset(face: Box, pupils: tuple[Point | None, Point | None] | None) -> float | None:
    """The pupils' midpoint off the face box's centre, in eye distances (> 0 toward the image's
    right); ``None`` without both pupils. It moves by ``eye_offset_gain`` per unit of
    ``sin(yaw)``."""
    left, right = pupils or (None, None)
    if left is None or right is None or right[0] <= left[0]:
        return None
    lx, rx = left[0], right[0]
    return ((lx + rx) / 2 - (face[0] + face[2] / 2)) / (rx - lx)


class ProfileSearch:
    """The profile cascade on the image and on its mirror: in a face's region (:meth:`look`),
    or over the whole frame for a face the frontal cascade lost (:meth:`find`)."""

    def __init__(self, settings: HeadSettings, cascade: Cascade) -> None:
        self.settings = settings
        self._cascade = cascade

    def look(self, grey: NDArray[np.uint8], face: Box) -> tuple[Look, Box | None]:
        """The strongest hit on each side around ``face``, and the box of the stronger one."""
        s = self.settings
        x0, y0, crop = grown(grey, face, s.look_margin)
        scale = s.look_face_px / face[2]
        roi = resize(crop, scale)
        largest = round(1.5 * s.look_face_px)
        left = self._strongest(roi, largest)
        right = self._strongest(u8(cv2.flip(roi, 1)), largest)
        look = Look(left[1], right[1])
        best = left if look.left >= look.right else right
        box = best[0]
        if box is not None and best is right:
            box = (roi.shape[1] - box[0] - box[2], box[1], box[2], box[3])
        return look, None if box is None else unscale(box, scale, x0, y0)

    def find(self, grey: NDArray[np.uint8], min_face_px: int) -> tuple[Look, Box | None]:
        """A face in profile anywhere in the frame, at least ``min_face_px`` wide."""
        scale = min(1.0, PROFILE_WINDOW_PX / min_face_px)
        small = resize(grey, scale)
        step = self.settings.find_scale_factor
        left = self._strongest(small, 0, step)
        right = self._strongest(u8(cv2.flip(small, 1)), 0, step)
        look = Look(left[1], right[1])
        best = left if look.left >= look.right else right
        box = best[0]
        if box is None or max(look.right, look.left) < self.settings.min_neighbors:
            return look, None
        if best is right:
            box = (small.shape[1] - box[0] - box[2], box[1], box[2], box[3])
        return look, unscale(box, scale, 0, 0)

    def _strongest(
        self, image: NDArray[np.uint8], largest: int, step: float | None = None
    ) -> tuple[Box | None, int]:
        """The grouped hit with the most neighbours (grouping at 1: every group is reported
        with its count, and :class:`Look` applies the threshold)."""
        if image.shape[0] < PROFILE_WINDOW_PX or image.shape[1] < PROFILE_WINDOW_PX:
            return None, 0
        found, counts = self._cascade.classifier().detectMultiScale2(
            image,
            scaleFactor=step or self.settings.look_scale_factor,
            minNeighbors=1,
            minSize=(PROFILE_WINDOW_PX, PROFILE_WINDOW_PX),
            maxSize=(largest, largest),
        )
        if len(found) == 0:
            return None, 0
        i = int(np.argmax(counts))
        x, y, w, h = (int(v) for v in found[i])
        return (x, y, w, h), int(counts[i])
