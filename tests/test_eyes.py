"""The eye stage on real annotated webcam clips (ZJU eyeblink, ../shared/data/zju-dev), next to the
original server's approach on the same frames.

A subset keeps most tests short: one clip per subject, alternating with and without glasses and
the camera from below (10 of the 40). trackerd runs over every frame (it must, to track); the
original over every second frame of the same clips, and both are scored on the frames the
original saw. ``python -m benchmarks tracker`` scores all 40 clips and every frame, and prints the
same figures; docs/performance.md quotes those. Closed eyes and blinks run all 40 clips twice
(~40 s), as ``python -m benchmarks.crossval`` does: tuned on one half of the subjects, held out
on the other. Each test prints its figures (``pytest -s``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import cv2
import numpy as np
from numpy.typing import NDArray

from benchmarks import crossval, zju
from benchmarks.zju import iou
from tests.media import shared
from trackerd.vision.eyes import EyeSettings
from trackerd.vision.tracker import Tracker

SUBSET = (
    "000011M_FBN",
    "000012M_FNN",
    "000013F_FTN",
    "000014F_UNN",
    "000015F_FBN",
    "000016F_FNN",
    "000017F_FTN",
    "000018M_UNN",
    "000019F_FBN",
    "000020F_FTN",
)
ORIGINAL_EVERY = 2


@cache
def clips() -> tuple[zju.Clip, ...]:
    folder = shared("zju-dev")
    return tuple(zju.load(name, folder) for name in SUBSET)


@cache
def scores() -> tuple[zju.Score, zju.Score]:
    """(trackerd, original) over the subset, on the frames the original saw."""
    cv2.setNumThreads(1)
    ours, theirs = zju.Score(), zju.Score()
    for clip in clips():
        results = zju.run_trackerd(clip, Tracker())
        original = zju.run_original(clip, every=ORIGINAL_EVERY)
        sampled = [r if o is not None else None for r, o in zip(results, original, strict=True)]
        ours.add(zju.score_clip(clip, sampled))
        theirs.add(zju.score_clip(clip, original))
    print(f"\n{'':12} {'trackerd':>9} {'original':>9}")
    for key, value in ours.summary().items():
        print(f"{key:22} {value:>9.3f} {theirs.summary()[key]:>9.3f}")
    return ours, theirs


def _eye_strip(image: NDArray[np.uint8], label: zju.Label) -> NDArray[np.float32]:
    """Both eyes' middles at the annotated corners, side by side, at 16x8 each."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    strips = []
    for (ax, ay), (bx, by) in label.corners:
        w = max(4.0, abs(bx - ax))
        x0, y0 = round((ax + bx) / 2 - w / 2), round((ay + by) / 2 - w / 4)
        crop = grey[y0 : y0 + max(2, int(w / 2)), x0 : x0 + int(w)]
        strips.append(cv2.resize(crop, (16, 8), interpolation=cv2.INTER_AREA))
    return np.hstack(strips).astype(np.float32)


def _contrast(
    strips: list[NDArray[np.float32]], open_: list[int], closed: list[int], shift: int
) -> float:
    """How much further the closed lines' strips are from the open ones' median look than the
    open ones are, with the pictures taken ``shift`` frames away from their lines."""
    op = [i + shift for i in open_ if 0 <= i + shift < len(strips)]
    cl = [i + shift for i in closed if 0 <= i + shift < len(strips)]
    median = np.median([strips[i] for i in op], axis=0)
    far = [float(np.abs(s - median).mean()) for s in strips]
    return float(np.mean([far[i] for i in cl]) / np.mean([far[i] for i in op]))


def test_the_labels_line_up_with_the_pictures() -> None:
    """The clips' Indeo chunks include 2-byte repeats, which the decoder skips, and some clips
    have unannotated chunks at the start (benchmarks.zju.load). Paired in decoding order, blinks
    landed up to 12 frames away from the closed eyes. Here the closed lines must be where the
    eyes look least like the clip's open eyes: shifting the pictures by up to 8 frames against
    the lines must not beat the pairing by more than 2 frames (in decoding order: 5 of the 9
    clips with blinks missed by 4 to 8 frames)."""
    for clip in clips():
        tag_lines = len(zju.parse_tag((shared("zju-dev") / f"{clip.name}.tag").read_text())[0])
        assert len(clip.images) == len(clip.labels) == tag_lines, clip.name
        closed, open_ = clip.closed_frames(), clip.open_frames()
        if not closed:
            continue
        strips = [_eye_strip(i, lab) for i, lab in zip(clip.images, clip.labels, strict=True)]
        best = max(range(-8, 9), key=lambda shift: _contrast(strips, open_, closed, shift))
        assert abs(best) <= 2, f"{clip.name}: closed lines fit the pictures {best} frames away"


def test_eyes_are_found_at_least_as_often_as_by_the_original_with_few_false_boxes() -> None:
    ours, theirs = scores()
    assert ours.open_frames >= 300, "enough open-eye frames to say anything"
    assert ours.recall >= theirs.recall
    assert ours.false_per_frame <= 0.05
    assert ours.both_rate >= theirs.both_rate


def test_eye_centres_are_closer_than_the_originals_eye_boxes() -> None:
    """e is the worse eye's error over the distance between the eyes (Timm & Barth's measure),
    against the corners' midpoint; the original has no centres, so its boxes' centres stand in.
    The paper's BioID figures (82.5 % within 0.05, 93.4 % within 0.10) are the anchor, not met
    here on 320x240 webcam frames: see docs/performance.md."""
    ours, theirs = scores()
    assert ours.e005 >= theirs.e005 and ours.e010 >= theirs.e010


