"""The hub: who is tracking, and the latest observation, handed to each of them without queues.

The capture task publishes; the hub serialises each observation once and offers it to every
subscriber synchronously. A subscriber's ``offer`` must never block: it either delivers at once
or keeps only this latest value for its own writer to send later, so a slow client skips stale
observations and never holds up the others or the capture. The hub knows nothing of WebSockets
or of where observations come from.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from trackerd import protocol
from trackerd.observation import Observation

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Published:
    """One observation, serialised once for every subscriber."""

    seq: int
    text: str
    _encoded: dict[str, bytes] = field(default_factory=dict)

    def encoded(self, key: str, encode: Callable[[str], bytes]) -> bytes:
        """``encode(text)``, computed once per observation however many clients ask."""
        data = self._encoded.get(key)
        if data is None:
            data = self._encoded[key] = encode(self.text)
        return data


class Subscriber(Protocol):
    def offer(self, published: Published) -> None:
        """Take the latest observation. Must not block."""

    def notify_error(self, message: str) -> None:
        """Tell the client something went wrong with the capture. Must not block."""


@dataclass(frozen=True, slots=True)
class HubStatistics:
    subscribers: int
    published: int


class Hub:
    def __init__(self) -> None:
        self._subscribers: dict[Subscriber, None] = {}  # ordered, for fair offer order
        self._seq = 0
        self._wanted = trio.Event()
        self.latest: Published | None = None

    # --- subscribers ---------------------------------------------------------------------------

    def subscribe(self, subscriber: Subscriber) -> bool:
        """Add a tracking client; False if it was already subscribed (nothing changes)."""
        if subscriber in self._subscribers:
            return False
        self._subscribers[subscriber] = None
        self._wanted.set()
        return True

    def unsubscribe(self, subscriber: Subscriber) -> bool:
        """Remove a tracking client (only that one); False if it was not subscribed."""
        if subscriber not in self._subscribers:
            return False
        del self._subscribers[subscriber]
        return True

    def is_subscribed(self, subscriber: Subscriber) -> bool:
        return subscriber in self._subscribers

    @property
    def wanted(self) -> bool:
        """True while at least one client is tracking."""
        return bool(self._subscribers)

    async def wait_wanted(self) -> None:
        """Return once at least one client is tracking."""
        while not self._subscribers:
            self._wanted = trio.Event()
            await self._wanted.wait()

    # --- from the capture ----------------------------------------------------------------------

    def publish(self, observation: Observation, captured_at: float) -> Published:
        self._seq += 1
        published = Published(self._seq, protocol.eye_data(observation, captured_at, self._seq))
        self.latest = published
        # A copy: an offer may end in a client leaving (a broken socket), which unsubscribes it.
        for subscriber in list(self._subscribers):
            subscriber.offer(published)
        return published

    def fail(self, message: str, *, drop_subscribers: bool) -> None:
        """Tell every tracking client; with ``drop_subscribers`` they stop tracking, so that a
        later ``start_tracking`` tries the source again (no camera at start)."""
        log.warning("capture: %s", message)
        for subscriber in list(self._subscribers):
            subscriber.notify_error(message)
        if drop_subscribers:
            self._subscribers.clear()

    def statistics(self) -> HubStatistics:
        return HubStatistics(len(self._subscribers), self._seq)
