"""Where a session's events go: on disk first, then to the webhooks and the observers.

An event counts as emitted once :meth:`Store.add_event` has returned: only then is the
:class:`~trackerd.platform.webhooks.Deliverer` woken for it and is it offered to the session's
observers. So whatever an observer or a receiver has seen is on disk, and survives ``kill -9``.

- **The database** (:mod:`~trackerd.platform.store`) is opened at start-up, in a thread, as every
  call to it is (one at a time, under one limiter: SQLite serialises writers anyway). A session
  that a crash cut (started, never ended) is ended there and then with ``reason``
  ``server_stopped``, from the last report saved for it.
- **A failing database** (a full disk, a lock, a corrupt file) makes :attr:`Records.problem`
  say so: ``/readyz`` turns 503 and new push sessions are refused (``store_unavailable``), while
  the sessions already open go on, their events logged as lost and counted, still shown to
  their observers. Opening is tried again every :data:`REOPEN_S`; a failing write is tried
  again with the next event.
- **Observers** of a sid get each event as ``{"type": "event", "event": …, "data": …}``
  through their own non-blocking ``notify_event``: a slow observer is the connection's problem
  (:class:`~trackerd.net.server.Client` bounds what it holds), never the session's.
- **Under** ``--workers``, each worker has a database of its own (``worker-N/`` inside
  ``--data-dir`` for all but the first) and delivers only its own events: two deliverers on one
  outbox would break the per-URL order. A report is looked up in every worker's database.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final, Protocol, TypeVar

import trio

from trackerd.platform import reports
from trackerd.platform.episodes import Episodes, EpisodeSettings
from trackerd.platform.store import (
    FILENAME,
    Fault,
    SessionRecord,
    Store,
    StoreError,
    StoreStatistics,
    iso_utc,
)
from trackerd.platform.webhooks import Deliverer, DeliveryStatistics
from trackerd.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

LOCK_FILE: Final = "trackerd.lock"
REOPEN_S: Final = 30.0
"""How often a database that failed to open is tried again: a full disk an operator frees, or
a lock another process drops, heals without a restart."""
PURGE_EVERY_S: Final = 3600.0
"""The retention is in days: an hourly purge keeps at most an hour's worth beyond it."""
REFRESH_S: Final = 5.0
"""The outbox's depth and oldest age in /metrics are this old at most: a scrape is every 15-60 s."""
MAX_OBSERVERS_PER_SID: Final = 16
"""A proctor's dashboard or two per interview, and room for reloads."""


class Observer(Protocol):
    def notify_event(self, text: str) -> None:
        """Take one event message. Must not block."""


@dataclass(frozen=True, slots=True)
class Subject:
    """Whose session an event is about: what every event's ``data`` carries."""

    sid: str
    sub: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RecordsStatistics:
    problem: str | None
    """Why the database cannot be used now, or None."""
    fault: str | None
    depth: int = 0
    """Pending webhook deliveries."""
    oldest_s: float = 0.0
    """Age of the oldest pending delivery."""
    dead: int = 0
    emitted: int = 0
    lost: int = 0
    """Events the database failed to take (logged at ERROR, never delivered)."""
    deliveries: DeliveryStatistics | None = None


def event_message(type: str, data: Mapping[str, Any], at: float) -> str:
    """An event as observers and candidates get it: the webhook's body, typed ``event``."""
    body = {"type": "event", "event": type, "timestamp": iso_utc(at), "data": data}
    return json.dumps(body, separators=(",", ":"), allow_nan=False)


def folder(settings: Settings, worker: int) -> Path:
    """This worker's database folder (see the module docstring)."""
    base = Path(settings.data_dir)
    return base if worker == 0 else base / f"worker-{worker}"


