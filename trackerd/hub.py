"""The hub: who is tracking, and the latest observation, handed to each of them without queues.

The capture task publishes; the hub serialises each observation once and offers it to every
subscriber synchronously. A subscriber's ``offer`` must never block: it either delivers at once
or keeps only this latest value for its own writer to send later, so a slow client skips stale
observations and never holds up the others or the capture. The hub knows nothing of WebSockets
or of where observations come from.

A hub can be closed for good (:meth:`Hub.close`): nothing will ever be published on it, and
each ``subscribe`` is answered with why, as a coded error. That is the shape of every server
that watches nothing of its own: ``--source none`` (push sessions only, see
:mod:`trackerd.capture`) and the workers after the first under ``--workers``
(:class:`trackerd.ops.workers.CameraElsewhere`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

import trio

from trackerd.vision.observation import Observation

log = logging.getLogger(__name__)

Encode = Callable[[Observation, float, int], str]
"""An observation, its capture time and its number, as the text every subscriber is sent: the
app gives the hub :func:`trackerd.net.protocol.eye_data`, so the hub never learns the wire
format (and imports nothing of the network side)."""

SOURCE_FAILED: Final = "source_failed"
"""The ``code`` of the errors the capture sends its viewers: the source does not open, or stopped
giving frames (the message says which, and what the server does about it)."""


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

    def notify_error(self, message: str, code: str) -> None:
        """Tell the client something went wrong with the capture (``code`` names the kind for
        programs, as in ``protocol.error``). Must not block."""


@dataclass(frozen=True, slots=True)
class Closed:
    """Why nobody can track on a closed hub: what each ``start_tracking`` is told."""

    message: str
    """For people: why, and what to do instead."""
    code: str
    """For programs: the error's ``code``."""


@dataclass(frozen=True, slots=True)
class HubStatistics:
    subscribers: int
    published: int


class Hub:
    def __init__(self, encode: Encode) -> None:
        self._encode = encode
        self._subscribers: dict[Subscriber, None] = {}  # ordered, for fair offer order
        self._seq = 0
        self._wanted = trio.Event()
        self.latest: Published | None = None
        self.closed: Closed | None = None
        """Set by :meth:`close`: then nobody can subscribe."""
        self.tap: Callable[[Observation, float, int], None] | None = None
        """Also given each observation published (with its time and number), before the
        subscribers: the camera's episodes (:mod:`trackerd.platform.camera`). Must not block."""

    # --- subscribers ---------------------------------------------------------------------------

    def subscribe(self, subscriber: Subscriber) -> bool:
        """Add a tracking client; False if it was already subscribed (nothing changes), or if
        the hub is closed (the client is told why)."""
        if self.closed is not None:
            subscriber.notify_error(self.closed.message, self.closed.code)
            return False
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
        if self.tap is not None:
            self.tap(observation, captured_at, self._seq)
        published = Published(self._seq, self._encode(observation, captured_at, self._seq))
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
            subscriber.notify_error(message, SOURCE_FAILED)
        if drop_subscribers:
            self._subscribers.clear()

    def close(self, closed: Closed) -> None:
        """Nothing will be published here: from now on each ``subscribe`` is refused with
        ``closed``, and so is any subscriber already in (told why, and dropped). A second close
        replaces the reason: the later word knows more (``--source none`` on a worker that
        :class:`~trackerd.ops.workers.CameraElsewhere` closed first)."""
        self.closed = closed
        for subscriber in list(self._subscribers):
            subscriber.notify_error(closed.message, closed.code)
        self._subscribers.clear()

    def statistics(self) -> HubStatistics:
        return HubStatistics(len(self._subscribers), self._seq)