def test_closed_eyes_are_reported_more_on_closed_frames_than_on_open_ones() -> None:
    """The eye's own look, not a missing cascade hit (see trackerd.vision.eyes), on the subset."""
    ours, _ = scores()
    assert ours.closed_frames >= 50
    assert ours.closed_recall > ours.open_said_closed_rate


@cache
def held_out() -> tuple[crossval.Row, ...]:
    """``python -m benchmarks.crossval``'s rows for today's settings, on all 40 clips (~40 s):
    ``closed_score`` chosen on subjects 11-15 by its rule, reported on 16-20, and the other way
    round."""
    cv2.setNumThreads(1)
    folder = shared("zju-dev")
    clips = [zju.load(name, folder) for name in zju.names(folder)]
    eyes = EyeSettings()
    rows = crossval.cross_validate([crossval.record(c, eyes) for c in clips], eyes, "trackerd")
    for row in rows:
        print(f"\nheld out {row.held_out}:", row.score.summary(), row.blinks.summary())
    return tuple(rows)


HELD_OUT_FLOORS = {"11-15": (0.77, 0.02, 0.80, 0.14), "16-20": (0.85, 0.01, 0.90, 0.06)}
"""Per held-out half: closed on closed frames at least, on open frames at most, blinks found at
least, false counts at most; a little under ``benchmarks.crossval``'s figures (79.8 % / 1.5 %,
blinks 84 % / 10.6 %; 87.7 % / 0.3 %, blinks 95 % / 3.2 %). The decision before issue 23, its
threshold chosen by the same rule, fails them: 76.4 % / 2.4 %, blinks 74 % / 24.5 %; 66.4 % /
0.0 %, blinks 76 % / 2.0 %."""


def test_closed_eyes_hold_on_people_the_threshold_never_saw() -> None:
    """Issue 23: the threshold is chosen on one half of the subjects and must hold on the other,
    both ways round. The aim, >= 85 % of closed frames at <= 3 % of open ones, is met held out on
    16-20, not on 11-15."""
    for row in held_out():
        closed, open_, _, _ = HELD_OUT_FLOORS[row.held_out]
        assert row.score.closed_frames >= 150 and row.score.open_frames >= 1200
        assert row.score.closed_recall >= closed, row.held_out
        assert row.score.open_said_closed_rate <= open_, row.held_out


def test_blinks_are_counted_on_people_the_threshold_never_saw() -> None:
    """A count is a closure after open eyes (TrackerSettings.blink_min_open_s); it finds a
    labelled blink within zju.BLINK_SLACK_FRAMES of it, else it is a false count."""
    for row in held_out():
        _, _, found, false = HELD_OUT_FLOORS[row.held_out]
        assert row.blinks.labelled >= 40
        assert row.blinks.found_rate >= found, row.held_out
        assert row.blinks.false_rate <= false, row.held_out


def test_gaze_is_in_range_and_mostly_central_on_people_facing_the_camera() -> None:
    for clip in clips()[:3]:
        tracker = Tracker()
        gazes = [tracker.process(i, t).gaze for i, t in zip(clip.images, clip.times, strict=True)]
        seen = [g for g in gazes if g is not None]
        assert len(seen) >= 0.8 * len(gazes)
        assert all(-1.0 <= gx <= 1.0 and -1.0 <= gy <= 1.0 for gx, gy in seen)
        assert sum(abs(gx) < 0.5 for gx, _ in seen) >= 0.8 * len(seen)


def test_the_region_search_finds_low_resolution_faces_without_the_retry() -> None:
    """On these 320x240 webcam faces (~100 px wide, shrunk to 28 px in the region search) the
    region search must find the followed face on its own at least 85 % of the time on frames
    with open eyes: each miss costs a retry at 80 px, ~2.1 ms, more than a whole tracked frame.
    (In a blink the face cascade misses at any size; the face is then kept by its template.)
    Measured on the frames in annotation order: 87.6 % with 2 neighbours, 86.6 % with the full
    search's 3 (on the frames in decoding order, before the labels were lined up: 90 and 83 %)."""
    found = asked = 0
    for clip in clips():
        tracker = Tracker()
        open_ = set(clip.open_frames())
        now_open = [False]

        def counted(
            grey: object,
            previous: object,
            face_px: int,
            margin: float,
            search: Callable[..., object] = tracker._track,
            small: int = tracker.settings.track_face_px,
            now_open: list[bool] = now_open,
        ) -> object:
            nonlocal found, asked
            result = search(grey, previous, face_px, margin)
            if face_px == small and now_open[0]:
                asked += 1
                found += result is not None
            return result

        tracker._track = counted  # type: ignore[method-assign, assignment]
        for i, (image, t) in enumerate(zip(clip.images, clip.times, strict=True)):
            now_open[0] = i in open_
            tracker.process(image, t)
    print(f"\nregion search found the face {found} of {asked} times")
    assert asked >= 300
    assert found >= 0.85 * asked


def test_the_main_face_is_followed_in_a_backlit_clip_with_a_face_behind() -> None:
    """000017F_FTN (issue 14): glasses, bangs, a bright window and a second, small face in the
    background. The person at the screen is found by the equalised search and must then be
    followed, not found and lost every few frames (and never swapped for the face behind)."""
    clip = next(c for c in clips() if c.name == "000017F_FTN")
    tracker = Tracker()
    on_main = on_other = 0
    for image, t, label in zip(clip.images, clip.times, clip.labels, strict=True):
        face = tracker.process(image, t).face
        if face is not None:
            on_main += iou(face, label.face) > 0.3
            on_other += iou(face, label.face) <= 0.3
    frames = len(clip.images)
    print(f"\n000017F_FTN: main face on {on_main} of {frames} frames, another on {on_other}")
    assert on_main >= 0.8 * frames
    assert on_other == 0