class Records:
    """Every session's events and reports, for one server process. See the module docstring."""

    def __init__(
        self, settings: Settings, worker: int = 0, clock: Callable[[], float] = time.time
    ) -> None:
        self._settings = settings
        self._folder = folder(settings, worker)
        self._clock = clock
        self._store: Store | None = None
        self._deliverer: Deliverer | None = None
        self._problem: str | None = "the database is not open yet"
        self._fault: str | None = None
        self._limiter = trio.CapacityLimiter(1)
        self._observers: dict[str, set[Observer]] = {}
        self._live: dict[str, Callable[[], dict[str, Any]]] = {}
        self._emitted = self._lost = 0
        self._outbox: StoreStatistics | None = None
        self._lock: IO[bytes] | None = None
        """The data folder's lock file, held open (and locked) while the process lives."""

    @property
    def problem(self) -> str | None:
        """Why new sessions are refused now (the database failed), or None."""
        return self._problem

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the database, end the sessions a crash cut, then deliver webhooks and purge
        until cancelled. Ready once the first attempt to open is over, whatever its outcome."""
        try:
            while not await self._open():
                task_status.started()
                task_status = trio.TASK_STATUS_IGNORED
                await trio.sleep(REOPEN_S)
            task_status.started()
            async with trio.open_nursery() as nursery:
                if self._deliverer is not None:
                    nursery.start_soon(self._deliverer.run)
                nursery.start_soon(self._refresh)
                while True:
                    await self._purge()
                    await trio.sleep(PURGE_EVERY_S)
        finally:
            if self._lock is not None:  # the folder is free for the next server
                self._lock.close()
                self._lock = None

    async def _open(self) -> bool:
        settings = self._settings
        try:
            if self._lock is None:
                self._lock = await self._call(_lock, self._folder)
            store = await self._call(Store.open, self._folder, settings.webhook_urls)
        except StoreError as e:
            self._failed(e, "open")
            return False
        self._store = store
        self._problem = self._fault = None
        if settings.webhook_urls:
            self._deliverer = Deliverer(
                store,
                settings.webhook_urls,
                settings.webhook_secret,
                max_age_s=settings.webhook_max_age_s,
            )
        log.info("database: %s", store.path)
        await self._recover()
        return True

    async def _recover(self) -> None:
        """End each session a crash cut, from its last saved report."""
        assert self._store is not None
        for sid, saved in await self._call(self._store.unfinished):
            record = await self._call(self._store.session, sid)
            if record is None:
                continue
            # The last report saved (at the start, every few seconds, and at each episode)
            # says how long the session had run: it ended then, as far as anyone can know.
            report = dict(saved or _empty_report(record))
            end = record.started + float(report.get("duration_s") or 0.0)
            report.update(end=iso_utc(end), reason="server_stopped")
            log.warning("session %s was cut by a server stop: ending it", sid)
            await self.ended(Subject(sid, record.sub, record.metadata), report, end)

    async def _purge(self) -> None:
        assert self._store is not None
        try:
            purged = await self._call(self._store.purge, self._clock(), self._settings.retention_s)
        except StoreError as e:
            self._failed(e, "purge")
            return
        if purged:
            log.info("purged %d records older than the retention", purged)

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(function, *args, limiter=self._limiter)

    def _failed(self, error: StoreError, what: str) -> None:
        if self._problem is None or what == "open":
            log.error("database (%s): %s", what, error)
        self._problem = str(error)
        self._fault = error.fault.value

    def _healed(self) -> None:
        if self._problem is not None:
            log.info("database: writes succeed again")
        self._problem = self._fault = None

    # --- what sessions call ---------------------------------------------------------------

    async def started(self, subject: Subject, at: float) -> None:
        if self._store is None:
            return
        try:
            await self._call(self._store.session_started, subject.sid, subject.sub,
                             subject.metadata, at)  # fmt: skip
        except StoreError as e:
            self._failed(e, "session start")
        else:
            self._healed()

    async def emit(self, subject: Subject, type: str, data: Mapping[str, Any]) -> None:
        """``type``'s event about ``subject``: on disk, then to webhooks and observers."""
        at = self._clock()
        if self._store is None:
            self._lost_event(subject, type, "the database is not open")
        else:
            try:
                await self._call(self._store.add_event, type, data, at)
            except StoreError as e:
                self._failed(e, "event")
                self._lost_event(subject, type, str(e))
            else:
                self._healed()
                self._emitted += 1
                if self._deliverer is not None:
                    self._deliverer.kick()
        observers = self._observers.get(subject.sid, ())
        if observers:
            text = event_message(type, data, at)
            for observer in list(observers):
                observer.notify_event(text)

    def _lost_event(self, subject: Subject, type: str, why: str) -> None:
        self._lost += 1
        log.error("event %s of session %s not recorded: %s", type, subject.sid, why)

    async def save(self, sid: str, report: Mapping[str, Any], ended: float | None) -> None:
        """The report so far (``ended`` None), or the final one."""
        if self._store is None:
            return
        try:
            await self._call(self._store.save_report, sid, report, ended)
        except StoreError as e:
            self._failed(e, "report")
        except KeyError:
            # Its start was not recorded (the database failed then): the report has no row.
            log.error("report of session %s not saved: its start was never recorded", sid)
        else:
            self._healed()

    async def ended(self, subject: Subject, report: Mapping[str, Any], at: float) -> None:
        """The session is over: its final report saved, and its ``session.ended`` emitted."""
        await self.save(subject.sid, report, at)
        await self.emit(subject, "session.ended", report)

    # --- live sessions and observers --------------------------------------------------------

    def live(self, sid: str, report: Callable[[], dict[str, Any]] | None) -> None:
        """``report`` gives a live session's report so far; None when it has ended."""
        if report is None:
            self._live.pop(sid, None)
        else:
            self._live[sid] = report

    def observe(self, sid: str, observer: Observer) -> bool:
        """``observer`` gets ``sid``'s events from now on; False if it has too many already."""
        observers = self._observers.setdefault(sid, set())
        if len(observers) >= MAX_OBSERVERS_PER_SID:
            return False
        observers.add(observer)
        return True

    def unobserve(self, observer: Observer) -> None:
        for sid, observers in list(self._observers.items()):
            observers.discard(observer)
            if not observers:
                del self._observers[sid]

    async def report(self, sid: str) -> dict[str, Any] | None:
        """``sid``'s report: live, or as stored by this or another worker; None if unknown."""
        live = self._live.get(sid)
        if live is not None:
            return live()
        if self._store is not None:
            found = await self._call(self._store.report, sid)
            if found is not None:
                return found
        for other in sorted(Path(self._settings.data_dir).glob("worker-*")):
            if other != self._folder and (other / FILENAME).exists():
                found = await self._call(_report_in, other, sid)
                if found is not None:
                    return found
        return None

    def statistics(self) -> RecordsStatistics:
        outbox = self._outbox
        return RecordsStatistics(
            self._problem,
            self._fault,
            depth=outbox.depth if outbox else 0,
            oldest_s=outbox.oldest_s if outbox else 0.0,
            dead=outbox.dead if outbox else 0,
            emitted=self._emitted,
            lost=self._lost,
            deliveries=self._deliverer.statistics() if self._deliverer else None,
        )

    async def _refresh(self) -> None:
        """Read the outbox's figures for /metrics every :data:`REFRESH_S` (a query: not on the
        event loop, and not at every scrape)."""
        assert self._store is not None
        while True:
            try:
                self._outbox = await self._call(self._store.statistics, self._clock())
            except StoreError as e:
                self._failed(e, "statistics")
            await trio.sleep(REFRESH_S)


