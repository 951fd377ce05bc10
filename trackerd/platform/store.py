"""trackerd's database: sessions, their reports, and the webhook outbox, in one SQLite file.

``<data_dir>/trackerd.sqlite3``, stdlib :mod:`sqlite3`. What it promises:

- **An event is on disk before** :meth:`Store.add_event` **returns**: WAL with
  ``synchronous=FULL`` fsyncs the log at every commit, so an event survives ``kill -9`` of the
  process and a power cut alike (``NORMAL`` would lose the last commits on a power cut). An
  event counts as emitted only once it is here.
- **The outbox:** each event has one delivery row per webhook URL configured when it was added.
  A row stays *pending* until a 2xx marks it *delivered*; one still failing after
  ``max_age_s`` is marked *dead*, kept and counted, never deleted before the retention. Each
  URL is served in the order of its events: :meth:`Store.due` only ever offers a URL's oldest
  pending event (head of line), so a later event never overtakes an earlier one.
- **Sessions:** started, the report so far, the final report. One started and never ended is
  one a crash cut (:meth:`Store.unfinished`), for the server to end on its next start.
- :meth:`Store.purge` removes what is older than the retention: ended sessions, and events no
  longer pending.

The API blocks (a commit waits for the disk): the server calls it through
``trio.to_thread.run_sync``. One connection serves every thread (``check_same_thread=False``),
guarded by a lock, each call one transaction: SQLite would serialise writers anyway, and one
connection keeps the lock in this process rather than in a busy loop on the file.

Every :class:`sqlite3.Error` becomes a :class:`StoreError` whose message says what happened in
words an operator acts on (the disk is full, the database is locked by another process, it is
corrupt, it is not writable) and whose :attr:`StoreError.fault` names it for ``/readyz`` and the
metrics. Times are Unix seconds (``time.time()``), given by the caller: they are stored, so they
must mean the same after a restart, and tests pass their own.
"""

from __future__ import annotations

import enum
import json
import logging
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import quote, urlsplit

from trackerd.errors import TrackerdError

log = logging.getLogger(__name__)

T = TypeVar("T")

FILENAME: Final = "trackerd.sqlite3"
SCHEMA_VERSION: Final = 1
"""``PRAGMA user_version`` of the schema below; a file with a higher one was made by a newer
trackerd and is refused rather than misread."""
EVENT_TYPES: Final = ("episode.started", "episode.ended", "session.ended")
BUSY_TIMEOUT_S: Final = 2.0
"""How long a call waits for another process's lock before it fails with "locked". This process
never waits on itself (its calls take turns on one connection), so only another process can hold
the lock: a second trackerd on the same ``--data-dir``, or an ``sqlite3`` shell left in a
transaction. Their legitimate writes take milliseconds; a lock held for 2 s is not going away by
itself, and saying so in 2 s beats holding a worker thread (and the events behind it) for
longer. Short enough for a test to show it, too."""
PURGE_BATCH: Final = 1000
"""Rows deleted per transaction by :meth:`Store.purge`: the lock is released between batches, so
a month of rows is purged without holding up an event for more than a few milliseconds."""
MAX_ERROR_CHARS: Final = 500
"""A failed attempt's error as kept with its delivery (the last one only): enough for a status
line and the start of a receiver's answer."""
ID_BYTES: Final = 18
"""Random bytes of an event id (``msg_`` then 24 url-safe characters, 144 bits): unique
without coordination, also across replicas writing to the same receiver."""

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- the emission order; never reused
    id TEXT NOT NULL UNIQUE,                -- webhook-id
    type TEXT NOT NULL,
    body BLOB NOT NULL,                     -- the exact bytes that are signed and sent
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_created ON events (created);
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
    url TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    last_error TEXT,
    done_at REAL,
    PRIMARY KEY (seq, url)
) WITHOUT ROWID;
-- The head of each URL's queue without scanning the delivered rows before it.
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries (url, seq) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_dead ON deliveries (url) WHERE state = 'dead';
CREATE TABLE IF NOT EXISTS sessions (
    sid TEXT PRIMARY KEY,
    sub TEXT,
    metadata TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    report TEXT
);
CREATE INDEX IF NOT EXISTS sessions_ended ON sessions (ended) WHERE ended IS NOT NULL;
"""


_HEAD: Final = """
    SELECT d.seq, e.id, d.url, e.body, d.attempts, e.created, d.next_at
    FROM deliveries AS d JOIN events AS e ON e.seq = d.seq
    WHERE d.url = ? AND d.state = 'pending' ORDER BY d.seq LIMIT 1
