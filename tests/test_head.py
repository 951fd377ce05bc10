"""Head turns: the estimate against AFLW2000's labels and the Pexels clip's segments labelled by
eye (``tests/data/head_segments.json``), the looking-away rule, and the ``head`` key end to end.

The photos and the clip are read in place from ../shared/data (never copied here); outside CI,
their tests skip when it is absent. What the estimator was tuned on, and what not:
:mod:`trackerd.vision.head`.
"""

from __future__ import annotations

import json
import os
from functools import cache, partial

import cv2
import numpy as np
import pytest
import trio
from trio_websocket import open_websocket_url

from benchmarks import head as bench
from benchmarks import zju
from tests.media import DATA, shared
from tests.serverkit import capped, recv_json, recv_type, url, with_settings
from trackerd.app import Running, run, tracker_settings
from trackerd.settings import Settings
from trackerd.sources import open_source
from trackerd.vision import tracker as tracking
from trackerd.vision.head import Head, HeadSettings, Look, ProfileSearch, estimate, eye_offset
from trackerd.vision.observation import Observation
from trackerd.vision.tracker import Tracker, TrackerSettings


@cache
def photos() -> tuple[bench.Photo, ...]:
    shared("aflw2000-sample", "labels.csv")
    return tuple(bench.photos())


@cache
def clip(settings: TrackerSettings | None = None) -> tuple[Observation, ...]:
    shared("pyfeat-testdata", "WolfgangLanger_Pexels.mp4")
    return tuple(bench.clip_heads(settings))


# --- AFLW2000: 16 labelled photos ----------------------------------------------------------------


@pytest.mark.xfail(
    strict=True,
    reason="not met (benchmarks/results/head.json): the side is right on 3 of the 6 photos "
    "turned 20 degrees or more (02420 at -2, 00475 at -8); 00516 and 04331 (no eye found, no "
    "profile hit) say 0, neither cascade finds 00251 (55 degrees). 3 of the 4 near-frontal "
    "ones are within 15 degrees (00430, chin up 34 degrees, gets a profile hit: -31)",
)
def test_aflw_the_side_is_right_past_20_degrees_and_frontal_within_15() -> None:
    found = photos()
    assert all(p.sign_right for p in found if p.sign_right is not None)
    assert all(p.frontal_right for p in found if p.frontal_right is not None)


def test_aflw_no_worse_than_measured() -> None:
    """What the estimator does today (benchmarks/results/head.json): a floor, not the aim."""
    found = photos()
    summary = bench.summary(found)
    assert summary["with_head"] >= 15
    signs = [p.sign_right for p in found if p.sign_right is not None]
    frontal = [p.frontal_right for p in found if p.frontal_right is not None]
    assert len(signs) == 6 and sum(signs) >= 3
    assert len(frontal) == 4 and sum(frontal) >= 3
    assert summary["yaw_mae_deg"] <= 23  # 22.5
    # Wrong sides are never more than right ones among the photos where the side is said.
    said = [p for p in found if p.head is not None and abs(p.head[0]) >= bench.SIDE_DEG]
    right = [p for p in said if (p.head is not None) and (p.head[0] > 0) == (p.yaw > 0)]
    assert 2 * len(right) > len(said)


# --- The Pexels clip, segments labelled by eye ----------------------------------------------------


def test_the_clip_turned_and_back_by_the_segments_labelled_by_eye() -> None:
    """The turn is seen from its first frame; the frontal segment is within 10 degrees on 2/3 of
    its frames only (72/108): there the eyes' offset reads her up to 21 degrees right (the
    profile cascade, which said 108/108, no longer looks at a strong track)."""
    labels = bench.segments()
    assert "by eye" in labels["labelled"]
    scored = {row["head"]: row for row in bench.score_segments(list(clip()), labels)}
    turned, frontal = scored["turned"], scored["frontal"]
    on, of = (int(n) for n in turned["on_side"].split("/"))
    assert on >= 0.9 * of, turned
    assert turned["delay_frames"] is not None and turned["delay_frames"] <= 12  # half a second
    on, of = (int(n) for n in frontal["on_side"].split("/"))
    assert on >= 0.6 * of, frontal


def test_the_clip_counts_as_turned_only_in_the_turn_with_the_limits_lowered() -> None:
    """Its turns are 20-30 degrees by eye: at the default 30 none is past the limit; at 15, the
    labelled turn is, and the frontal segment is not."""
    labels = bench.segments()
    turned = next(s for s in labels["segments"] if s["head"] == "turned")
    frontal = next(s for s in labels["segments"] if s["head"] == "frontal")
    observed = clip(bench.LOW_LIMITS)
    runs = bench.turned_runs(list(observed))
    assert any(first <= turned["last"] + 12 and last >= turned["first"] for first, last in runs)
    assert not any(o.head_turned for o in observed[frontal["first"] : frontal["last"] + 1])
    assert all(o.looking_away for o in observed if o.head_turned)
    at_defaults = clip()
    assert not any(o.head_turned for o in at_defaults[turned["first"] : frontal["last"] + 1])


