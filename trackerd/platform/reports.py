"""The bodies of the platform's events, as JSON-ready dicts: pure, from what
:mod:`~trackerd.platform.episodes` counted.

- :func:`episode_data`: an ``episode.started`` or ``episode.ended`` event's ``data``;
- :func:`report`: the session report, ``session.ended``'s ``data`` and ``GET /sessions/{sid}``.

Every ``data`` carries ``sid``, ``sub`` and ``metadata``. Times are ISO 8601 UTC to the
millisecond with a ``Z`` (:func:`iso`); durations are seconds to the millisecond, differences of
those times, so a kind's ``total_s`` is exactly the sum of its episodes' ``duration_s`` (while
the timeline holds them all). A ratio with nothing to divide by (no frame analysed, a session of
no time) is ``null``, not 0: "no frames" is not "no face".
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from trackerd.platform.episodes import KINDS, Episode, Summary

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def iso(t: float) -> str:
    """Unix seconds as ISO 8601 UTC with milliseconds and ``Z``: ``2024-05-01T12:03:10.123Z``.
    Rounded to the millisecond (not truncated), as durations are."""
    moment = _EPOCH + datetime.timedelta(milliseconds=round(t * 1000))
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _episode(episode: Episode, now: float | None) -> dict[str, Any]:
    open_ = episode.end is None
    return {
        "kind": episode.kind,
        "start": iso(episode.start),
        "end": None if episode.end is None else iso(episode.end),
        "duration_s": None if open_ and now is None else episode.duration_s(now),
        "first_frame": episode.first_frame,
        "last_frame": episode.last_frame,
    }


def _subject(sid: str, sub: str | None, metadata: Mapping[str, Any]) -> dict[str, Any]:
    return {"sid": sid, "sub": sub, "metadata": dict(metadata)}


def episode_data(
    episode: Episode,
    sid: str,
    sub: str | None,
    metadata: Mapping[str, Any],
    *,
    now: float | None = None,
) -> dict[str, Any]:
    """An episode event's ``data``. ``end`` is null while the episode is open; its
    ``duration_s`` is then up to ``now``, or null without it."""
    return _subject(sid, sub, metadata) | _episode(episode, now)


def report(
    sid: str,
    sub: str | None,
    metadata: Mapping[str, Any],
    summary: Summary,
    timeline: Sequence[Episode],
    *,
    end: float | None,
    reason: str | None,
) -> dict[str, Any]:
    """The session report. ``end`` and ``reason`` are null while the session is live: it is
    then the report so far, up to ``summary.now``, and open episodes count up to that too.

    - ``fps``: frames analysed per second of the session;
    - ``face_fraction``: the share of analysed frames with a face;
    - ``blinks_per_minute``: per minute of the session, as a reviewer reads it (time away from
      the camera lowers it);
    - ``episodes``: for every kind, ``count``, ``total_s`` and ``longest_s``;
    - ``timeline``: the episodes, by start, without the ``sid``/``sub``/``metadata`` the
      report already carries; ``timeline_omitted``: how many ended episodes the timeline
      left out (:data:`~trackerd.platform.episodes.MAX_TIMELINE`).
    """
    now = end if end is not None else summary.now
    duration_s = max(0, round(now * 1000) - round(summary.start * 1000)) / 1000
    analysed = summary.analysed
    return _subject(sid, sub, metadata) | {
        "start": iso(summary.start),
        "end": None if end is None else iso(end),
        "duration_s": duration_s,
        "reason": reason,
        "frames": {
            "received": summary.received,
            "analysed": analysed,
            "dropped": summary.dropped,
        },
        "fps": round(analysed / duration_s, 2) if duration_s > 0 else None,
        "face_fraction": round(summary.face_frames / analysed, 4) if analysed else None,
        "blinks": summary.blinks,
        "blinks_per_minute": (
            round(summary.blinks * 60 / duration_s, 1) if duration_s > 0 else None
        ),
        "episodes": {
            kind: {
                "count": summary.kinds[kind].count,
                "total_s": summary.kinds[kind].total_s,
                "longest_s": summary.kinds[kind].longest_s,
            }
            for kind in KINDS
        },
        "timeline": [_episode(episode, now) for episode in timeline],
        "timeline_omitted": summary.omitted,
    }
