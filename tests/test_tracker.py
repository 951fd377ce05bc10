"""The tracker on real footage: accuracy floors against the original server's approach.

These are floors, not targets: no threshold here was tuned to a single file. The clips are real
recordings (tests/data/SOURCE.txt); Yale and dlib/VOC photos are read from ../shared/data.
"""

from __future__ import annotations

import itertools
import math
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.original import Original
from tests.media import DATA, frames, shared
from trackerd.sources import Frame, demo_clip_path, open_source
from trackerd.vision.cascades import CascadeError, load_cascade
from trackerd.vision.geometry import resize
from trackerd.vision.images import decode_grey
from trackerd.vision.observation import Box, Observation
from trackerd.vision.tracker import Tracker, TrackerSettings, TrackerSettingsError, attention_score


@cache
def clip(name: str) -> tuple[Frame, ...]:
    return tuple(frames(DATA / name))


@cache
def tracked(name: str) -> tuple[Observation, ...]:
    tracker = Tracker()
    return tuple(tracker.process(f.image, f.t) for f in clip(name))


@cache
def original() -> Original:
    return Original()


def run(frames_: list[Frame] | tuple[Frame, ...]) -> list[Observation]:
    tracker = Tracker()
    return [tracker.process(f.image, f.t) for f in frames_]


def fraction(values: list[bool]) -> float:
    return sum(values) / len(values)


# --- finding the face ---------------------------------------------------------------------------


def test_single_face_clip_face_in_at_least_98_percent_and_no_fewer_than_original() -> None:
    ours = [o.face_detected for o in tracked("single_face.mp4")]
    theirs = [original().analyse(f.image).face_detected for f in clip("single_face.mp4")]
    assert fraction(ours) >= 0.98
    assert sum(ours) >= sum(theirs)


def test_pexels_clip_face_in_at_least_97_percent_and_no_fewer_than_original() -> None:
    """She turns her head and pulls faces. The original costs ~85 ms a frame here, so it is
    compared on every third frame; the tracker ran over all of them, as it must to track."""
    pexels = demo_clip_path()  # the Pexels clip is the demo's first 472 frames (data/SOURCE.txt)
    tracker = Tracker()
    observations = [tracker.process(f.image, f.t) for f in frames(pexels)[:472]]
    sampled = range(0, len(observations), 3)
    theirs = [bool(original().faces(frames_at(pexels, i))) for i in sampled]
    ours = [observations[i].face_detected for i in sampled]
    assert fraction([o.face_detected for o in observations]) >= 0.97
    assert sum(ours) >= sum(theirs)


@cache
def _all_frames(path: Path) -> tuple[Frame, ...]:
    return tuple(frames(path))


def frames_at(path: Path, index: int) -> np.ndarray:
    return _all_frames(path)[index].image