# --- The estimator and the rule, without footage --------------------------------------------------


def test_a_profile_hit_on_one_side_is_a_turn_that_way() -> None:
    s = HeadSettings()
    face = (100, 100, 100, 100)
    mid = 150 + s.level_eye_offset * 40  # 40 px apart, the level offset, at the level height
    level = ((mid - 20, 139.5), (mid + 20, 139.5))
    assert estimate(s, face, level, None) == Head(0, 0)
    assert estimate(s, face, level, Look(left=s.min_neighbors, right=0)) == Head(-20, 0)
    assert estimate(s, face, level, Look(left=0, right=s.min_neighbors + 10)) == Head(35, 0)
    assert estimate(s, face, level, Look(left=9, right=9)) == Head(0, 0)  # both: no side
    assert estimate(s, face, None, Look(0, 9), profile_only=True) == Head(60, 0)
    assert estimate(s, face, None, None) is None
    assert estimate(s, None, level, Look(0, 9)) is None
    low = ((mid - 20, 150.0), (mid + 20, 150.0))  # eyes lower in the box: the chin is down
    pose = estimate(s, face, low, None)
    assert pose is not None and pose.pitch_deg < -20


def test_the_eyes_off_the_face_box_centre_are_a_turn_that_way() -> None:
    """``eye_offset_gain`` eye distances per unit of sin(yaw) off this person's level."""
    s = HeadSettings()
    face = (100, 100, 100, 100)
    shift = s.eye_offset_gain * 0.5 * 40  # sin(30 degrees), eyes 40 px apart

    def pupils(dx: float) -> tuple[tuple[float, float], tuple[float, float]]:
        mid = 150 + s.level_eye_offset * 40 + dx
        return (mid - 20, 139.5), (mid + 20, 139.5)

    assert estimate(s, face, pupils(shift), None) == Head(30, 0)
    assert estimate(s, face, pupils(-shift), None) == Head(-30, 0)
    assert estimate(s, face, pupils(5 * shift), None) == Head(s.max_frontal_yaw_deg, 0)
    assert eye_offset(face, pupils(0.0)) == pytest.approx(s.level_eye_offset)
    # Someone whose frontal offset is another: the level followed by the tracker.
    own = s.level_eye_offset + 0.05
    assert estimate(s, face, pupils(2.0), None, eye_level=own) == Head(0, 0)
    assert eye_offset(face, (None, (170.0, 139.5))) is None


def test_a_strong_frontal_track_is_not_looked_at_in_profile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The profile cascade runs only while the frontal track is weak or lost (issue 23): a
    frontal face with both eyes costs no look, and its yaw is the eyes'."""
    looks: list[float] = []
    look = ProfileSearch.look
    monkeypatch.setattr(ProfileSearch, "look", lambda *a: looks.append(1) or look(*a))
    image = cv2.imread(str(DATA / "single_face.jpg"))
    tracker = Tracker()
    observed = [tracker.process(image, i / 30) for i in range(60)]
    strong = [o for o in observed if o.eye_count == 2]
    assert len(strong) >= 50 and all(o.head is not None for o in strong[5:])
    assert len(looks) <= len(observed) - len(strong)
    assert all(abs(o.head[0]) <= 15 for o in strong[5:] if o.head)  # within 6 here


def _observe(pose: Head, monkeypatch: pytest.MonkeyPatch) -> list[Observation]:
    """single_face.jpg at 30 fps for 2 s with the estimate forced to ``pose`` for the first
    1.5 s and level after: what the tracker makes of it."""
    poses = iter([pose] * 45 + [Head(0, 0)] * 15)
    monkeypatch.setattr(tracking, "estimate", lambda *args, **kwargs: next(poses))
    image = cv2.imread(str(DATA / "single_face.jpg"))
    tracker = Tracker(TrackerSettings(head=HeadSettings(tau_s=0.0)))
    return [tracker.process(image, i / 30) for i in range(60)]


