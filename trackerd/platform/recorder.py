"""One push session's episodes and report, and the task that records them.

The session (:class:`trackerd.net.sessions.PushSession`) tells its :class:`Recorder` what happens,
synchronously and without waiting: a frame analysed, a frame not analysed, the connection lost
or back, the end and why. The recorder turns that into episodes
(:class:`~trackerd.platform.episodes.Episodes`) and keeps their changes in a bounded list;
its own task (:meth:`Recorder.run`, one per session for the session's whole life, across
reconnects) hands them to :class:`~trackerd.platform.records.Records`, which puts each on disk
before anyone sees it. So a slow disk delays the events, never the frames.

The task also:

- asks for ``frames_stopped`` once a second while the connection is open (:data:`TICK_S`);
- saves the report so far at the start, every :data:`SAVE_EVERY_S`, and before each episode
  change goes out (so whatever anyone has seen of a session is in its saved report), so that a
  session a crash cut is ended, at the next start, with at most that much missing;
- at the end (the session's reason, or ``server_stopped`` when the server stops first), closes
  every open episode, saves the final report and emits ``session.ended``, shielded from the
  server's own shutdown for at most :data:`FINAL_WRITE_S`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final

import trio

from trackerd.platform import reports
from trackerd.platform.episodes import Change, Episodes, EpisodeSettings
from trackerd.platform.records import Records, Subject
from trackerd.vision.observation import Observation

log = logging.getLogger(__name__)

TICK_S: Final = 1.0
"""``frames_stopped`` starts 3 s after the last frame: looked for once a second, it is reported
within a second of that."""
SAVE_EVERY_S: Final = 10.0
"""What a crash may take off a cut session's report: ten seconds of counts, a write a session
every ten seconds (4 a second at 40 sessions: nothing for SQLite)."""
MAX_PENDING: Final = 1024
"""Changes waiting for the task: a frame makes a few at most, and the task takes them all at
each wake; only a database stuck for minutes could fill this. Beyond it, changes are logged and
dropped, never held without bound."""
FINAL_WRITE_S: Final = 2.0
"""How long the end of a session may hold the server's shutdown: a few writes take
milliseconds; a stuck disk does not keep the process from stopping."""


class Recorder:
    """See the module docstring. ``clock``: Unix seconds, what episodes are dated with."""

    def __init__(
        self,
        subject: Subject,
        settings: EpisodeSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.subject = subject
        self._clock = clock
        self.started_at = clock()
        self._episodes = Episodes(settings, self.started_at)
        self._pending: list[Change] = []
        self._changed = trio.Event()
        self._attached = True
        self._reason: str | None = None
        self._ended_at: float | None = None
        self._overflowed = 0

    # --- what the session tells it (synchronous, never blocks) ---------------------------

    def frame(self, number: int, at: float, observation: Observation, change: float | None) -> None:
        self._note(self._episodes.frame(number, at, observation, change))

    def dropped(self, number: int, at: float) -> None:
        self._note(self._episodes.dropped(number, at))

    def disconnected(self) -> None:
        self._attached = False
        self._note(self._episodes.disconnected(self._clock()))

    def reconnected(self) -> None:
        self._attached = True
        self._note(self._episodes.reconnected(self._clock()))

    def end(self, reason: str) -> None:
        """The session is over, for ``reason``; the task records its end. Only the first
        reason counts."""
        if self._reason is None:
            self._reason = reason
            self._ended_at = self._clock()
            self._changed.set()

    def _note(self, changes: list[Change]) -> None:
        if not changes:
            return
        room = MAX_PENDING - len(self._pending)
        if room < len(changes):
            self._overflowed += len(changes) - max(0, room)
            log.error(
                "session %s: %d episode changes not recorded (the database is too slow)",
                self.subject.sid,
                self._overflowed,
            )
        self._pending.extend(changes[: max(0, room)])
        self._changed.set()

    # --- the report ------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """The report so far, or the final one once the session has ended."""
        return reports.report(
            self.subject.sid,
            self.subject.sub,
            self.subject.metadata,
            self._episodes.summary(),
            self._episodes.timeline(),
            end=self._ended_at,
            reason=self._reason,
        )

    # --- the task ----------------------------------------------------------------------------

    async def run(self, records: Records) -> None:
        """Record until the session ends (then its final report) or the task is cancelled (the
        server stops: then the session ends with ``server_stopped``)."""
        await records.started(self.subject, self.started_at)
        await records.save(self.subject.sid, self.report(), None)
        records.live(self.subject.sid, self.report)
        saved_at = trio.current_time()
        try:
            while self._reason is None:
                with trio.move_on_after(TICK_S):
                    await self._changed.wait()
                self._changed = trio.Event()
                if self._attached and self._reason is None:
                    self._note(self._episodes.tick(self._clock()))
                # The report first: whoever has seen an event, its report on disk has it too
                # (a crash then ends the session with it).
                if self._pending or trio.current_time() - saved_at >= SAVE_EVERY_S:
                    await records.save(self.subject.sid, self.report(), None)
                    saved_at = trio.current_time()
                await self._emit(records)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(FINAL_WRITE_S):
                self.end("server_stopped")
                assert self._ended_at is not None and self._reason is not None
                self._note(self._episodes.end(self._ended_at, self._reason))
                await self._emit(records)
                records.live(self.subject.sid, None)
                await records.ended(self.subject, self.report(), self._ended_at)

    async def _emit(self, records: Records) -> None:
        """Hand every pending change to ``records``, in order."""
        changes, self._pending = self._pending, []
        for change in changes:
            data = reports.episode_data(
                change.episode,
                self.subject.sid,
                self.subject.sub,
                self.subject.metadata,
                now=self._clock(),
            )
            await records.emit(self.subject, change.type, data)