"""
"""A URL's oldest pending delivery, through the partial index ``deliveries_pending``."""


class Fault(enum.Enum):
    """What went wrong with the database, for ``/readyz`` and the metrics."""

    DISK_FULL = "disk_full"
    LOCKED = "locked"
    CORRUPT = "corrupt"
    NOT_WRITABLE = "not_writable"
    IO = "io"
    OTHER = "other"


class StoreError(TrackerdError):
    """The database failed; the message says what happened and what to do."""

    def __init__(self, message: str, fault: Fault) -> None:
        super().__init__(message)
        self.fault = fault


@dataclass(frozen=True, slots=True)
class Due:
    """A URL's oldest pending event, due now."""

    seq: int
    id: str
    url: str
    body: bytes
    attempts: int
    """Attempts already made (0 for the first)."""
    created: float


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    depth: int
    """Pending deliveries over all configured URLs."""
    oldest_s: float
    """Age of the oldest pending delivery (0 when none)."""
    dead: int
    orphaned: int = 0
    """Pending deliveries to URLs no longer configured: kept, delivered if the URL returns."""


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A session as stored: what :meth:`Store.unfinished` cannot carry in its pair, for ending
    a session that a crash cut before its first report."""

    sid: str
    sub: str | None
    metadata: dict[str, Any]
    started: float
    ended: float | None
    report: dict[str, Any] | None


def iso_utc(t: float) -> str:
    """Unix seconds as ISO 8601 UTC with a ``Z``, to the millisecond."""
    text = datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")
    return text.removesuffix("+00:00") + "Z"


def _jsonable(value: object) -> object:
    # Read-only mappings (a token's metadata is a MappingProxyType) are JSON objects too.
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: object) -> str:
    """Compact JSON, ASCII only, refusing NaN and infinities (they are not JSON: a receiver's
    parser would reject the whole body)."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False, default=_jsonable)


def _explain(error: sqlite3.Error, path: Path, busy_timeout_s: float) -> tuple[str, Fault]:
    code = getattr(error, "sqlite_errorcode", None)
    primary = code & 0xFF if code is not None else None
    detail = str(error)
    if primary == sqlite3.SQLITE_FULL:
        return f"the disk is full: {path} cannot grow ({detail})", Fault.DISK_FULL
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return (
            f"the database {path} is locked by another process (waited {busy_timeout_s:g} s): "
            "is a second trackerd, or an sqlite3 shell, using the same --data-dir?",
            Fault.LOCKED,
        )
    if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return (
            f"the database {path} is corrupt ({detail}): move it aside (trackerd then starts a "
            "new one) and keep it to recover what it holds",
            Fault.CORRUPT,
        )
    if primary in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM):
        return (
            f"the database {path} is not writable ({detail}): check that its folder exists "
            "and that trackerd's user may write there",
            Fault.NOT_WRITABLE,
        )
    if primary == sqlite3.SQLITE_IOERR:
        return f"a disk I/O error on {path} ({detail})", Fault.IO
    return f"the database {path} failed: {detail}", Fault.OTHER