def test_a_head_turned_past_the_limit_for_a_second_is_looking_away(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    observed = _observe(Head(45, 0), monkeypatch)
    away = [o.looking_away for o in observed]
    assert all(o.face_detected and o.confidence > 0.8 for o in observed)
    assert not any(away[:30]) and all(away[30:45]), "from 1.0 s of the turn"
    assert not any(away[45:]), "back at once"
    assert [o.head_turned for o in observed] == away
    assert observed[40].head == (45, 0)


def test_a_head_pitched_down_counts_and_one_under_the_limits_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert any(o.looking_away for o in _observe(Head(0, -40), monkeypatch))
    assert not any(o.looking_away for o in _observe(Head(25, 20), monkeypatch))


def test_the_servers_options_reach_the_tracker() -> None:
    chosen = tracker_settings(Settings(max_head_yaw_deg=20, max_head_pitch_deg=10, head_turn_s=2))
    assert (chosen.max_head_yaw_deg, chosen.max_head_pitch_deg, chosen.head_turn_s) == (20, 10, 2)
    assert tracker_settings(Settings()).max_head_yaw_deg == TrackerSettings().max_head_yaw_deg


# --- The real server ------------------------------------------------------------------------------


@capped
async def test_eye_data_has_a_head_from_the_real_server(nursery: trio.Nursery) -> None:
    """The server's own tracker (built from its settings) on a frontal clip: ``head`` after the
    eye stage's keys, whole degrees, near frontal."""
    settings = with_settings(
        source=str(DATA / "single_face.mp4"),
        max_head_yaw_deg=45,
        data_dir=os.environ["TRACKERD_DATA_DIR"],  # each test's own (tests/conftest.py)
    )
    # app.run's own tracker, not serverkit's synthetic one: the options must reach it.
    running: Running = await nursery.start(
        partial(run, settings, open_source=partial(open_source, loop_files=True))
    )
    analyzer = running.capture._analyzer
    assert isinstance(analyzer, Tracker) and analyzer.settings.max_head_yaw_deg == 45
    async with open_websocket_url(url(running)) as ws:
        await recv_json(ws)
        await ws.send_message('{"type": "start_tracking"}')
        data = [await recv_type(ws, "eye_data") for _ in range(30)]
    keys = list(data[0])
    assert keys.index("head") == keys.index("gaze") + 1
    heads = [m["head"] for m in data if m["face_detected"]]
    assert len(heads) >= 28 and all(h is not None for h in heads[5:])
    for h in filter(None, heads):
        assert set(h) == {"yaw", "pitch"} and all(isinstance(v, int) for v in h.values())
        # His eyes sit 0.10 eye distances left of the box's centre facing the camera (15 ZJU
        # clips' median: -0.01, spread 0.035): read as up to 21 degrees until his level is
        # learnt (level_tau_s), short of the 30 degree default limit.
        assert abs(h["yaw"]) <= 25
    assert all(m["head"] is None for m in data if not m["face_detected"])
    assert json.loads(json.dumps(data[-1]))["head"] == data[-1]["head"]
    assert np.median([h["pitch"] for h in filter(None, heads)]) > -25


class _Blind:
    """A frontal cascade that finds nothing: what it does once a head turns past its range."""

    def detectMultiScale(self, *args: object, **kwargs: object) -> tuple[()]:
        return ()


def test_a_face_only_the_profile_cascade_finds_is_a_turned_head_not_an_empty_seat() -> None:
    """The clip's frames 352-399, where she faces the image's right (by eye; frames the profile
    settings were tuned on: this checks the wiring, not the accuracy), with the frontal cascade
    blinded: the face is still there, turned 60 degrees that way, and after half a second away. It
    is found by the search of the whole frame, which runs with the fine frontal search, once a
    second while no face is found: within 1 s, then held."""
    path = shared("pyfeat-testdata", "WolfgangLanger_Pexels.mp4")
    with open_source(str(path)) as source:
        images = [f.image for i, f in enumerate(source) if 352 <= i < 400]
    tracker = Tracker(TrackerSettings(head_turn_s=0.5))  # the turn left after it is found: 0.8 s
    tracker._face_cascade = _Blind()  # type: ignore[assignment]
    observed = [tracker.process(image, i / 24) for i, image in enumerate(images)]
    first = next(i for i, o in enumerate(observed) if o.face_detected)
    assert observed[first].t <= 1.05
    held = observed[first:]
    found = [o for o in held if o.face_detected]
    assert len(found) >= 0.8 * len(held)
    assert all(o.head is not None and o.head[0] >= 45 for o in found[5:])
    assert all(o.face_count >= 1 for o in found)
    assert any(o.looking_away and o.head_turned for o in held)


def test_the_profile_search_leaves_a_frontal_track_alone() -> None:
    """zju-dev 000017F_FTN (frontal, glasses), where the frontal cascade misses the face for a
    moment: every frame's face and eyes are those of the same tracker with the profile cascade
    blind. Before ``profile_after_s``, a profile hit on the frame the face was missed moved the
    frontal track, which then lost the face on 3 frames it had (eye recall on subjects 16-20
    98.48 % -> 98.41 %)."""
    clip = zju.load("000017F_FTN", shared("zju-dev"))
    seeing, blind = Tracker(), Tracker()
    blind._profile._strongest = lambda *args, **kwargs: (None, 0)  # type: ignore[method-assign]
    for image, t in zip(clip.images, clip.times, strict=True):
        a, b = seeing.process(image, t), blind.process(image, t)
        assert (a.face, a.eyes, a.eyes_closed) == (b.face, b.eyes, b.eyes_closed), t
