"""The follower shared by the face and the eyes (trackerd.vision.track): its transition table,
and the states it goes through on frames where the cascade finds, misses or is not asked."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.typing import NDArray

from trackerd.vision.eyes import EyeSettings
from trackerd.vision.observation import Box
from trackerd.vision.track import (
    TRANSITIONS,
    Event,
    Follower,
    FollowSettings,
    State,
    TrackerSettingsError,
    TrackStateError,
)
from trackerd.vision.tracker import TrackerSettings

BOX: Box = (40, 30, 40, 40)


def _frame() -> NDArray[np.uint8]:
    """A textured frame, so the box's template correlates 1.0 where it was taken only."""
    return np.random.default_rng(7).integers(0, 256, (120, 160), dtype=np.uint8)


def _follower(found: list[Box | None], **settings: float) -> Follower:
    """A follower whose cascade answers from ``found``, one answer per search."""
    answers = iter(found)
    follow = FollowSettings(
        confirm_every=int(settings.pop("confirm_every", 3)),
        template_px=20,
        margin=0.25,
        min_ncc=0.8,
        search_from_match=bool(settings.pop("search_from_match", False)),
        **settings,
    )
    return Follower(follow, lambda grey, around: next(answers))


def test_confirmations_come_every_few_frames_and_matches_between() -> None:
    grey = _frame()
    follower = _follower([BOX, BOX])
    follower.acquire(grey, BOX, 0.0, fresh=True)
    states = [follower.step(grey, BOX, i / 30) for i in range(1, 7)]
    M, C = State.MATCHED, State.CONFIRMED
    assert states == [M, M, C, M, M, C]
    assert follower.box == BOX and follower.since_confirmed == 0


def test_a_missed_face_coasts_on_its_template_then_is_lost() -> None:
    """The face's rule: coast only while confirmed at most ``coast_s`` ago."""
    grey = _frame()
    follower = _follower([None] * 5, confirm_every=1, coast_s=0.1)
    follower.acquire(grey, BOX, 0.0, fresh=True)
    states = [follower.step(grey, BOX, t) for t in (0.05, 0.1, 0.15)]
    assert states == [State.COASTING, State.COASTING, State.LOST]
    assert follower.box is None


def test_a_young_track_does_not_coast() -> None:
    grey = _frame()
    follower = _follower([None], confirm_every=1, coast_after_s=0.5)
    follower.acquire(grey, BOX, 0.0, fresh=True)
    assert follower.step(grey, BOX, 0.1) is State.LOST


def test_an_eye_coasts_for_at_most_max_misses_cascade_misses() -> None:
    grey = _frame()
    follower = _follower([None] * 4, confirm_every=1, search_from_match=True, max_misses=2)
    follower.acquire(grey, BOX, 0.0, fresh=True)
    states = [follower.step(grey, BOX, i / 30) for i in range(1, 4)]
    assert states == [State.COASTING, State.COASTING, State.LOST]


def test_a_weak_match_asks_the_cascade_before_the_confirmation_is_due() -> None:
    grey = _frame()
    follower = _follower([None])
    follower.acquire(grey, BOX, 0.0, fresh=True)
    elsewhere = np.roll(grey, 50, axis=1)  # the box's look is gone from where it was
    assert follower.step(elsewhere, BOX, 0.1) is State.LOST


def test_an_illegal_move_names_the_state_and_the_event() -> None:
    follower = _follower([])
    with pytest.raises(TrackStateError, match="can't follow a box in state lost"):
        follower.step(_frame(), BOX, 0.0)
    follower.acquire(_frame(), BOX, 0.0, fresh=True)
    follower.state = State.LOST  # as if a bug had lost the box behind the table's back
    with pytest.raises(TrackStateError, match="can't coast a box in state lost"):
        follower._to(Event.COAST)


def test_the_table_lets_a_lost_box_only_be_acquired_or_dropped() -> None:
    assert {e for s, e in TRANSITIONS if s is State.LOST} == {Event.ACQUIRE, Event.DROP}
    for state in (State.CONFIRMED, State.MATCHED, State.COASTING):
        assert {e for s, e in TRANSITIONS if s is state} == set(Event)
    assert {TRANSITIONS[s, Event.MISS] for s in State if (s, Event.MISS) in TRANSITIONS} == {
        State.LOST
    }


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("band", (0.5, 0.2, 0.4, 0.5)),
        ("confirm_every", 0),
        ("track_min_ncc", 1.5),
        ("centre_px", math.nan),
        ("window_eye_px", 10),
    ],
)
def test_bad_eye_settings_are_refused_with_the_name(field: str, value: object) -> None:
    with pytest.raises(TrackerSettingsError, match=field):
        EyeSettings(**{field: value})  # type: ignore[arg-type]


def test_tracker_settings_carry_the_eye_settings() -> None:
    assert TrackerSettings(eyes=EyeSettings(glasses=False)).eyes.glasses is False