def _empty_report(record: SessionRecord) -> dict[str, Any]:
    """The report of a session cut before its first report was saved: nothing seen yet."""
    nothing = Episodes(EpisodeSettings(), record.started)
    return reports.report(
        record.sid, record.sub, record.metadata, nothing.summary(), [], end=None, reason=None
    )


def _lock(folder: Path) -> IO[bytes]:
    """Lock ``folder`` for this process: a second trackerd on the same ``--data-dir`` would end
    this one's live sessions as cut by a crash, and deliver its events twice, out of order."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        file = (folder / LOCK_FILE).open("ab")
    except OSError as e:
        message = f"cannot use the data folder {folder} ({e.strerror or e})"
        raise StoreError(message, Fault.NOT_WRITABLE) from e
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        file.close()
        message = f"another trackerd process uses the data folder {folder}: give each its own"
        raise StoreError(message, Fault.LOCKED) from None
    return file


def _report_in(folder: Path, sid: str) -> dict[str, Any] | None:
    store = Store.open(folder, (), read_only=True)
    try:
        return store.report(sid)
    finally:
        store.close()


def report_main(argv: Sequence[str]) -> int:
    """``trackerd report SID``: print a session's report as JSON, from the database in
    ``--data-dir`` (every worker's). Exit 1 when no database there knows the session."""
    from trackerd.settings import DEFAULT_DATA_DIR

    parser = argparse.ArgumentParser(
        prog="trackerd report",
        description="Print a push session's report (the session.ended data, or the report so "
        "far of a live session as last saved) from trackerd's database.",
    )
    parser.add_argument("sid", help="the session's id (its token's sid)")
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("TRACKERD_DATA_DIR", DEFAULT_DATA_DIR),
        help="the server's --data-dir (default: $TRACKERD_DATA_DIR, or %(default)s)",
    )
    args = parser.parse_args(list(argv))
    base = Path(args.data_dir)
    folders = [base, *sorted(base.glob("worker-*"))]
    try:
        for found in (_report_in(f, args.sid) for f in folders if (f / FILENAME).exists()):
            if found is not None:
                print(json.dumps(found, indent=2))
                return 0
    except StoreError as e:
        print(f"trackerd report: {e}", file=sys.stderr)
        return 1
    print(f"trackerd report: no session {args.sid!r} in {base}", file=sys.stderr)
    return 1
