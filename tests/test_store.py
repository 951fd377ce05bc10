"""The SQLite store (issue 21, item 4): the outbox's promises, the sessions, and the database's
faults, each named in the error an operator reads.

- An event is on disk when ``add_event`` returns: a real child process adds events and prints
  each id as the call returns; it is killed with SIGKILL, and every id it printed is in the
  reopened database, due, in order.
- Head-of-line order per URL, dead after the maximum age (kept until the retention), purge in
  batches, sessions a crash cut.
- Faults made for real: garbage written over the file, or over its pages behind an intact header
  (``PRAGMA quick_check`` at open finds it); another process holding an exclusive transaction
  (the store gives up after its 2 s ``busy_timeout``, which is why the test takes 2 s); and a
  full disk, simulated with ``max_bytes`` (``PRAGMA max_page_count``), because filling a real
  disk or mounting a small one needs root. SQLite returns the same ``SQLITE_FULL`` either way.

Times given to the store are made up (``NOW``); nothing waits on the clock except the lock.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from types import MappingProxyType

import pytest
import trio

from trackerd.platform import store as store_module
from trackerd.platform.store import (
    BUSY_TIMEOUT_S,
    FILENAME,
    Due,
    Fault,
    Store,
    StoreError,
    StoreStatistics,
)

A = "http://a.example/hooks?token=secret"
B = "https://b.example/trackerd"
NOW = 1_700_000_000.0
DAY = 86400.0


def walk(store: Store, url: str, now: float = math.inf) -> list[str]:
    """Every pending event of ``url``, in the order the store offers them, delivering each."""
    ids = []
    while (due := store.due(url, now)) is not None:
        ids.append(due.id)
        store.delivered(url, due.seq, now)
    return ids


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path, [A, B])


def test_an_event_is_a_standard_webhooks_body_with_a_delivery_per_url(store: Store) -> None:
    metadata = MappingProxyType({"exam": "algebra"})  # as a token's metadata is held
    event_id = store.add_event("episode.started", {"sid": "s1", "metadata": metadata}, NOW)
    assert re.fullmatch(r"msg_[A-Za-z0-9_-]{24}", event_id)
    due = store.due(A, NOW)
    assert isinstance(due, Due)
    assert (due.id, due.url, due.attempts, due.created) == (event_id, A, 0, NOW)
    assert store.due(B, NOW) is not None
    assert due.body == (
        b'{"type":"episode.started","timestamp":"2023-11-14T22:13:20.000Z",'
        b'"data":{"sid":"s1","metadata":{"exam":"algebra"}}}'
    )
    assert datetime.fromisoformat(json.loads(due.body)["timestamp"]).timestamp() == NOW
    assert store.statistics(NOW + 5) == StoreStatistics(depth=2, oldest_s=5.0, dead=0)


def test_without_urls_an_event_is_only_a_record(tmp_path: Path) -> None:
    store = Store.open(tmp_path, [])
    store.add_event("session.ended", {"sid": "s1"}, NOW)
    assert store.due(A, NOW) is None and store.next_attempt_at(A) is None
    assert store.statistics(NOW) == StoreStatistics(depth=0, oldest_s=0.0, dead=0)
    assert store.purge(NOW + 31 * DAY, 30 * DAY) == 1


def test_bad_events_are_refused_before_the_database(store: Store) -> None:
    with pytest.raises(ValueError, match=r"unknown event type 'episode\.paused'"):
        store.add_event("episode.paused", {}, NOW)
    with pytest.raises(ValueError, match="JSON"):
        store.add_event("episode.ended", {"duration_s": float("nan")}, NOW)
    assert store.statistics(NOW).depth == 0


def test_each_url_gets_its_events_in_order_and_a_failing_head_holds_only_its_url(
    store: Store,
) -> None:
    ids = [store.add_event("episode.started", {"n": n}, NOW + n) for n in range(3)]
    head = store.due(A, NOW + 10)
    assert head is not None and head.id == ids[0]
    assert not store.failed(A, head.seq, NOW + 10, "HTTP 500", NOW + 70, max_age_s=DAY)
    # A's head waits for its retry, and nothing overtakes it; B is not held up.
    assert store.due(A, NOW + 69) is None
    assert store.next_attempt_at(A) == NOW + 70
    assert walk(store, B) == ids
    again = store.due(A, NOW + 70)
    assert again is not None and (again.id, again.attempts) == (ids[0], 1)
    assert walk(store, A) == ids
    assert store.next_attempt_at(A) is None
    assert store.statistics(NOW + 100).depth == 0


def test_an_event_failing_past_the_maximum_age_is_dead_kept_and_no_longer_blocks(
    store: Store,
) -> None:
    old, new = (store.add_event("episode.ended", {"n": n}, NOW + n * DAY) for n in range(2))
    head = store.due(A, NOW)
    assert head is not None and head.id == old
    assert not store.failed(A, head.seq, NOW + 3 * 3600, "refused", NOW, max_age_s=3 * 3600)
    assert store.failed(A, head.seq, NOW + 3 * 3600 + 1, "refused", NOW, max_age_s=3 * 3600)
    assert walk(store, A) == [new]
    assert walk(store, B) == [old, new]
    assert store.statistics(NOW + DAY).dead == 1
    # Dead is kept until the retention, counted all along, then purged like the delivered.
    assert store.purge(NOW + 29 * DAY, 30 * DAY) == 0
    assert store.statistics(NOW + 29 * DAY).dead == 1
    assert store.purge(NOW + 31.5 * DAY, 30 * DAY) == 2
    assert store.statistics(NOW + 32 * DAY).dead == 0


def test_purge_takes_only_what_is_old_and_no_longer_needed(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "PURGE_BATCH", 2)  # several batches, each committed
    for n in range(5):
        store.session_started(f"old-{n}", "c", {}, NOW)
        store.save_report(f"old-{n}", {"n": n}, NOW + 60)
    store.session_started("recent", "c", {}, NOW + 20 * DAY)
    store.save_report("recent", {}, NOW + 20 * DAY)
    store.session_started("live", "c", {}, NOW)  # never ended: the server ends it, not purge
    delivered = [store.add_event("session.ended", {"n": n}, NOW) for n in range(5)]
    assert walk(store, A) == walk(store, B) == delivered
    pending = store.add_event("session.ended", {}, NOW)
    assert store.purge(NOW + 31 * DAY, 30 * DAY) == 10
    assert [store.report(f"old-{n}") for n in range(5)] == [None] * 5
    assert store.report("recent") == {} and [sid for sid, _ in store.unfinished()] == ["live"]
    assert [due.id for url in (A, B) if (due := store.due(url, NOW))] == [pending, pending]
    assert store.purge(NOW + 31 * DAY, 30 * DAY) == 0


def test_sessions_their_reports_and_the_ones_a_crash_cut(store: Store) -> None:
    store.session_started("s1", "cand-1", MappingProxyType({"exam": "x"}), NOW)
    store.session_started("s2", None, {}, NOW + 1)
    assert store.unfinished() == [("s1", None), ("s2", None)]
    store.save_report("s1", {"frames": 10}, None)
    assert store.unfinished() == [("s1", {"frames": 10}), ("s2", None)]
    assert store.report("s1") == {"frames": 10}
    store.save_report("s1", {"frames": 20, "reason": "stop"}, NOW + 60)
    assert store.unfinished() == [("s2", None)]
    record = store.session("s1")
    assert record is not None
    assert (record.sub, record.metadata, record.started, record.ended) == (
        "cand-1",
        {"exam": "x"},
        NOW,
        NOW + 60,
    )
    assert record.report == {"frames": 20, "reason": "stop"}
    # The same sid after it ended starts afresh.
    store.session_started("s1", "cand-1", {}, NOW + 100)
    assert store.report("s1") is None and ("s1", None) in store.unfinished()
    assert store.report("nobody") is None and store.session("nobody") is None
    with pytest.raises(KeyError, match="never started"):
        store.save_report("nobody", {}, None)


def test_everything_survives_close_and_reopen_and_a_url_removed_keeps_its_events(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store.open(tmp_path, [A, B])
    event = store.add_event("episode.started", {}, NOW)
    store.session_started("s1", "c", {}, NOW)
    store.close()
    store = Store.open(tmp_path, [B])
    assert store.statistics(NOW + 1) == StoreStatistics(depth=1, oldest_s=1.0, dead=0, orphaned=1)
    assert "undelivered events for a webhook URL no longer configured" in caplog.text
    assert "secret" not in caplog.text  # the URL's query (often a token) is not logged
    assert store.unfinished() == [("s1", None)]
    store.close()
    store = Store.open(tmp_path, [A, B])
    assert walk(store, A) == [event]


def test_calls_from_many_threads_take_turns(store: Store) -> None:
    added: dict[int, list[str]] = {}

    def add(n: int) -> None:
        added[n] = [store.add_event("episode.started", {"t": n}, NOW) for _ in range(25)]

    threads = [threading.Thread(target=add, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    offered = walk(store, A)
    assert sorted(offered) == sorted(i for ids in added.values() for i in ids)
    for ids in added.values():  # each thread's events in the order it added them
        assert [i for i in offered if i in ids] == ids


# Faults, made for real.


@asynccontextmanager
async def child(code: str, *args: str) -> AsyncIterator[tuple[trio.Process, list[str]]]:
    """A Python child running ``code``, its stdout lines (growing), killed on the way out."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        yield process, []
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


