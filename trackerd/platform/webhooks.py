"""Webhook delivery: the outbox of :mod:`trackerd.platform.store`, POSTed until a 2xx.

One task per URL, each with its own ``httpx.AsyncClient`` of one connection (httpx runs on
anyio, which runs on trio). A task takes its URL's oldest pending event from the store, POSTs
it, and records the outcome, one request at a time: a URL's events arrive in order, and a slow
or dead URL holds up only its own.

- **Signed by Standard Webhooks** (the ``standardwebhooks`` package's own ``sign``): headers
  ``webhook-id`` (the event's id, the same on every retry, so a receiver drops duplicates),
  ``webhook-timestamp`` (this attempt's time, in seconds: a receiver refuses one more than
  5 minutes off, so a retry is signed afresh) and ``webhook-signature``.
- **At least once.** An event leaves the outbox only when a 2xx is recorded. A 2xx whose
  recording fails (or a crash just after it) sends the event again: a duplicate, never a loss.
- **A failed attempt** (any non-2xx answer, including a redirect, which is not followed; no
  answer within ``timeout_s``; a refused or broken connection) is retried after
  :func:`retry_delay`: exponential backoff from ``base_s`` doubling to ``cap_s``, with full
  jitter, so that many senders do not come back at a receiver in step. Logged at WARNING once
  per streak of failures, and at INFO when the URL delivers again.
- **Dead**: an event still failing ``max_age_s`` after it was emitted is marked dead at its next
  failed attempt: kept in the database and counted, and the URL moves on to its next event.
- **The store's own faults** (a full disk, a lock) are logged (ERROR once per streak) and
  retried with the same backoff: they never end a task.

Store calls run in a worker thread (``trio.to_thread.run_sync``) under one
``CapacityLimiter(1)`` for the whole :class:`Deliverer`, so that the webhooks hold at most one
thread however many URLs there are. A task with nothing pending waits for :meth:`Deliverer.kick`
(an event was just added) or :data:`IDLE_POLL_S`, whichever comes first.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, TypeVar

import trio
from standardwebhooks.webhooks import Webhook

from trackerd import __version__
from trackerd.keys import check_webhook_secret
from trackerd.platform.store import Due, Store, StoreError, display_url

if TYPE_CHECKING:
    # Imported where a URL is served: a server without webhooks never needs httpx, and its
    # import (~30 ms) is start-up time.
    import httpx

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_TIMEOUT_S: Final = 10.0
"""An attempt with no complete answer within this long has failed. A receiver should answer
at once and do its work later (Standard Webhooks, Stripe and GitHub all ask that; GitHub waits
10 s); longer would let one hung receiver slow its queue to a crawl."""
DEFAULT_BASE_S: Final = 1.0
DEFAULT_CAP_S: Final = 300.0
"""The longest wait between two attempts. A receiver back from an outage gets its backlog
within 5 minutes (plus the backlog's own time), and a dead one costs one request per 5 minutes
on average."""
IDLE_POLL_S: Final = 60.0
"""A task with nothing pending looks at the outbox at least this often, even without a kick: a
kick missed (an event added by a path that does not kick) delays an event by at most this."""
MAX_ANSWER_BYTES: Final = 200
"""The start of a non-2xx answer kept for the log: a receiver's reason ("bad signature") fits;
the rest is not read."""
USER_AGENT: Final = f"trackerd-webhooks/{__version__}"


def retry_delay(
    attempts: int,
    random: Callable[[], float] = random.random,
    *,
    base_s: float = DEFAULT_BASE_S,
    cap_s: float = DEFAULT_CAP_S,
) -> float:
    """Seconds to wait after ``attempts`` failed attempts (1 after the first) before the next:
    "full jitter", uniform in ``[0, min(cap_s, base_s * 2 ** (attempts - 1)))``. The jitter
    spreads the retries of many events failing together; it is full rather than partial
    because it is the one that costs a recovering receiver least (AWS's measurements in
    "Exponential Backoff And Jitter")."""
    if attempts < 1:
        raise ValueError(f"retry_delay: attempts must be >= 1, not {attempts}")
    # The exponent stops growing once the cap is reached, so that 2 ** n never overflows.
    ceiling = min(cap_s, base_s * 2.0 ** min(attempts - 1, 64))
    return random() * ceiling


@dataclass(frozen=True, slots=True)
class DeliveryStatistics:
    delivered: int
    """Attempts answered with a 2xx."""
    failed: int
    """Attempts that failed and will be retried."""
    dead: int
    """Attempts that failed on an event older than ``max_age_s``: it is dead."""
    latency_sum_s: float
    """Over delivered events: from the event's emission to its 2xx."""
    latency_count: int
    store_errors: int
    """Store calls that failed (the database is full, locked...): retried."""
    failing_urls: int
    """URLs in a streak of failed attempts right now."""


@dataclass(slots=True)
class _Streak:
    """A run of failures, of one URL's attempts or of the store's calls: what the log needs to
    say it once, and the backoff to count."""

    failures: int = 0
    since: float = 0.0
    dead: int = 0
    writes: bool = False
    """The store's streak: a write failed in it (a read that works then does not end it)."""

    def fail(self, now: float) -> bool:
        """Count a failure; whether it starts the streak."""
        self.failures += 1
        if self.failures == 1:
            self.since = now
            return True
        return False


class Deliverer:
    """Delivers the store's pending events to ``urls``; see the module's docstring.

    ``clock``: wall-clock seconds (events' times are stored, so they must mean the same after a
    restart); a test passes its own to age an event without waiting.
    """

    def __init__(
        self,
        store: Store,
        urls: Sequence[str],
        secret: str,
        *,
        max_age_s: float,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        base_s: float = DEFAULT_BASE_S,
        cap_s: float = DEFAULT_CAP_S,
        clock: Callable[[], float] = time.time,
        idle_poll_s: float = IDLE_POLL_S,
    ) -> None:
        self._webhook = Webhook(check_webhook_secret(secret))
        self._store = store
        self._urls = tuple(dict.fromkeys(urls))
        self._max_age_s = max_age_s
        self._timeout_s = timeout_s
        self._base_s = base_s
        self._cap_s = cap_s
        self._clock = clock
        self._idle_poll_s = idle_poll_s
        self._limiter = trio.CapacityLimiter(1)
        self._wake = {url: trio.Event() for url in self._urls}
        self._streaks = {url: _Streak() for url in self._urls}
        self._store_streak = _Streak()
        self._delivered = self._failed = self._dead = self._store_errors = 0
        self._latency_sum_s = 0.0

    def kick(self) -> None:
        """An event was just added: each idle task looks now rather than at its next poll. A
        task waiting to retry its head ignores it (the new event is behind the head). Call it
        from trio's thread."""
        for wake in self._wake.values():
            wake.set()

    def statistics(self) -> DeliveryStatistics:
        return DeliveryStatistics(
            delivered=self._delivered,
            failed=self._failed,
            dead=self._dead,
            latency_sum_s=self._latency_sum_s,
            latency_count=self._delivered,
            store_errors=self._store_errors,
            failing_urls=sum(1 for streak in self._streaks.values() if streak.failures),
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver until cancelled (ready at once: the first look at the outbox follows)."""
        async with trio.open_nursery() as nursery:
            for url in self._urls:
                nursery.start_soon(self._serve, url, name=f"webhook {display_url(url)}")
            task_status.started()
            if not self._urls:
                await trio.sleep_forever()

    async def _store_call(self, function: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(function, *args, limiter=self._limiter)

    async def _serve(self, url: str) -> None:
        import httpx

        async with httpx.AsyncClient(
            timeout=self._timeout_s,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            headers={"user-agent": USER_AGENT, "accept-encoding": "identity"},
        ) as client:
            while True:
                await self._step(client, url)

    async def _step(self, client: httpx.AsyncClient, url: str) -> None:
        """Deliver ``url``'s head if it is due, else wait until it is or an event comes."""
        # A new Event before looking: a kick from now on wakes the wait below.
        wake = self._wake[url] = trio.Event()
        try:
            due = await self._store_call(self._store.due, url, self._clock())
            at = await self._store_call(self._store.next_attempt_at, url) if due is None else None
        except StoreError as e:
            await self._store_failed(e, write=False)
            return
        self._store_worked(write=False)
        if due is not None:
            await self._attempt(client, url, due)
        elif at is None:
            with trio.move_on_after(self._idle_poll_s):
                await wake.wait()
        else:
            # Capped, in case the wall clock went back: the head is then looked at again
            # within cap_s rather than hours later.
            await trio.sleep(min(self._cap_s, max(0.0, at - self._clock())))

    async def _attempt(self, client: httpx.AsyncClient, url: str, due: Due) -> None:
        error = await self._post(client, url, due)
        now = self._clock()
        streak = self._streaks[url]
        if error is None:
            self._delivered += 1
            self._latency_sum_s += max(0.0, now - due.created)
            if streak.failures:
                log.info(
                    "webhook %s delivers again, after %d failed attempts in %.0f s",
                    display_url(url),
                    streak.failures,
                    now - streak.since,
                )
            self._streaks[url] = _Streak()
            try:
                await self._store_call(self._store.delivered, url, due.seq, now)
            except StoreError as e:
                # It stays pending and goes again: a duplicate, which its webhook-id lets the
                # receiver drop, rather than a loss.
                await self._store_failed(e, write=True)
            else:
                self._store_worked(write=True)
            return
        first = streak.fail(now)
        # The event's own attempts (they survive a restart), or the URL's streak if longer: a
        # new head behind a dead one does not restart the backoff of an outage at base_s.
        attempts = max(due.attempts + 1, streak.failures)
        delay = retry_delay(attempts, base_s=self._base_s, cap_s=self._cap_s)
        try:
            dead = await self._store_call(
                self._store.failed, url, due.seq, now, error, now + delay, self._max_age_s
            )
        except StoreError as e:
            await self._store_failed(e, write=True)
            return
        self._store_worked(write=True)
        if dead:
            self._dead += 1
            streak.dead += 1
            first = streak.dead == 1
            log.log(
                logging.WARNING if first else logging.DEBUG,
                "webhook %s: event %s is dead, undelivered for %.0f s (%d attempts; last: %s); "
                "kept in the database%s",
                display_url(url),
                due.id,
                now - due.created,
                due.attempts + 1,
                error,
                "; the next ones of this outage are logged at DEBUG" if first else "",
            )
            # No wait: the next event may be younger, and the receiver may be back.
            return
        self._failed += 1
        log.log(
            logging.WARNING if first else logging.DEBUG,
            "webhook %s: %s; retrying with backoff%s",
            display_url(url),
            error,
            " (logged again when it delivers)" if first else "",
        )
        await trio.sleep(delay)

    async def _post(self, client: httpx.AsyncClient, url: str, due: Due) -> str | None:
        """One attempt: ``None`` on a 2xx, else what went wrong."""
        import httpx  # loaded by _serve already: a lookup

        # Whole seconds, as the header carries them, so the signature covers exactly those.
        stamp = datetime.fromtimestamp(math.floor(self._clock()), UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": due.id,
            "webhook-timestamp": str(math.floor(stamp.timestamp())),
            "webhook-signature": self._webhook.sign(due.id, stamp, due.body.decode()),
        }
        # httpx's timeout bounds each phase (connect, each read); this one the whole attempt,
        # so that a receiver dripping its answer a byte at a time cannot hold the queue.
        with trio.move_on_after(self._timeout_s) as attempt:
            try:
                async with client.stream("POST", url, content=due.body, headers=headers) as answer:
                    start = await _read_start(answer)
            except httpx.HTTPError as e:
                return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        if attempt.cancelled_caught:
            return f"no answer within {self._timeout_s:g} s"
        if answer.is_success:
            return None
        reason = start.decode(errors="replace").strip()
        return f"HTTP {answer.status_code}" + (f": {reason!r}" if reason else "")

    async def _store_failed(self, error: StoreError, *, write: bool) -> None:
        self._store_errors += 1
        first = self._store_streak.fail(self._clock())
        self._store_streak.writes |= write
        log.log(
            logging.ERROR if first else logging.DEBUG,
            "webhooks: %s; retrying with backoff%s",
            error,
            " (logged again when the database works)" if first else "",
        )
        await trio.sleep(
            retry_delay(self._store_streak.failures, base_s=self._base_s, cap_s=self._cap_s)
        )

    def _store_worked(self, *, write: bool) -> None:
        streak = self._store_streak
        # A locked or full database still reads: only a write ends a streak of failed writes.
        if streak.failures and (write or not streak.writes):
            log.info("webhooks: the database works again, after %d failures", streak.failures)
            self._store_streak = _Streak()


async def _read_start(answer: httpx.Response) -> bytes:
    """The first :data:`MAX_ANSWER_BYTES` of an answer. A short answer (all that a receiver
    should send) is read to its end, which keeps the connection for the next request."""
    start = b""
    async for chunk in answer.aiter_raw():
        start += chunk
        if len(start) >= MAX_ANSWER_BYTES:
            break
    return start[:MAX_ANSWER_BYTES]
