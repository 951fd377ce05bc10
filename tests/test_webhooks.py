"""Webhook delivery (issue 21, item 4): :func:`retry_delay` on its own, then a real
:class:`Deliverer` (httpx under trio) against real receiver processes (tests/receiver.py), which
verify every request with the ``standardwebhooks`` package, not trackerd's code.

- An outage of 500s, timeouts and refused connections: every event arrives, in order, each id
  once or more, the head retried under the same id, signed with the time of each attempt; one
  WARNING for the whole streak.
- An event past the maximum age gets one more attempt, and is dead if it fails; the next goes.
- A wrong secret is refused by the receiver (so the verification is real), and retried.
- Two URLs, one hung: the other gets everything.
- A kick wakes an idle task; a database locked under the Deliverer is logged once and retried,
  and the event goes again rather than being lost.

This module replays the outage in seconds, not the issue's 60: the refusal lasts 2 s, an
attempt times out after 0.5 s (a loopback answer takes milliseconds) and the backoff runs from
0.05 s to 0.4 s, so that attempts fall inside the refusal and the first after it comes within
0.4 s. The full-length outage against a real trackerd is the end-to-end test's. Nothing sleeps
to wait: the tests wait for the receiver's lines.
"""

from __future__ import annotations

import base64
import logging
import math
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.receiver import receiver
from tests.test_store import LOCKER, child, read_lines
from trackerd.platform.store import FILENAME, Store
from trackerd.platform.webhooks import Deliverer, retry_delay

SECRET = "whsec_" + base64.b64encode(b"trackerd-test-webhook-secret-32b").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"not-the-secret-trackerd-signs-wi").decode()
FAST: dict[str, Any] = {"timeout_s": 0.5, "base_s": 0.05, "cap_s": 0.4, "max_age_s": 3600.0}
CAP_S = 30


def add(store: Store, numbers: range, now: float | None = None) -> list[str]:
    return [
        store.add_event(
            "episode.started", {"sid": "s1", "n": n}, time.time() if now is None else now
        )
        for n in numbers
    ]


@asynccontextmanager
async def delivering(store: Store, urls: list[str], **options: Any) -> AsyncIterator[Deliverer]:
    deliverer = Deliverer(store, urls, SECRET, **{**FAST, **options})
    async with trio.open_nursery() as nursery:
        await nursery.start(deliverer.run)
        yield deliverer
        nursery.cancel_scope.cancel()


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "trackerd.platform.webhooks" and r.levelno == level
    ]


def test_retry_delay_doubles_from_base_to_cap_with_full_jitter() -> None:
    ceilings = [retry_delay(n, lambda: 1.0, base_s=1.0, cap_s=300.0) for n in range(1, 12)]
    assert ceilings == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert retry_delay(3, lambda: 0.25, base_s=2.0) == 2.0
    assert retry_delay(7, lambda: 0.0) == 0.0
    assert retry_delay(10**9, lambda: 0.5, cap_s=300.0) == 150.0  # no overflow, ever
    rng = random.Random(21)
    delays = [retry_delay(4, rng.random, base_s=1.0) for _ in range(4000)]
    # Full jitter: spread over the whole of [0, 8), not bunched near the ceiling.
    assert all(0.0 <= d < 8.0 for d in delays)
    assert min(delays) < 0.1 and max(delays) > 7.9
    assert abs(sum(delays) / len(delays) - 4.0) < 0.2
    with pytest.raises(ValueError, match="attempts must be >= 1"):
        retry_delay(0)


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        ("whsec_!!not base64 at all!!", r"whsec_ then base64$"),
        (
            "whsec_" + base64.b64encode(b"short").decode(),
            r"at least 24 random bytes \(it holds 5\)",
        ),
        (SECRET.removeprefix("whsec_"), r"must start with whsec_"),
    ],
)
def test_a_bad_secret_is_refused_without_being_shown(tmp_path: Path, secret: str, why: str) -> None:
    store = Store.open(tmp_path, [])
    with pytest.raises(ValueError, match=why) as caught:
        Deliverer(store, [], secret, max_age_s=1.0)
    assert secret.removeprefix("whsec_") not in str(caught.value)
    assert caught.value.__cause__ is None


