"""A push session's observations turned into episodes: sans-IO, the clock passed in.

The session tells :class:`Episodes` what happens, each with the time it happened (Unix seconds;
for a frame, its arrival at the server): a frame analysed (:meth:`~Episodes.frame`), a frame
that arrived but was not analysed (:meth:`~Episodes.dropped`), a tick about once a second while
the connection is open, the connection lost and back, the end. Each call returns the episodes
that started or ended (:class:`Change`), in order. The kinds:

- ``away``: the tracker's ``looking_away``, which is already smoothed
  (:mod:`trackerd.vision.tracker`: a face gone for ~0.43 s is away, one back for ~0.25 s is back);
- ``faces``: more than one face in view (``face_count > 1``);
- ``no_face``: no face found;
- ``eyes_closed``: both eyes judged closed for at least ``closed_episode_s``;
- ``head_turned``: the tracker's ``head_turned``, a head turned or pitched down past the limits
  for ``head_turn_s`` (``--max-head-yaw``, ``--max-head-pitch``, ``--head-turn-s``);
- ``frozen``: the frames stopped changing (:mod:`trackerd.vision.stillness`);
- ``frames_stopped``: the connection is open and no frame (analysed or not) arrived for
  ``stopped_after_s``; it starts at the last frame's arrival (or at the connection's, when
  none has come since), and ends at the first frame of a flow that lasts ``resumed_after_s``;
- ``disconnected``: the connection was lost and the session ended without it coming back
  (``end(at, "disconnected")``): from the loss to the end. A reconnect within the grace period
  records nothing, and the episodes open before it go on.

**Hysteresis** (:class:`Debounce`, per kind). A condition starts an episode only once it has
held for a minimum time and number of frames, and ends it only once it has been false for a
minimum time and number of frames: one flickering frame neither starts nor ends one. Where the
signal flickers within an episode (closed eyes missed on a frame), a stretch of the opposite
value shorter than a gap is not counted at all. The episode's times are those of the
condition, not of the confirmation: it starts at the first frame where the condition was true
and ends at the first frame where it was false for good, so a cut in a clip is dated at the cut.
``episode.started`` is sent once the start is confirmed, with that earlier start.

A break in the evidence (``frames_stopped`` starting, the connection lost) drops the
conditions that were not yet confirmed; confirmed episodes go on, and end on later frames.
When the session ends, every open episode ends at the last frame that showed it (or where its
end was pending), ``frames_stopped`` at the end.

The summary counts every episode; the timeline keeps the first :data:`MAX_TIMELINE` that ended
and every open one. After :meth:`Episodes.end` the record is final: a frame still in its
analysis thread when the session ended changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Final, Literal

from trackerd.errors import TrackerdError
from trackerd.vision.observation import Observation
from trackerd.vision.stillness import FROZEN_CHANGE

KINDS: Final = (
    "away",
    "faces",
    "no_face",
    "eyes_closed",
    "head_turned",
    "frames_stopped",
    "frozen",
    "disconnected",
)
CONDITIONS: Final = ("away", "faces", "no_face", "eyes_closed", "head_turned", "frozen")
"""The kinds read from each analysed frame."""
MAX_TIMELINE: Final = 1000
"""Ended episodes kept for the timeline; the summary counts every one. A three-hour exam with
an episode every ten seconds has ~1100; 1000 entries are ~130 KB of the report's JSON, far
under the 1 MB that receivers commonly accept in a body (nginx's default)."""


def _ms(t: float) -> int:
    """Times are reported to the millisecond, and durations are differences of those: a kind's
    total is then exactly the sum of its episodes' durations."""
    return round(t * 1000)


@dataclass(frozen=True, slots=True)
class Episode:
    kind: str
    start: float
    end: float | None
    """``None`` while the episode is open."""
    first_frame: int
    last_frame: int
    """Numbers of the first and last frames that showed it. ``frames_stopped`` and
    ``disconnected`` have no frames of their own: the last frame received before the episode
    (0 when there was none), and for an ended ``frames_stopped`` the one that ended it."""

    def duration_s(self, now: float | None = None) -> float:
        """Seconds, to the millisecond; an open episode's needs ``now``."""
        end = self.end if self.end is not None else now
        if end is None:
            raise ValueError(f"the {self.kind} episode is open: its duration needs a time")
        return max(0, _ms(end) - _ms(self.start)) / 1000


@dataclass(frozen=True, slots=True)
class Change:
    type: Literal["episode.started", "episode.ended"]
    episode: Episode


@dataclass(frozen=True, slots=True)
class Debounce:
    """When one kind's condition makes an episode (see the module docstring)."""

    start_s: float
    """The condition holds this long, from its first true frame…"""
    start_frames: int
    """…on at least this many frames, to start an episode."""
    end_s: float
    """It is false this long, from its first false frame…"""
    end_frames: int
    """…on at least this many frames, to end one."""
    start_gap_s: float = 0.0
    """Before the start is confirmed, a stretch of false frames shorter than this is ignored
    (0: any false frame begins the wait again)."""
    end_gap_s: float = 0.0
    """Before the end is confirmed, a stretch of true frames shorter than this is ignored."""


MIN_FRAMES: Final = 3
"""Every start and end rests on at least three frames: at 2 fps a second of them."""


class EpisodeSettingsError(TrackerdError, ValueError):
    """An episode setting is out of range; the message names it."""


@dataclass(frozen=True, slots=True)
class EpisodeSettings:
    """Each kind's thresholds, with the reason for each default."""

    closed_episode_s: float = 2.0
    """Eyes closed at least this long (``--closed-episode-s``, the issue's default): far beyond
    a blink (0.1-0.4 s; the longest labelled closure in the zju-dev clips is 21 frames)."""
    closed_end_s: float = 0.5
    """Eyes open this long end an ``eyes_closed`` episode: longer than the open frames the
    tracker reports inside a closure."""
    closed_gap_s: float = 0.1
    """Inside a closure the tracker misses closed eyes on a frame now and then (the Pexels
    clip, hand over her closed eyes: gaps of one or two frames at 24 fps), and outside one it
    calls open eyes closed on ~2 % of frames: stretches under 0.1 s are ignored either way.
    With ``closed_episode_s`` lowered to 0.5 s on the 40 zju-dev clips, gaps of 0, 0.1 and
    0.15 s gave episodes on 4, 7 and 7 clips: the one closure that long (000019F_FTN) in each,
    and else closures the tracker held on glasses (000012M_FBN), a double blink (000017F_FBN)
    or long blinks with their closing and opening. At the default 2 s, no blink is at stake."""
    stopped_after_s: float = 3.0
    """No frame for this long is ``frames_stopped`` (the issue's 3 s)."""
    resumed_after_s: float = 1.0
    """``frames_stopped`` ends once frames have come again for this long (at least two of them,
    none ``stopped_after_s`` apart): a lone frame from a throttled background tab does not."""
    frozen_change: float = FROZEN_CHANGE
    """A frame that changed less than this is still (measured in :mod:`trackerd.vision.stillness`:
    no frame of a live clip changed less than 0.547). With ``frozen_after_s``, the 40 zju-dev
    clips first make a ``frozen`` episode at 1.2 (one clip; four at 1.5)."""
    frozen_after_s: float = 3.0
    """Still frames for this long, with no changed frame between them, are ``frozen``: as long
    as ``frames_stopped`` waits. A camera that stalls for a moment (exposure, a USB hiccup) is
    not reported; a photo or a frozen feed is, three seconds after its last change."""
    frozen_end_s: float = 1.0
    """Frames that change for this long end ``frozen``, so a virtual camera that switches from
    one photo to another (one changed frame) stays frozen."""
    frozen_stutter_s: float = 0.5
    """While ``frozen`` may be ending, still frames for less than this are ignored. A browser
    that sends faster than its camera delivers sends the same picture twice or more (a camera
    at 7.5 fps in dim light, frames sent at 30 fps: still stretches of 0.1 s): a live camera
    must end the episode all the same. It cannot start one: that needs ``frozen_after_s`` of
    still frames without one changed frame."""
    away: Debounce = Debounce(1.0, MIN_FRAMES, 1.0, MIN_FRAMES)
    """``looking_away`` already waits ~0.43 s and ignores a face missing for less than
    ~0.37 s; a second more makes an episode at least ~1.4 s of absence, what a reviewer acts
    on, and keeps a fidgety candidate's glances from each being counted. A return under a
    second (a glance back at the screen) does not split one absence in two."""
    faces: Debounce = Debounce(1.5, MIN_FRAMES, 1.5, MIN_FRAMES)
    """While a face is tracked, ``face_count`` is refreshed once a second (the tracker's
    ``recount_interval_s``), so a false second face in one search lasts exactly a second (the
    astronaut photo, repeated: frames 30-59 at 30 fps). 1.5 s asks for two searches in a row,
    to start as to end."""
    no_face: Debounce = Debounce(1.0, MIN_FRAMES, 1.0, MIN_FRAMES, 0.25, 0.25)
    """As ``away``. The gaps: the lost search may find a false face for a frame or two in an
    empty scene (``tests/test_tracker.py``: at most 2 frames in the cartoon), and a returning
    face may be missed on a frame: neither splits an episode."""
    head_turned: Debounce = Debounce(0.5, MIN_FRAMES, 1.0, MIN_FRAMES, 0.25, 0.25)
    """``head_turned`` already waits ``head_turn_s`` (1 s); half a second more makes an episode
    a turn of at least 1.5 s, and a second facing the screen ends it, as ``away``. The gaps: the
    estimate crosses a limit back and forth for a frame or two when the head sits near it."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            numbers = (
                [getattr(value, g.name) for g in fields(value)]
                if isinstance(value, Debounce)
                else [value]
            )
            if not all(isinstance(v, int | float) and math.isfinite(v) and v >= 0 for v in numbers):
                raise EpisodeSettingsError(f"{f.name} must be finite and >= 0, got {value!r}")
            if isinstance(value, Debounce) and min(value.start_frames, value.end_frames) < 1:
                raise EpisodeSettingsError(f"{f.name} needs at least one frame to start and end")
        for name in ("closed_episode_s", "stopped_after_s", "frozen_change", "frozen_after_s"):
            if getattr(self, name) <= 0:
                raise EpisodeSettingsError(f"{name} must be > 0")

    def rule(self, kind: str) -> Debounce:
        """The hysteresis of one of :data:`CONDITIONS`."""
        if kind == "eyes_closed":
            return Debounce(
                self.closed_episode_s,
                MIN_FRAMES,
                self.closed_end_s,
                MIN_FRAMES,
                self.closed_gap_s,
                self.closed_gap_s,
            )
        if kind == "frozen":
            return Debounce(
                self.frozen_after_s,
                MIN_FRAMES,
                self.frozen_end_s,
                MIN_FRAMES,
                0.0,
                self.frozen_stutter_s,
            )
        if kind in ("away", "faces", "no_face", "head_turned"):
            rule: Debounce = getattr(self, kind)
            return rule
        raise ValueError(f"{kind!r} is not read from frames; those are {CONDITIONS}")


@dataclass(frozen=True, slots=True)
class KindSummary:
    count: int
    total_s: float
    longest_s: float


@dataclass(frozen=True, slots=True)
class Summary:
    """What the session report is made of (:func:`trackerd.platform.reports.report`)."""

    start: float
    now: float
    """The latest time the episodes were told of: open episodes are counted up to it."""
    first_frame_at: float | None
    last_frame_at: float | None
    received: int
    """Frames that arrived: ``analysed + dropped``."""
    analysed: int
    dropped: int
    face_frames: int
    """Analysed frames with a face."""
    blinks: int
    kinds: Mapping[str, KindSummary]
    """Every one of :data:`KINDS`, open episodes included."""
    omitted: int
    """Episodes counted here but left out of the timeline (over :data:`MAX_TIMELINE`)."""


class _Condition:
    """One kind's state: nothing, a start waiting to be confirmed, an open episode, or an open
    episode whose end waits to be confirmed."""

    def __init__(self, kind: str, rule: Debounce) -> None:
        self.kind = kind
        self.rule = rule
        self.open = False
        self.starting = False
        self.since = (0.0, 0)
        """Time and number of the first true frame of the start or the open episode."""
        self.true_frames = 0
        self.last_true = (0.0, 0)
        self.ending: tuple[float, int] | None = None
        """The first false frame of the pending end."""
        self.false_frames = 0
        self.gap_at: float | None = None
        """Where a stretch of the opposite value began (false while starting, true while
        ending)."""
        self.gap_last = (0.0, 0)
        """The last true frame of a true stretch while ending."""

    def step(self, condition: bool, at: float, number: int) -> Change | None:
        if not self.open:
            if condition:
                return self._true_while_closed(at, number)
            self._false_while_closed(at)
            return None
        if condition:
            self._true_while_open(at, number)
            return None
        return self._false_while_open(at, number)

    def _true_while_closed(self, at: float, number: int) -> Change | None:
        """Starting, or going on starting; the episode opens once the start is confirmed."""
        rule = self.rule
        if self.starting and self.gap_at is not None:
            if at - self.gap_at >= rule.start_gap_s:
                self.starting = False  # the false stretch counted: start again here
            self.gap_at = None
        if not self.starting:
            self.starting, self.since, self.true_frames = True, (at, number), 0
        self.true_frames += 1
        self.last_true = (at, number)
        if at - self.since[0] >= rule.start_s and self.true_frames >= rule.start_frames:
            self.open, self.starting = True, False
            return Change("episode.started", self.episode(None))
        return None

    def _false_while_closed(self, at: float) -> None:
        """A false stretch long enough drops a start not yet confirmed."""
        if not self.starting:
            return
        if self.gap_at is None:
            self.gap_at = at
        if at - self.gap_at >= self.rule.start_gap_s:
            self.starting, self.gap_at = False, None

    def _true_while_open(self, at: float, number: int) -> None:
        """The episode goes on; a pending end is called off once it is back for long enough."""
        if self.ending is None:
            self.last_true = (at, number)
            return
        if self.gap_at is None:
            self.gap_at = at
        self.gap_last = (at, number)
        if at - self.gap_at >= self.rule.end_gap_s:  # back for long enough: not ending
            self.ending, self.gap_at, self.last_true = None, None, (at, number)

    def _false_while_open(self, at: float, number: int) -> Change | None:
        """Ending, or going on ending; the episode closes once the end is confirmed."""
        rule = self.rule
        if self.ending is not None and self.gap_at is not None:
            if at - self.gap_at >= rule.end_gap_s:
                # The true stretch counted: the end begins again at this frame.
                self.ending, self.last_true = None, self.gap_last
            self.gap_at = None
        if self.ending is None:
            self.ending, self.false_frames = (at, number), 0
        self.false_frames += 1
        if at - self.ending[0] >= rule.end_s and self.false_frames >= rule.end_frames:
            return self._close(self.ending[0])
        return None

    def interrupt(self) -> None:
        """The evidence has a hole: a start not yet confirmed is dropped."""
        if not self.open:
            self.starting, self.gap_at = False, None

    def finish(self) -> Change | None:
        """The session ended: the open episode ends where its end was pending, or at the last
        frame that showed it."""
        if not self.open:
            self.starting = False
            return None
        return self._close(self.ending[0] if self.ending is not None else self.last_true[0])

    def episode(self, end: float | None) -> Episode:
        return Episode(self.kind, self.since[0], end, self.since[1], self.last_true[1])

    def _close(self, end: float) -> Change:
        episode = self.episode(end)
        self.open = self.starting = False
        self.ending = self.gap_at = None
        return Change("episode.ended", episode)


class Episodes:
    """One push session's episodes and counts. See the module docstring."""

    def __init__(self, settings: EpisodeSettings, start: float) -> None:
        self.settings = settings
        self._start = start
        self._now = start
        self._conditions = {kind: _Condition(kind, settings.rule(kind)) for kind in CONDITIONS}
        self._connected = True
        self._disconnected_at: float | None = None
        self._quiet_since = start
        """What ``frames_stopped`` counts from: the last arrival, or the (re)connection."""
        self._stopped: tuple[float, int] | None = None
        """The open ``frames_stopped``: its start and the last frame before it."""
        self._resumed: tuple[float, int] | None = None
        self._resumed_frames = 0
        self._analysed_at = -math.inf
        self._first_frame_at: float | None = None
        self._last_frame_at: float | None = None
        self._last_number = 0
        self._received = self._analysed = self._dropped = self._face_frames = 0
        self._blinks = self._tracker_blinks = 0
        self._counts = {kind: [0, 0, 0] for kind in KINDS}
        """Per kind, of the ended episodes: count, total ms, longest ms."""
        self._timeline: list[Episode] = []
        self._omitted = 0
        self._ended = False

    # --- what happens ----------------------------------------------------------------------

    def frame(
        self, number: int, at: float, observation: Observation, change: float | None
    ) -> list[Change]:
        """Frame ``number``, which arrived at ``at``, was analysed. ``change``: how much it
        changed from the previous analysed frame (:class:`trackerd.vision.stillness.Stillness`)."""
        if self._ended:
            return []
        changes = self._arrived(number, at)
        self._analysed += 1
        self._face_frames += observation.face_detected
        blinks = observation.blinks
        # A running count, which restarts when the tracker is reset.
        self._blinks += blinks - self._tracker_blinks if blinks >= self._tracker_blinks else blinks
        self._tracker_blinks = blinks
        at = self._analysed_at = max(at, self._analysed_at)  # a clock stepped back: no time
        conditions = {
            "away": observation.looking_away,
            "faces": observation.face_count > 1,
            "no_face": not observation.face_detected,
            "eyes_closed": observation.eyes_closed,
            "head_turned": observation.head_turned,
            "frozen": change is not None and change < self.settings.frozen_change,
        }
        for kind, condition in conditions.items():
            found = self._conditions[kind].step(condition, at, number)
            if found is not None:
                changes.append(self._note(found))
        return changes

    def dropped(self, number: int, at: float) -> list[Change]:
        """Frame ``number`` arrived at ``at`` and was not analysed (over the rate, replaced,
        bad): the frames still come, for ``frames_stopped`` as in the counts."""
        if self._ended:
            return []
        changes = self._arrived(number, at)
        self._dropped += 1
        return changes

    def tick(self, at: float) -> list[Change]:
        """About once a second while the connection is open: ``frames_stopped`` starts."""
        if self._ended or not self._connected:
            return []
        self._now = max(self._now, at)
        return self._quiet(at)

    def disconnected(self, at: float) -> list[Change]:
        """The connection was lost at ``at``. ``frames_stopped`` ends: it is about an open
        connection, and a lost one is ``disconnected`` if it does not come back."""
        if self._ended or not self._connected:
            return []
        self._now = max(self._now, at)
        changes = self._quiet(at)
        self._connected = False
        self._disconnected_at = at
        for condition in self._conditions.values():
            condition.interrupt()
        if self._stopped is not None:
            changes.append(self._end_stopped(at))
        return changes

    def reconnected(self, at: float) -> list[Change]:
        """The candidate came back within the grace period: nothing is recorded, and
        ``frames_stopped`` counts from now."""
        if self._ended or self._connected:
            return []
        self._now = max(self._now, at)
        self._connected = True
        self._disconnected_at = None
        self._quiet_since = max(self._quiet_since, at)
        return []

    def end(self, at: float, reason: str) -> list[Change]:
        """The session ended at ``at`` for ``reason``: every open episode ends; ``disconnected``
        adds the episode from the loss of the connection to ``at``."""
        if self._ended:
            return []
        self._now = max(self._now, at)
        changes = self._quiet(at) if self._connected else []
        if self._stopped is not None:
            changes.append(self._end_stopped(at))
        for kind in CONDITIONS:
            found = self._conditions[kind].finish()
            if found is not None:
                changes.append(self._note(found))
        if reason == "disconnected":
            lost = self._disconnected_at if self._disconnected_at is not None else at
            episode = Episode("disconnected", lost, None, self._last_number, self._last_number)
            changes.append(Change("episode.started", episode))
            changes.append(self._note(Change("episode.ended", _ended(episode, at))))
        self._ended = True
        return changes

    # --- what it makes ---------------------------------------------------------------------

    def timeline(self) -> list[Episode]:
        """The episodes kept (see :data:`MAX_TIMELINE`) and the open ones, by start."""
        episodes = [*self._timeline, *self._open()]
        return sorted(episodes, key=lambda e: (e.start, KINDS.index(e.kind)))

    def summary(self) -> Summary:
        counts = {kind: list(values) for kind, values in self._counts.items()}
        now = _ms(self._now)
        for episode in self._open():
            ms = max(0, now - _ms(episode.start))
            count = counts[episode.kind]
            count[0] += 1
            count[1] += ms
            count[2] = max(count[2], ms)
        return Summary(
            start=self._start,
            now=self._now,
            first_frame_at=self._first_frame_at,
            last_frame_at=self._last_frame_at,
            received=self._received,
            analysed=self._analysed,
            dropped=self._dropped,
            face_frames=self._face_frames,
            blinks=self._blinks,
            kinds=MappingProxyType(
                {
                    k: KindSummary(n, total / 1000, longest / 1000)
                    for k, (n, total, longest) in counts.items()
                }
            ),
            omitted=self._omitted,
        )

    # --- inside ----------------------------------------------------------------------------

    def _arrived(self, number: int, at: float) -> list[Change]:
        self._received += 1
        self._now = max(self._now, at)
        if self._first_frame_at is None:
            self._first_frame_at = at
        self._last_frame_at = max(at, self._last_frame_at or at)
        changes: list[Change] = []
        if self._connected:  # else a frame of the lost connection, analysed after the loss
            changes = self._quiet(at)  # a gap between two ticks is a stop all the same
            if self._stopped is not None:
                if self._resumed is None:  # (_quiet forgot frames that stopped again)
                    self._resumed, self._resumed_frames = (at, number), 0
                self._resumed_frames += 1
                resumed_s = at - self._resumed[0]
                if resumed_s >= self.settings.resumed_after_s and self._resumed_frames >= 2:
                    changes.append(self._end_stopped(at))
            self._quiet_since = max(self._quiet_since, at)
        self._last_number = max(self._last_number, number)
        return changes

    def _quiet(self, at: float) -> list[Change]:
        """``frames_stopped`` starts if no frame arrived for ``stopped_after_s``; frames that
        came while it was open but stopped again did not end it."""
        if at - self._quiet_since < self.settings.stopped_after_s:
            return []
        if self._stopped is not None:
            self._resumed = None
            return []
        self._stopped = (self._quiet_since, self._last_number)
        for condition in self._conditions.values():
            condition.interrupt()
        start, last = self._stopped
        return [Change("episode.started", Episode("frames_stopped", start, None, last, last))]

    def _end_stopped(self, at: float) -> Change:
        """Ends at the first frame of the flow that resumed, if one did; else at ``at``."""
        assert self._stopped is not None
        start, last = self._stopped
        end, number = self._resumed if self._resumed is not None else (at, last)
        self._stopped, self._resumed = None, None
        episode = Episode("frames_stopped", start, end, last, number)
        return self._note(Change("episode.ended", episode))

    def _open(self) -> list[Episode]:
        episodes = [c.episode(None) for c in self._conditions.values() if c.open]
        if self._stopped is not None:
            start, last = self._stopped
            episodes.append(Episode("frames_stopped", start, None, last, last))
        return episodes

    def _note(self, change: Change) -> Change:
        """An ended episode is counted, and kept while the timeline has room."""
        episode = change.episode
        if change.type == "episode.ended":
            ms = round(episode.duration_s() * 1000)
            count = self._counts[episode.kind]
            count[0] += 1
            count[1] += ms
            count[2] = max(count[2], ms)
            if len(self._timeline) < MAX_TIMELINE:
                self._timeline.append(episode)
            else:
                self._omitted += 1
        return change


def _ended(episode: Episode, at: float) -> Episode:
    return Episode(episode.kind, episode.start, at, episode.first_frame, episode.last_frame)