class Store:
    """The database; see the module's docstring. Make one with :meth:`open`."""

    def __init__(
        self, db: sqlite3.Connection, path: Path, urls: Sequence[str], busy_timeout_s: float
    ) -> None:
        self._db = db
        self._lock = threading.Lock()
        self.path = path
        self._urls = tuple(dict.fromkeys(urls))  # a URL given twice gets one delivery
        self._busy_timeout_s = busy_timeout_s

    @classmethod
    def open(
        cls,
        data_dir: Path,
        urls: Sequence[str],
        *,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
        max_bytes: int | None = None,
        read_only: bool = False,
    ) -> Store:
        """Open (or create) ``data_dir/trackerd.sqlite3`` and check it (``PRAGMA quick_check``:
        a corrupt file is refused here, not half-way through a session).

        ``urls``: the webhook URLs each new event gets a delivery row for. ``max_bytes``: a cap
        on the file's size (``PRAGMA max_page_count``), reached as a full disk is; ``None``, the
        disk is the limit. ``read_only``: for a reader beside the server (``trackerd report``):
        an existing database only, no check of the whole file and no change to it.
        """
        path = Path(data_dir) / FILENAME
        if read_only and not path.is_file():
            raise StoreError(f"there is no database at {path}", Fault.OTHER)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(
                f"cannot create the data folder {path.parent} ({e.strerror or e}): check that "
                "trackerd's user may write there, and that it is not a file",
                Fault.NOT_WRITABLE,
            ) from e
        target = f"file:{quote(str(path.absolute()))}?mode=ro" if read_only else str(path)
        try:
            db = sqlite3.connect(
                target,
                timeout=busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
                uri=read_only,
            )
        except sqlite3.Error as e:
            message, fault = _explain(e, path, busy_timeout_s)
            raise StoreError(f"cannot open the database: {message}", fault) from e
        store = cls(db, path, urls, busy_timeout_s)
        try:
            if read_only:
                store._check_version(read_only=True)
            else:
                store._prepare(max_bytes)
        except BaseException:
            db.close()
            raise
        return store

    def _check_version(self, *, read_only: bool) -> int:
        with self._call("cannot open the database") as db:
            version: int = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the database {self.path} has schema {version}, made by a newer trackerd "
                f"(this one knows {SCHEMA_VERSION}): run that version, or move the file aside",
                Fault.OTHER,
            )
        if read_only and version < SCHEMA_VERSION:
            raise StoreError(f"{self.path} is not a trackerd database (yet)", Fault.OTHER)
        return version

    def _prepare(self, max_bytes: int | None) -> None:
        with self._call("cannot open the database"):
            db = self._db
            rows = db.execute("PRAGMA quick_check").fetchall()
            if rows != [("ok",)]:
                problems = "; ".join(str(row[0]) for row in rows[:3])
                raise StoreError(
                    f"cannot open the database: the database {self.path} is corrupt "
                    f"(quick_check: {problems}): move it aside (trackerd then starts a new one) "
                    "and keep it to recover what it holds",
                    Fault.CORRUPT,
                )
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                # Durability is the same in rollback-journal mode; only readers wait on writers.
                log.warning("%s: WAL is not available here (journal mode %s)", self.path, mode)
            db.execute("PRAGMA synchronous = FULL")
            db.execute("PRAGMA foreign_keys = ON")
            if max_bytes is not None:
                page = db.execute("PRAGMA page_size").fetchone()[0]
                db.execute(f"PRAGMA max_page_count = {max(1, int(max_bytes) // page)}")
        # The lock is not reentrant: the version is read between two turns, which is fine at
        # open (no other thread has this store yet).
        if self._check_version(read_only=False) < SCHEMA_VERSION:
            with self._call("cannot open the database") as db:
                # One transaction in the script itself (executescript commits any open one
                # before it starts).
                try:
                    db.executescript(
                        f"BEGIN IMMEDIATE; {_SCHEMA}\n"
                        f"PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
                    )
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
        with self._call("cannot open the database") as db:
            orphans = db.execute(
                "SELECT url, COUNT(*) FROM deliveries WHERE state = 'pending' GROUP BY url"
            ).fetchall()
        for url, count in orphans:
            if url not in self._urls:
                log.warning(
                    "%d undelivered events for a webhook URL no longer configured (%s): kept, "
                    "and delivered if it is configured again",
                    count,
                    display_url(url),
                )

    @contextmanager
    def _call(self, what: str) -> Iterator[sqlite3.Connection]:
        """The connection, for this thread alone; any sqlite3 error as a :class:`StoreError`
        that starts with ``what``."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as e:
                message, fault = _explain(e, self.path, self._busy_timeout_s)
                raise StoreError(f"{what}: {message}", fault) from e

    def _write(self, what: str, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work`` in one write transaction, committed (on disk) before this returns."""
        with self._call(what) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = work(db)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    try:
                        db.execute("ROLLBACK")
                    except sqlite3.Error as rollback:
                        # SQLite rolls back by itself after some failures (a full disk):
                        # the first error is the one to report.
                        log.debug("rollback after a failed write: %s", rollback)
                raise
            return result

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # The outbox.

    def add_event(self, type: str, data: Mapping[str, Any], now: float) -> str:
        """Store one event, with a pending delivery for each configured URL (none without URLs:
        it is then a record of the event), and return its id, once it is on disk.

        The body is Standard Webhooks' ``{"type", "timestamp", "data"}`` as compact JSON bytes,
        signed and sent as is on every attempt. Raises :class:`ValueError` for an unknown type
        or data that is not JSON (NaN included): a bug in the caller, not the database's.
        """
        if type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {type!r}; one of {', '.join(EVENT_TYPES)}")
        body = dumps({"type": type, "timestamp": iso_utc(now), "data": data}).encode()
        event_id = "msg_" + secrets.token_urlsafe(ID_BYTES)

        def work(db: sqlite3.Connection) -> None:
            cursor = db.execute(
                "INSERT INTO events (id, type, body, created) VALUES (?, ?, ?, ?)",
                (event_id, type, body, now),
            )
            db.executemany(
                "INSERT INTO deliveries (seq, url, state, next_at) VALUES (?, ?, 'pending', ?)",
                [(cursor.lastrowid, url, now) for url in self._urls],
            )

        self._write(f"cannot store the {type} event", work)
        return event_id

    def due(self, url: str, now: float) -> Due | None:
        """The oldest pending event for ``url``, if its next attempt is due by ``now``. A later
        event is never offered before it: that keeps each URL's order."""
        with self._call("cannot read the webhook outbox") as db:
            row = db.execute(_HEAD, (url,)).fetchone()
        if row is None or row[6] > now:
            return None
        return Due(*row[:6])

    def next_attempt_at(self, url: str) -> float | None:
        """When the oldest pending event for ``url`` is next due; ``None`` when none is."""
        with self._call("cannot read the webhook outbox") as db:
            row = db.execute(_HEAD, (url,)).fetchone()
        return None if row is None else float(row[6])

    def delivered(self, url: str, seq: int, now: float) -> None:
        self._write(
            "cannot record a delivery",
            lambda db: db.execute(
                "UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, "
                "done_at = ?, last_error = NULL WHERE seq = ? AND url = ? AND state = 'pending'",
                (now, seq, url),
            ),
        )

    def failed(
        self, url: str, seq: int, now: float, error: str, retry_at: float, max_age_s: float
    ) -> bool:
        """Record a failed attempt, to be retried at ``retry_at``; or mark the delivery dead
        (kept, never deleted before the retention) if the event is older than ``max_age_s``.
        Returns whether it is now dead."""

        def work(db: sqlite3.Connection) -> bool:
            row = db.execute("SELECT created FROM events WHERE seq = ?", (seq,)).fetchone()
            dead = row is not None and now - row[0] > max_age_s
            state, done_at = ("dead", now) if dead else ("pending", None)
            db.execute(
                "UPDATE deliveries SET attempts = attempts + 1, last_error = ?, next_at = ?, "
                "state = ?, done_at = ? WHERE seq = ? AND url = ? AND state = 'pending'",
                (error[:MAX_ERROR_CHARS], retry_at, state, done_at, seq, url),
            )
            return dead

        return self._write("cannot record a failed delivery", work)

    # Sessions and reports.

    def session_started(
        self, sid: str, sub: str | None, metadata: Mapping[str, Any], started: float
    ) -> None:
        """Record a session's start. A sid that starts again after it ended starts afresh (its
        earlier report is replaced)."""
        self._write(
            "cannot record a session",
            lambda db: db.execute(
                "INSERT INTO sessions (sid, sub, metadata, started) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (sid) DO UPDATE SET sub = excluded.sub, "
                "metadata = excluded.metadata, started = excluded.started, ended = NULL, "
                "report = NULL",
                (sid, sub, dumps(metadata), started),
            ),
        )

    def save_report(self, sid: str, report: Mapping[str, Any], ended: float | None) -> None:
        """Save a session's report: the report so far (``ended`` None) or the final one. Raises
        :class:`KeyError` for a session never started: a bug in the caller."""

        def work(db: sqlite3.Connection) -> None:
            cursor = db.execute(
                "UPDATE sessions SET report = ?, ended = ? WHERE sid = ?",
                (dumps(report), ended, sid),
            )
            if cursor.rowcount == 0:
                raise KeyError(f"save_report: session {sid!r} was never started")

        self._write("cannot save a session report", work)

    def report(self, sid: str) -> dict[str, Any] | None:
        """The last report saved for ``sid``; ``None`` if there is none (yet, or any more)."""
        with self._call("cannot read a session report") as db:
            row = db.execute("SELECT report FROM sessions WHERE sid = ?", (sid,)).fetchone()
        return None if row is None or row[0] is None else _loads(row[0])

    def session(self, sid: str) -> SessionRecord | None:
        with self._call("cannot read a session") as db:
            row = db.execute(
                "SELECT sid, sub, metadata, started, ended, report FROM sessions WHERE sid = ?",
                (sid,),
            ).fetchone()
        if row is None:
            return None
        sid, sub, metadata, started, ended, report = row
        return SessionRecord(
            sid, sub, _loads(metadata), started, ended, None if report is None else _loads(report)
        )

    def unfinished(self) -> list[tuple[str, dict[str, Any] | None]]:
        """Sessions started and never ended, oldest first, with their last saved report: the
        ones a crash (``kill -9``, a power cut) cut short."""
        with self._call("cannot read the sessions") as db:
            rows = db.execute(
                "SELECT sid, report FROM sessions WHERE ended IS NULL ORDER BY started, sid"
            ).fetchall()
        return [(sid, None if report is None else _loads(report)) for sid, report in rows]

    # Upkeep.

    def purge(self, now: float, retention_s: float) -> int:
        """Delete ended sessions and events no longer pending (delivered or dead, or never sent
        anywhere) that are older than ``retention_s``; returns how many. In batches of
        :data:`PURGE_BATCH`, each its own transaction."""
        before = now - retention_s

        def work(db: sqlite3.Connection) -> int:
            sessions = db.execute(
                "DELETE FROM sessions WHERE sid IN (SELECT sid FROM sessions "
                "WHERE ended IS NOT NULL AND ended < ? LIMIT ?)",
                (before, PURGE_BATCH),
            ).rowcount
            events = db.execute(
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events AS e "
                "WHERE created < ? AND NOT EXISTS (SELECT 1 FROM deliveries AS d "
                "WHERE d.seq = e.seq AND d.state = 'pending') LIMIT ?)",
                (before, PURGE_BATCH),
            ).rowcount
            return max(0, sessions) + max(0, events)

        purged = 0
        while batch := self._write("cannot purge old sessions and events", work):
            purged += batch
        return purged

    def statistics(self, now: float) -> StoreStatistics:
        marks = ",".join("?" * len(self._urls))
        with self._call("cannot read the webhook outbox") as db:
            depth, oldest = db.execute(
                "SELECT COUNT(*), MIN(e.created) FROM deliveries AS d JOIN events AS e "
                f"ON e.seq = d.seq WHERE d.state = 'pending' AND d.url IN ({marks})",
                self._urls,
            ).fetchone()
            (pending,) = db.execute(
                "SELECT COUNT(*) FROM deliveries WHERE state = 'pending'"
            ).fetchone()
            (dead,) = db.execute("SELECT COUNT(*) FROM deliveries WHERE state = 'dead'").fetchone()
        return StoreStatistics(
            depth=depth,
            oldest_s=0.0 if oldest is None else max(0.0, now - oldest),
            dead=dead,
            orphaned=pending - depth,
        )


def _loads(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise StoreError(f"a stored report is not a JSON object: {text[:80]!r}", Fault.CORRUPT)
    return value


def display_url(url: str) -> str:
    """``url`` for logs: without its query and credentials, which often carry a receiver's
    token."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