async def test_every_event_arrives_in_order_through_500s_timeouts_and_refused_connections(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trackerd.platform.webhooks")
    with trio.fail_after(CAP_S):
        async with receiver(SECRET, "500x2,hang:3,refuse:2s,ok") as rx:
            store = Store.open(tmp_path, [rx.url()])
            started = time.time()
            ids = add(store, range(5))
            async with delivering(store, [rx.url()]) as deliverer:
                await rx.wait(lambda: bool(rx.logged(r"refusing connections for 2 s")))
                ids += add(store, range(5, 10))  # more events, during the outage
                deliverer.kick()
                await rx.wait(lambda: set(ids) <= set(rx.ids))
    # Each id once or more, none lost, in order.
    assert list(dict.fromkeys(rx.ids)) == ids
    assert [d["body"]["data"]["n"] for d in rx.deliveries[:10]] == list(range(10))
    assert all(d["body"]["type"] == "episode.started" for d in rx.deliveries)
    # The head met the whole outage, under one id; nothing behind it went first.
    assert [m[1] for m in rx.logged(r"answered 500 to (\S+)")] == [ids[0]] * 2
    assert [m[1] for m in rx.logged(r"hung on (\S+)")] == [ids[0]] * 3
    assert rx.logged(r"listening again on \d+")
    # Signed with the time of the attempt that got through, not of the first one.
    assert rx.deliveries[0]["attempt_at"] >= math.floor(started) + 2
    statistics = deliverer.statistics()
    # The receiver prints before it answers: the last 2xx may not be counted yet.
    assert statistics.delivered >= len(ids) - 1 and statistics.dead == 0
    assert statistics.failed >= 2 + 3 + 1 and statistics.failing_urls == 0
    assert statistics.latency_count == statistics.delivered
    assert statistics.latency_sum_s > 2.0  # the head waited out the refusal
    # One WARNING for the streak; the rest of it at DEBUG, then one INFO when it delivers.
    (warning,) = records(caplog, logging.WARNING)
    assert warning.startswith(f"webhook {rx.url()}: HTTP 500: 'planned'; retrying")
    debug = "\n".join(records(caplog, logging.DEBUG))
    assert "no answer within 0.5 s" in debug and "ConnectError" in debug
    assert any("delivers again, after" in m for m in records(caplog, logging.INFO))


async def test_an_event_past_the_maximum_age_gets_one_more_try_then_is_dead(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trackerd.platform.webhooks")
    with trio.fail_after(CAP_S):
        async with receiver(SECRET, "500") as rx:
            store = Store.open(tmp_path, [rx.url()])
            long_ago = time.time() - 3601.0
            # The first fails past its age: dead. The second, as old, is answered: delivered
            # (age alone kills nothing). The third is young.
            doomed, late = add(store, range(2), now=long_ago)
            (young,) = add(store, range(2, 3))
            async with delivering(store, [rx.url()]) as deliverer:
                await rx.wait(lambda: young in rx.ids)
    assert [m[1] for m in rx.logged(r"answered 500 to (\S+)")] == [doomed]
    assert rx.ids == [late, young]
    assert deliverer.statistics().dead == 1 and deliverer.statistics().failed == 0
    assert store.statistics(time.time()).dead == 1  # kept and counted, not deleted
    (warning,) = records(caplog, logging.WARNING)
    assert f"event {doomed} is dead, undelivered for 360" in warning
    assert "kept in the database" in warning


async def test_the_receiver_refuses_a_wrong_signature_and_it_is_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(CAP_S):
        async with receiver(OTHER_SECRET) as rx:
            store = Store.open(tmp_path, [rx.url()])
            (event,) = add(store, range(1))
            async with delivering(store, [rx.url()]) as deliverer:
                await rx.wait(lambda: len(rx.logged(r"bad signature from \S+: .*")) >= 2)
    assert [m[1] for m in rx.logged(r"bad signature from (\S+): (.*)")][:2] == [event, event]
    assert rx.deliveries == []
    # >= 1: the receiver prints before it answers, so the last 400 may not be counted yet.
    assert deliverer.statistics().delivered == 0 and deliverer.statistics().failed >= 1
    (warning,) = records(caplog, logging.WARNING)
    assert "HTTP 400: 'bad signature: No matching signature found'" in warning


async def test_two_urls_one_hung_the_other_gets_every_event(tmp_path: Path) -> None:
    with trio.fail_after(CAP_S):
        async with receiver(SECRET) as up, receiver(SECRET, "hang:1000") as down:
            store = Store.open(tmp_path, [down.url(), up.url()])
            ids = add(store, range(5))
            async with delivering(store, [down.url(), up.url()]) as deliverer:
                await up.wait(lambda: set(ids) <= set(up.ids))
                await down.wait(lambda: len(down.logged(r"hung on \S+")) >= 2)
    assert up.ids == ids
    assert {m[1] for m in down.logged(r"hung on (\S+)")} == {ids[0]}  # its head only
    assert down.deliveries == []
    assert deliverer.statistics().failing_urls == 1
    assert store.statistics(time.time()).depth >= 5  # the hung URL's are all still pending


async def test_a_kick_wakes_an_idle_url_at_once(tmp_path: Path) -> None:
    with trio.fail_after(CAP_S):
        async with receiver(SECRET) as rx:
            store = Store.open(tmp_path, [rx.url()])
            first = add(store, range(1))
            # Without the kick, the next look would be 1000 s away.
            async with delivering(store, [rx.url()], idle_poll_s=1000.0) as deliverer:
                await rx.wait(lambda: rx.ids == first)
                second = add(store, range(1, 2))
                deliverer.kick()
                await rx.wait(lambda: len(rx.ids) == 2)
    assert rx.ids == first + second


async def test_a_locked_database_is_logged_once_and_the_event_goes_again_not_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trackerd.platform.webhooks")
    with trio.fail_after(CAP_S):
        async with receiver(SECRET) as rx:
            # 0.2 s: each failed write of the Deliverer waits that long for the lock.
            store = Store.open(tmp_path, [rx.url()], busy_timeout_s=0.2)
            (first,) = add(store, range(1))
            async with child(LOCKER, str(tmp_path / FILENAME)) as (locker, lines):
                await read_lines(locker, lines, 1)
                async with delivering(store, [rx.url()]) as deliverer:
                    # Delivered, but not recorded (locked): sent again, under its id.
                    await rx.wait(lambda: rx.ids.count(first) >= 2)
                    assert locker.stdin is not None
                    await locker.stdin.aclose()
                    assert await locker.wait() == 0
                    (second,) = await trio.to_thread.run_sync(add, store, range(1, 2))
                    deliverer.kick()
                    # Head of line: the second goes once the first is recorded delivered.
                    await rx.wait(lambda: second in rx.ids)
    assert set(rx.ids) == {first, second} and rx.ids[-1] == second
    assert deliverer.statistics().store_errors >= 1
    (error,) = records(caplog, logging.ERROR)
    assert "cannot record a delivery: the database" in error and "is locked" in error
    assert any("the database works again" in m for m in records(caplog, logging.INFO))