async def read_lines(process: trio.Process, lines: list[str], count: int) -> None:
    """Read ``process``'s stdout into ``lines`` until it holds at least ``count``."""
    assert process.stdout is not None
    pending = b""
    while len(lines) < count:
        chunk = await process.stdout.receive_some(65536)
        assert chunk, f"the child ended after {len(lines)} lines"
        *done, pending = (pending + chunk).split(b"\n")
        lines.extend(line.decode() for line in done)


ADDER = """
import sys, time
from pathlib import Path
from trackerd.platform.store import Store
store = Store.open(Path(sys.argv[1]), [sys.argv[2]])
for n in range(100_000):
    print(store.add_event("episode.started", {"n": n}, time.time()), flush=True)
"""


async def test_an_event_survives_kill_9_right_after_add_event_returns(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with child(ADDER, str(tmp_path), A) as (process, lines):
            await read_lines(process, lines, 50)
            process.kill()  # SIGKILL: no atexit, no close, no checkpoint
            await process.wait()
    assert process.returncode == -9
    printed = [line for line in lines if line]
    store = Store.open(tmp_path, [A])
    head = store.due(A, time.time())
    assert head is not None and head.id == printed[0]  # there, and due now
    # Every id printed is there, in order; the child may have committed one more unprinted.
    assert walk(store, A)[: len(printed)] == printed


def test_garbage_over_the_file_is_named_corrupt(tmp_path: Path) -> None:
    Store.open(tmp_path, [A]).close()
    path = tmp_path / FILENAME
    path.write_bytes(os.urandom(path.stat().st_size))
    with pytest.raises(StoreError, match=r"is corrupt \(file is not a database\)") as caught:
        Store.open(tmp_path, [A])
    assert caught.value.fault is Fault.CORRUPT
    assert "move it aside" in str(caught.value)


def test_garbage_behind_an_intact_header_is_found_at_open(tmp_path: Path) -> None:
    store = Store.open(tmp_path, [A])
    for n in range(200):
        store.add_event("episode.started", {"n": n, "pad": "x" * 200}, NOW)
    store.close()  # the last connection checkpoints the WAL into the file
    path = tmp_path / FILENAME
    size = path.stat().st_size
    assert size > 8 * 4096
    with path.open("r+b") as f:
        f.seek(2 * 4096)  # page 1 (the header and the schema) and page 2 left intact
        f.write(os.urandom(size - 2 * 4096))
    with pytest.raises(StoreError, match="is corrupt") as caught:
        Store.open(tmp_path, [A])
    assert caught.value.fault is Fault.CORRUPT


LOCKER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
db.execute("COMMIT")
"""


async def test_a_database_locked_by_another_process_is_named_locked(tmp_path: Path) -> None:
    store = Store.open(tmp_path, [A])
    with trio.fail_after(20):
        async with child(LOCKER, str(tmp_path / FILENAME)) as (process, lines):
            await read_lines(process, lines, 1)
            assert lines[0] == "locked"
            started = time.monotonic()
            with pytest.raises(StoreError) as caught:
                await trio.to_thread.run_sync(store.add_event, "episode.started", {}, NOW)
            waited = time.monotonic() - started
            assert caught.value.fault is Fault.LOCKED
            assert str(caught.value).startswith("cannot store the episode.started event: ")
            assert f"is locked by another process (waited {BUSY_TIMEOUT_S:g} s)" in str(
                caught.value
            )
            assert BUSY_TIMEOUT_S - 0.1 < waited < BUSY_TIMEOUT_S + 3
            assert store.due(A, NOW) is None  # reads go on (WAL): nothing half-written
            assert process.stdin is not None
            await process.stdin.aclose()  # the other process commits and leaves
            assert await process.wait() == 0
    # The same store works again, without a reopen.
    event = await trio.to_thread.run_sync(store.add_event, "episode.started", {}, NOW)
    assert walk(store, A) == [event]


def test_a_full_disk_is_named_and_what_was_stored_stays(tmp_path: Path) -> None:
    store = Store.open(tmp_path, [A, B], max_bytes=64 * 4096)
    stored = []
    with pytest.raises(StoreError) as caught:
        for n in range(10_000):
            stored.append(store.add_event("episode.ended", {"n": n, "pad": "x" * 500}, NOW))
    assert caught.value.fault is Fault.DISK_FULL
    assert "cannot store the episode.ended event: the disk is full" in str(caught.value)
    assert 10 < len(stored) < 10_000
    # The failed event left nothing behind; the others are whole, and reads still work.
    assert store.statistics(NOW).depth == 2 * len(stored)
    assert walk(store, B) == stored


def test_a_data_dir_that_cannot_be_made_is_named(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(StoreError, match=r"cannot create the data folder .*file/sub") as caught:
        Store.open(tmp_path / "file" / "sub", [A])
    assert caught.value.fault is Fault.NOT_WRITABLE


def test_a_database_from_a_newer_trackerd_is_refused(tmp_path: Path) -> None:
    import sqlite3

    Store.open(tmp_path, [A]).close()
    with sqlite3.connect(tmp_path / FILENAME) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="has schema 99, made by a newer trackerd"):
        Store.open(tmp_path, [A])


def test_a_reader_beside_the_server_reads_and_changes_nothing(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="there is no database at"):
        Store.open(tmp_path / "nothing here", [], read_only=True)
    assert not (tmp_path / "nothing here").exists()
    server = Store.open(tmp_path, [A])
    server.session_started("s1", "c", {}, NOW)
    server.save_report("s1", {"frames": 3}, None)
    reader = Store.open(tmp_path, [], read_only=True)
    assert reader.report("s1") == {"frames": 3}
    with pytest.raises(StoreError, match="is not writable") as caught:
        reader.add_event("session.ended", {}, NOW)
    assert caught.value.fault is Fault.NOT_WRITABLE
    server.save_report("s1", {"frames": 4}, NOW + 1)  # the server writes on, unhindered
    assert reader.report("s1") == {"frames": 4}
    reader.close()