def test_no_face_animation_has_no_tracked_face_most_of_the_time() -> None:
    observations = tracked("no_face.mp4")
    assert fraction([o.face_detected for o in observations]) <= 0.05
    assert all(o.looking_away for o in observations[len(observations) // 4 :])


def test_a_false_face_in_the_animation_is_never_followed_for_long() -> None:
    """The cartoon pushed as JPEGs, as a browser would, at 13 frame timings (seeded, 12-36 fps
    with jitter): whatever the timing, the lost search may find a false face now and then, but
    the region search must not keep following it. With one neighbour in the region search, one
    of these timings (0.084 s a frame) showed a face on 16 of the 95 frames; with two, 2."""
    images = [
        decode_grey(cv2.imencode(".jpg", f.image, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()).grey
        for f in clip("no_face.mp4")
    ]
    rng = np.random.default_rng(7)
    worst = 0
    for _ in range(13):
        step = rng.uniform(1 / 30, 0.12)
        tracker, t, seen = Tracker(), 0.0, 0
        for image in images:
            t += step * (1 + rng.uniform(-0.5, 0.5))
            seen += tracker.process(image, t).face is not None
        worst = max(worst, seen)
    assert worst <= 0.05 * len(images), f"a false face on {worst} of {len(images)} frames"


def test_face_box_and_eyes_are_in_frame_coordinates() -> None:
    for frame, o in zip(clip("single_face.mp4"), tracked("single_face.mp4"), strict=True):
        h, w = frame.image.shape[:2]
        assert o.face is not None
        x, y, fw, fh = o.face
        assert x >= 0 and y >= 0 and x + fw <= w + 1 and y + fh <= h + 1
        assert 0 <= o.eye_count == len(o.eyes) <= 2
        for ex, ey, ew, eh in o.eyes:
            # Eyes lie inside the face box, in its upper half.
            assert x <= ex and ex + ew <= x + fw + 1
            assert y <= ey and ey + eh / 2 <= y + fh * 0.6


def test_grey_input_gives_the_same_faces_as_bgr() -> None:
    frame = clip("single_face.mp4")[0]
    grey = cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY)
    assert Tracker().process(grey, 0.0).face == Tracker().process(frame.image, 0.0).face


def _paste(canvas: np.ndarray, name: str, crop: Box, scale: float, at: tuple[int, int]) -> Box:
    """Paste a crop (x, y, w, h) of a real photo, scaled, at ``at``; return where it landed."""
    x, y, w, h = crop
    part = cv2.resize(
        cv2.imread(str(DATA / name))[y : y + h, x : x + w],
        None,
        fx=scale,
        fy=scale,
        interpolation=cv2.INTER_AREA,
    )
    ph, pw = part.shape[:2]
    canvas[at[1] : at[1] + ph, at[0] : at[0] + pw] = part
    return (at[0], at[1], pw, ph)


def test_a_bigger_face_found_by_the_recount_becomes_the_main_face() -> None:
    """The 000017F_FTN case (issue 14), composed from two real photos on a real background: the
    tracker starts on the only face there is, small in a corner; a face ~2.5x wider appears (the
    person at the screen, found late). The once-a-second recount must switch to it and count
    both, and the track must stay on it."""
    background = frames(DATA / "no_face.mp4")[0].image
    small = cv2.resize(background, (640, 480), interpolation=cv2.INTER_AREA)
    corner = _paste(small, "astronaut.png", (130, 20, 190, 190), 0.6, (500, 30))
    both = small.copy()
    main = _paste(both, "single_face.jpg", (60, 50, 430, 430), 0.7, (40, 120))

    def inside(face: Box | None, region: Box) -> bool:
        return face is not None and region[0] <= face[0] + face[2] / 2 <= region[0] + region[2]

    tracker = Tracker()
    fps = 30.0
    before = [tracker.process(small if i < 10 else both, i / fps) for i in range(30)]
    # Until the first recount (1 s after the track started) the small face is followed.
    assert all(inside(o.face, corner) for o in before)
    after = [tracker.process(both, i / fps) for i in range(30, 60)]
    assert all(inside(o.face, main) and o.face_count == 2 for o in after)


def _pair(*, left: bool = True, right: bool = True) -> tuple[np.ndarray, Box, Box]:
    """Two real faces of about the same width on a real background, or one of them; where
    each is (or would be)."""
    background = frames(DATA / "no_face.mp4")[0].image
    canvas = cv2.resize(background, (640, 480), interpolation=cv2.INTER_AREA)
    spare = canvas.copy()
    on_left = _paste(
        canvas if left else spare, "single_face.jpg", (60, 50, 430, 430), 0.5, (20, 120)
    )
    on_right = _paste(
        canvas if right else spare, "astronaut.png", (130, 20, 190, 190), 1.1, (400, 120)
    )
    return canvas, on_left, on_right


def test_the_recount_counts_a_second_face_of_the_same_size_and_keeps_the_track() -> None:
    """The recount paints the tracked face over (it looks only for others): a bystander of the
    same size is counted, the tracked face still counts, and the track stays where it was."""
    canvas, left, right = _pair()
    tracker = Tracker()
    recounts: list[float] = []
    recount = tracker._recount

    def counted(grey: np.ndarray, face: Box, t: float) -> tuple[Box, tuple[Box, ...]]:
        recounts.append(t)
        return recount(grey, face, t)  # type: ignore[arg-type]

    tracker._recount = counted  # type: ignore[method-assign]
    seen = [tracker.process(canvas, i / 30.0) for i in range(45)]
    first = seen[0].face
    assert first is not None
    tracked = left if left[0] <= first[0] + first[2] / 2 <= left[0] + left[2] else right
    assert seen[0].face_count == 2, "the first frame's full search finds both"
    after = seen[30:]  # the recount runs at 1 s
    assert all(o.face is not None and _overlap_x(o.face, tracked) for o in after)
    assert recounts == [1.0], "one recount, at the first frame of the second second"
    # Its count and boxes: the followed face's current box, and the bystander's as it found it.
    assert all(o.face_count == 2 == len(o.faces) and o.faces[0] == o.face for o in after)
    assert all(_overlap_x(o.faces[1], left if tracked == right else right) for o in after)


def test_a_bystander_who_leaves_keeps_a_box_in_faces_until_the_recount() -> None:
    """``faces`` lags by up to ``recount_interval_s``: the bystander leaves at 0.5 s, and its box
    stays where the first frame's search saw it until the recount at 1 s drops it."""
    both, left, _ = _pair()
    tracker = Tracker()
    first = tracker.process(both, 0.0)
    assert first.face is not None and first.face_count == 2
    on_left = _overlap_x(first.face, left)
    alone, _, _ = _pair(left=on_left, right=not on_left)
    seen = [first, *(tracker.process(both if i < 15 else alone, i / 30.0) for i in range(1, 45))]
    assert all(o.face_count == 2 and o.faces[1:] == first.faces[1:] for o in seen[:30])
    assert all(o.face is not None and o.faces == (o.face,) for o in seen[30:])


def _lost_then(face_scale: float, appear_at: int) -> tuple[Tracker, list[int], list[Observation]]:
    """A tracker that has seen no face for ``appear_at`` frames at 30 fps, then a real face
    (the astronaut photo at ``face_scale``) on a real background; the smallest face size each
    full search looked for, and what the tracker said."""
    background = frames(DATA / "no_face.mp4")[0].image
    empty = cv2.resize(background, (640, 480), interpolation=cv2.INTER_AREA)
    shown = empty.copy()
    _paste(shown, "astronaut.png", (130, 20, 190, 190), face_scale, (300, 150))
    tracker = Tracker()
    searched: list[int] = []
    search = tracker._full_search

    def counted(grey: np.ndarray, min_face_px: int, **kw: object) -> tuple[Box, ...]:
        searched.append(min_face_px)
        return search(grey, min_face_px, **kw)  # type: ignore[arg-type]

    tracker._full_search = counted  # type: ignore[method-assign]
    seen = [tracker.process(empty if i < appear_at else shown, i / 30.0) for i in range(150)]
    return tracker, searched, seen


def test_a_lost_face_costs_one_fine_search_a_second_and_a_big_face_is_found_at_once() -> None:
    """While no face is found, the full-sensitivity search runs once a second, and the searches
    every 0.2 s between look only for faces twice as wide (a quarter of the work): a face that
    comes back to the screen is big, and is found within 0.2 s all the same."""
    tracker, searched, seen = _lost_then(1.0, 70)
    s = tracker.settings
    fine = [px for px in searched if px == s.min_face_px]
    lost_seconds = 70 / 30.0
    assert len(fine) <= math.ceil(lost_seconds / s.lost_fine_interval_s) + 1, searched
    assert any(px > s.min_face_px for px in searched), "coarse searches between the fine ones"
    first = next(i for i, o in enumerate(seen) if o.face is not None)
    assert 70 <= first <= 70 + round(s.lost_search_interval_s * 30) + 1


def test_a_small_face_is_still_found_by_the_fine_search_within_a_second() -> None:
    """A face too small for the coarse searches (a bystander, someone far from the camera)
    appears just after a fine search: the next fine one finds it, within a second."""
    tracker, _, seen = _lost_then(0.35, 65)
    found = [i for i, o in enumerate(seen) if o.face is not None]
    assert found, "the small face is never found"
    assert found[0] <= 65 + round(tracker.settings.lost_fine_interval_s * 30) + 1
    assert all(seen[i].face is not None for i in range(found[0] + 1, 150))


def _overlap_x(face: Box, region: Box) -> bool:
    return region[0] <= face[0] + face[2] / 2 <= region[0] + region[2]


# --- looking away -------------------------------------------------------------------------------


def test_single_face_not_looking_away_after_half_a_second() -> None:
    settled = [o.looking_away for o in tracked("single_face.mp4") if o.t >= 0.5]
    assert 1 - fraction(settled) >= 0.97


def test_person_leaving_is_away_within_half_a_second_and_stays_away() -> None:
    cut = clip("face_noface.mov")[72].t
    observations = tracked("face_noface.mov")
    assert not any(o.looking_away for o in observations[:72] if o.t >= 0.5)
    after = [o for o in observations if o.t >= cut + 0.5]
    assert after and all(o.looking_away for o in after)
    first_away = next(o.t for o in observations if o.t >= cut and o.looking_away)
    assert first_away - cut <= 0.5


def test_person_arriving_is_back_within_one_second() -> None:
    arrival = clip("noface_face.mov")[96].t
    observations = tracked("noface_face.mov")
    assert all(o.looking_away for o in observations[24:96]), "no face yet: away"
    back = [o.t for o in observations[96:] if not o.looking_away]
    assert back and back[0] - arrival <= 1.0
    # …and stays back while the face is there (frame 168 is empty again).
    assert not any(o.looking_away for o in observations[96:168] if o.t >= back[0])


def test_a_frame_without_a_face_never_flips_looking_away() -> None:
    """Every sixth frame of a face clip replaced by a real frame with no face in it."""
    empty = clip("no_face.mp4")[40].image
    face = clip("single_face.mp4")
    h, w = face[0].image.shape[:2]
    blank = cv2.resize(empty, (w, h))
    doctored = [
        Frame(image=blank if i % 6 == 5 else f.image, t=f.t, index=f.index)
        for i, f in enumerate(face)
    ]
    observations = run(doctored)
    assert sum(not o.face_detected for o in observations) >= 10, "the blanks were really faceless"
    assert not any(o.looking_away for o in observations)


def test_a_blink_never_flips_looking_away() -> None:
    """A blink at its worst: for 300 ms the eyes are painted over with the face's own skin
    tone, which also hides the face from the face cascade (it keys on the eyes)."""
    face = list(clip("single_face.mp4"))
    first = Tracker().process(face[0].image, face[0].t)
    assert first.face is not None and first.eye_count == 2
    covered = []
    for f in face:
        image = f.image
        if 1.0 <= f.t < 1.3:
            image = image.copy()
            for ex, ey, ew, eh in first.eyes:
                pad = ew // 3
                image[ey - pad : ey + eh + pad, ex - pad : ex + ew + pad] = skin(image, first.face)
        covered.append(Frame(image=image, t=f.t, index=f.index))
    observations = run(covered)
    during = [o for o in observations if 1.0 <= o.t < 1.3]
    assert any(o.eye_count < 2 for o in during), "the painted-over eyes were really not found"
    assert not any(o.looking_away for o in observations)


def test_closed_eyes_are_not_looking_away() -> None:
    """The demo clip: real footage of a woman whose eyes are shut through much of its first
    5 s (frames ~0-130), pulling faces. She is at the screen throughout."""
    tracker = Tracker()
    with open_source("demo") as source:
        observations = [
            tracker.process(f.image, f.t) for f, _ in zip(source, range(130), strict=False)
        ]
    assert not any(o.looking_away for o in observations)
    # The eye stage follows shut eyes in their windows (the cascade finds them too), so the
    # frames are not "no eyes" any more; what matters is that they are not "away" either way.
    assert sum(o.face_detected for o in observations) >= 0.9 * len(observations)


def skin(image: np.ndarray, face: Box) -> np.ndarray:
    x, y, w, h = face
    cheek = image[y + int(0.65 * h) : y + int(0.75 * h), x + int(0.2 * w) : x + int(0.35 * w)]
    return np.median(cheek.reshape(-1, 3), axis=0).astype(np.uint8)


@pytest.mark.parametrize("condition", ["wink", "sleepy", "glasses"])
def test_yale_winks_and_sleepy_eyes_are_not_looking_away(condition: str) -> None:
    """One second of each still photo: a face with an eye shut is still looking at the screen."""
    paths = sorted(shared("yalefaces").glob(f"subject*.{condition}"))
    assert len(paths) >= 14
    found = 0
    for path in paths:
        (photo,) = frames(path)
        tracker = Tracker()
        observations = [tracker.process(photo.image, i / 30) for i in range(30)]
        found += observations[-1].face_detected
        if observations[-1].face_detected:
            assert not any(o.looking_away for o in observations), path.name
    assert found >= 0.9 * len(paths)


# --- the parts ------------------------------------------------------------------------------------


def test_confidence_moves_steadily_not_one_zero_one() -> None:
    observations = tracked("face_noface.mov")
    steps = [abs(b.confidence - a.confidence) for a, b in itertools.pairwise(observations)]
    assert all(0.0 <= o.confidence <= 1.0 for o in observations)
    assert max(steps) < 0.5


def test_attention_score_orders_the_evidence() -> None:
    s = TrackerSettings()
    face = (100, 100, 100, 100)
    left, right = (120, 130, 20, 20), (160, 130, 20, 20)
    assert attention_score(s, None, ()) == 0.0
    none, one, two = (attention_score(s, face, e) for e in ((), (left,), (left, right)))
    assert 0.0 < none < one < two <= 1.0
    turned = attention_score(s, face, ((100, 130, 20, 20), (130, 130, 20, 20)))
    assert none <= turned < two
    assert none > s.away_below, "a face alone is never looking away"


# --- shrinking ----------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [0.9, 0.5, 0.31, 0.12, 0.05])
def test_resize_keeps_coordinates_and_looks_like_one_area_average(scale: float) -> None:
    """The two-step shrink (whole-factor blocks, then the rest) keeps a point at ``x`` at
    ``x * scale`` and differs little from OpenCV's one-step area average of a real frame."""
    grey = cv2.cvtColor(clip("single_face.mp4")[0].image, cv2.COLOR_BGR2GRAY)
    direct = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ours = resize(grey, scale)
    assert ours.shape == direct.shape
    assert np.abs(ours.astype(int) - direct.astype(int)).mean() < 4
    marked = np.zeros((400, 600), np.uint8)
    marked[200:240, 300:340] = 255  # a square centred at (320, 220)
    small = resize(marked, scale).astype(float)
    ys, xs = np.indices(small.shape)
    centre = (xs * small).sum() / small.sum(), (ys * small).sum() / small.sum()
    # Pixel centres: a pixel i of the result covers i/scale .. (i+1)/scale.
    assert math.isclose(centre[0] + 0.5, 320 * scale, abs_tol=0.6)
    assert math.isclose(centre[1] + 0.5, 220 * scale, abs_tol=0.6)


# --- following the face between cascade confirmations -------------------------------------------


def _centre_error(a: Box, b: Box) -> float:
    """Distance between the boxes' centres over ``b``'s width."""
    return math.hypot(a[0] + a[2] / 2 - b[0] - b[2] / 2, a[1] + a[3] / 2 - b[1] - b[3] / 2) / b[2]


def test_template_following_stays_on_the_face_the_cascade_finds() -> None:
    """On the frames between confirmations the face is matched, not searched: its box stays
    where the cascade run on every frame puts it (within its own frame-to-frame jitter)."""
    f = clip("single_face.mp4")
    every = Tracker(TrackerSettings(face_confirm_every=1))
    matched = Tracker(TrackerSettings(face_confirm_every=3))
    pairs = [(every.process(x.image, x.t).face, matched.process(x.image, x.t).face) for x in f]
    assert all(a is not None and b is not None for a, b in pairs)
    errors = [_centre_error(b, a) for a, b in pairs if a is not None and b is not None]
    assert max(errors) < 0.1, f"worst centre error {max(errors):.1%} of the face width"


def test_a_face_that_leaves_is_noticed_on_the_frame_it_leaves_even_between_confirmations() -> None:
    """The match's correlation falls when the face goes, which asks the cascade at once: with
    confirmations only every 10th frame, the face is still gone on the cut's own frame."""
    f = clip("face_noface.mov")
    for every in (1, 10):
        tracker = Tracker(TrackerSettings(face_confirm_every=every))
        detected = [tracker.process(x.image, x.t).face_detected for x in f]
        assert all(detected[60:72]) and not any(detected[72:80]), every


def test_time_going_backwards_starts_a_new_sequence() -> None:
    f = clip("single_face.mp4")
    tracker = Tracker()
    for frame in f[:10]:
        tracker.process(frame.image, frame.t)
    again = tracker.process(f[0].image, 0.0)
    assert again.face_detected and math.isclose(again.confidence, again.attention)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("min_face_px", 10),
        ("track_margin", -0.1),
        ("away_below", 0.9),
        ("confidence_tau_s", math.nan),
        ("track_size_range", (1.2, 1.4)),
        ("face_confirm_every", 0),
        ("face_track_min_ncc", 1.5),
        ("recount_hide_inset", 0.5),
    ],
)
def test_bad_tracker_settings_are_refused_with_the_name(field: str, value: object) -> None:
    with pytest.raises(TrackerSettingsError, match=field):
        TrackerSettings(**{field: value})  # type: ignore[arg-type]


def test_missing_cascade_names_the_path_and_opencv_version(tmp_path: Path) -> None:
    with pytest.raises(CascadeError) as info:
        load_cascade("haarcascade_frontalface_default.xml", tmp_path)
    assert str(tmp_path) in str(info.value)
    assert cv2.__version__ in str(info.value)


def test_corrupt_cascade_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bad.xml").write_text("<opencv_storage><nonsense/></opencv_storage>")
    with pytest.raises(CascadeError, match="does not load"):
        load_cascade("bad.xml", tmp_path)


def test_bad_image_shape_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="shape"):
        Tracker().process(np.zeros((10, 10, 2), np.uint8), 0.0)
