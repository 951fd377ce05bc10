"""The events' bodies and the session report: their shape, and that their numbers add up.

Built from :class:`~trackerd.platform.episodes.Episodes` driven by hand (exact times), and once
from the real tracker on the clip of a person who leaves and comes back.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.test_episodes import T0, ended, leaves_and_returns, push, seen
from trackerd.platform.episodes import (
    KINDS,
    MAX_TIMELINE,
    Debounce,
    Episode,
    Episodes,
    EpisodeSettings,
)
from trackerd.platform.reports import episode_data, iso, report

SID, SUB, METADATA = "interview-42", "candidate-7", {"round": 2, "role": "backend"}
EPISODE_FIELDS = {"kind", "start", "end", "duration_s", "first_frame", "last_frame"}
REPORT_FIELDS = {
    "sid", "sub", "metadata", "start", "end", "duration_s", "reason", "frames", "fps",
    "face_fraction", "blinks", "blinks_per_minute", "episodes", "timeline", "timeline_omitted",
}  # fmt: skip


def session() -> Episodes:
    """10 s at 10 fps: no face from 2.0 to 5.0 s, a blink a second, the tracker reset once;
    four frames dropped, the last at 10.05 s, when the frames stop; a tick at 14 s."""
    episodes = Episodes(EpisodeSettings(), T0)
    for n in range(1, 101):
        at = T0 + n / 10
        face = not 20 <= n < 50
        blinks = n // 10 if n < 60 else (n - 60) // 10
        episodes.frame(n, at, seen(face=face, away=not face, blinks=blinks), 5.0)
        if n % 25 == 0:
            episodes.dropped(1000 + n, at + 0.05)
    episodes.tick(T0 + 14.0)
    return episodes


def build(episodes: Episodes, *, end: float | None, reason: str | None) -> dict[str, Any]:
    return report(
        SID, SUB, METADATA, episodes.summary(), episodes.timeline(), end=end, reason=reason
    )


def check_sums(body: dict[str, Any]) -> None:
    """What every report must satisfy: every kind present, and the timeline adding up to it."""
    assert set(body) == REPORT_FIELDS
    frames = body["frames"]
    assert frames["received"] == frames["analysed"] + frames["dropped"]
    assert set(body["episodes"]) == set(KINDS)
    for kind, stats in body["episodes"].items():
        mine = [e for e in body["timeline"] if e["kind"] == kind]
        assert set(stats) == {"count", "total_s", "longest_s"}
        if body["timeline_omitted"] == 0:
            assert stats["count"] == len(mine)
            assert stats["total_s"] == pytest.approx(sum(e["duration_s"] for e in mine), abs=1e-9)
            assert stats["longest_s"] == max((e["duration_s"] for e in mine), default=0)
    for entry in body["timeline"]:
        assert set(entry) == EPISODE_FIELDS
    starts = [e["start"] for e in body["timeline"]]
    assert starts == sorted(starts)
    json.dumps(body, allow_nan=False)  # JSON-ready, no NaN


def test_iso_is_utc_to_the_millisecond_with_a_z() -> None:
    assert iso(0) == "1970-01-01T00:00:00.000Z"
    assert iso(1714565000.1234) == "2024-05-01T12:03:20.123Z"
    assert iso(1714565000.9996) == "2024-05-01T12:03:21.000Z"  # rounded, as durations are
    assert iso(1714565000.0005) == "2024-05-01T12:03:20.000Z"


def test_an_episode_event_carries_who_and_the_episode() -> None:
    episode = Episode("away", T0 + 1.25, None, 13, 40)
    started = episode_data(episode, SID, SUB, METADATA)
    assert started == {
        "sid": SID,
        "sub": SUB,
        "metadata": METADATA,
        "kind": "away",
        "start": "2024-05-01T12:03:21.250Z",
        "end": None,
        "duration_s": None,
        "first_frame": 13,
        "last_frame": 40,
    }
    assert episode_data(episode, SID, None, {}, now=T0 + 3.0)["duration_s"] == 1.75
    done = Episode("away", T0 + 1.25, T0 + 18.5834, 13, 500)
    data = episode_data(done, SID, SUB, METADATA)
    assert (data["end"], data["duration_s"]) == ("2024-05-01T12:03:38.583Z", 17.333)
    json.dumps(data, allow_nan=False)


def test_the_final_report_adds_up() -> None:
    episodes = session()
    episodes.end(T0 + 15.0, "idle")
    body = build(episodes, end=T0 + 15.0, reason="idle")
    check_sums(body)
    assert (body["sid"], body["sub"], body["metadata"]) == (SID, SUB, METADATA)
    assert (body["start"], body["end"]) == (iso(T0), iso(T0 + 15.0))
    assert (body["duration_s"], body["reason"]) == (15.0, "idle")
    assert body["frames"] == {"received": 104, "analysed": 100, "dropped": 4}
    assert body["fps"] == round(100 / 15, 2)
    assert body["face_fraction"] == 0.7
    assert body["blinks"] == 9  # 5 before the reset at frame 60, 4 after
    assert body["blinks_per_minute"] == 36.0
    kinds = body["episodes"]
    assert kinds["no_face"] == {"count": 1, "total_s": 3.0, "longest_s": 3.0}
    assert kinds["away"] == {"count": 1, "total_s": 3.0, "longest_s": 3.0}
    # Frames stopped after the last one arrived (10.05 s, dropped) until the idle end.
    assert kinds["frames_stopped"] == {"count": 1, "total_s": 4.95, "longest_s": 4.95}
    assert all(kinds[k]["count"] == 0 for k in ("faces", "eyes_closed", "frozen", "disconnected"))
    assert [e["kind"] for e in body["timeline"]] == ["away", "no_face", "frames_stopped"]
    assert all(e["end"] is not None for e in body["timeline"])


def test_the_report_so_far_counts_open_episodes_up_to_now() -> None:
    episodes = session()
    body = build(episodes, end=None, reason=None)
    check_sums(body)
    assert (body["end"], body["reason"], body["duration_s"]) == (None, None, 14.0)
    (stopped,) = [e for e in body["timeline"] if e["kind"] == "frames_stopped"]
    assert (stopped["end"], stopped["duration_s"]) == (None, 3.95)
    assert body["episodes"]["frames_stopped"] == {"count": 1, "total_s": 3.95, "longest_s": 3.95}


def test_a_session_without_frames_has_no_ratios_rather_than_zeros() -> None:
    episodes = Episodes(EpisodeSettings(), T0)
    body = build(episodes, end=T0, reason="stop")
    check_sums(body)
    assert (body["fps"], body["face_fraction"], body["blinks_per_minute"]) == (None, None, None)
    assert body["timeline"] == []
    later = Episodes(EpisodeSettings(), T0)
    later.disconnected(T0 + 1.0)
    later.end(T0 + 61.0, "disconnected")
    body = build(later, end=T0 + 61.0, reason="disconnected")
    check_sums(body)
    assert (body["fps"], body["face_fraction"], body["blinks_per_minute"]) == (0.0, None, 0.0)
    assert body["episodes"]["disconnected"] == {"count": 1, "total_s": 60.0, "longest_s": 60.0}
    assert body["episodes"]["frames_stopped"]["count"] == 0  # lost 1 s in: never stopped


def test_a_long_session_says_how_many_episodes_the_timeline_left_out() -> None:
    episodes = Episodes(EpisodeSettings(away=Debounce(0.1, 3, 0.1, 3)), T0)
    n = 0
    for _ in range(MAX_TIMELINE + 3):
        for away in [True] * 5 + [False] * 5:
            n += 1
            episodes.frame(n, T0 + n / 10, seen(away=away), 5.0)
    episodes.end(T0 + n / 10 + 1, "stop")
    body = build(episodes, end=T0 + n / 10 + 1, reason="stop")
    check_sums(body)
    assert body["timeline_omitted"] == 3 and len(body["timeline"]) == MAX_TIMELINE
    assert body["episodes"]["away"]["count"] == MAX_TIMELINE + 3
    assert len(json.dumps(body)) < 200_000  # MAX_TIMELINE's reason: well under 1 MB


def test_the_leave_and_return_clip_reports_its_away_episode_in_full() -> None:
    """The real tracker on a person who leaves and comes back: the report's away total is the
    episode's duration, and the episode is dated within a second of each cut."""
    pictures, left, returned = leaves_and_returns()
    changes, episodes = push(pictures)
    (away,) = ended(changes, "away")
    end = pictures[-1][1] + 0.05
    body = build(episodes, end=T0 + end, reason="stop")
    check_sums(body)
    (entry,) = [e for e in body["timeline"] if e["kind"] == "away"]
    assert body["episodes"]["away"]["total_s"] == entry["duration_s"] == away.duration_s()
    assert entry["start"] == iso(away.start) and entry["end"] == iso(away.end or 0)
    assert abs(away.start - T0 - left) <= 1.0 and abs((away.end or 0) - T0 - returned) <= 1.0
    assert body["frames"]["analysed"] == len(pictures)
    assert 0.4 < body["face_fraction"] < 0.5  # the face is in 72 + 72 of 338 frames
    print("\n" + json.dumps(body, indent=2))
