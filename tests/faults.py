"""Sources and an analyzer that fail on purpose, for tests/test_faults.py.

Each source records what the capture did to it — whether and by which thread it was closed,
whether it was closed while a read was still inside it — so that a test can check that a broken
source was released, and by the thread that was stuck in it. Anything blocked waits on a
``release`` event, which every test sets on its way out, so no thread outlives it for long.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tests.serverkit import Synthetic
from trackerd.sources import Source, SourceError
from trackerd.vision.observation import Observation

GOOD = np.zeros((4, 4, 3), np.uint8)


class FaultySource(Source):
    """A live source of tiny frames at ``fps`` that misbehaves on cue.

    - ``fails_after=n``: every read after ``n`` frames raises ``raises(message)``;
    - ``hangs_after=n``: the read after ``n`` frames blocks until ``release`` is set (then
      returns a frame, late, as a wedged driver might);
    - ``images``: what to deliver first, one per read, instead of good frames: an image (any
      object, garbage included) or an ``(image, t)`` pair; good frames follow;
    - ``read_takes``: how long each read takes, in seconds (instead of the ``fps`` pace);
    - ``close_takes``: how long ``close`` takes, in seconds (FFmpeg joins its decoder threads).
    """

    live = True
    description = "faulty source"

    def __init__(
        self,
        *,
        fps: float = 100.0,
        fails_after: int | None = None,
        raises: Callable[[str], BaseException] = SourceError,
        hangs_after: int | None = None,
        images: Iterable[object] = (),
        read_takes: Callable[[], float] | None = None,
        close_takes: float = 0.0,
    ) -> None:
        super().__init__()
        self._interval = 1.0 / fps
        self._next = time.monotonic()
        self._fails_after = fails_after
        self._raises = raises
        self._hangs_after = hangs_after
        self._images = iter(images)
        self._read_takes = read_takes
        self._close_takes = close_takes
        self.release = threading.Event()
        """Set to let a hung read return."""
        self.hung = threading.Event()
        """Set once a read is blocked."""
        self.hung_in: int | None = None
        """The thread blocked in the read."""
        self.closed = threading.Event()
        self.closed_by: int | None = None
        """The thread that called close()."""
        self.closes = 0
        self.closed_while_reading = False
        self.reads_after_close = 0
        self.fault_at: float | None = None
        """Wall-clock time (``time.time()``, like ``captured_at``) of the first fault."""
        self.scripted_done_at: float | None = None
        """Wall-clock time at which the last of ``images`` had been delivered."""
        self._reading = False

    def _fault(self) -> None:
        if self.fault_at is None:
            self.fault_at = time.time()

    def _read(self) -> tuple[NDArray[np.uint8], float] | None:
        if self.closed.is_set():
            self.reads_after_close += 1
            raise SourceError("faulty source read after close")
        self._reading = True
        try:
            return self._next_frame()
        finally:
            self._reading = False

    def _next_frame(self) -> tuple[NDArray[np.uint8], float] | None:
        n = self._count
        if self._fails_after is not None and n >= self._fails_after:
            self._fault()
            raise self._raises(f"{self.description} failed after {n} frames (injected)")
        if self._hangs_after is not None and n >= self._hangs_after:
            self._fault()
            self.hung_in = threading.get_ident()
            self.hung.set()
            self.release.wait()
            return GOOD, time.monotonic()
        if self._read_takes is not None:
            time.sleep(self._read_takes())
        else:
            self._next += self._interval
            time.sleep(max(0.0, self._next - time.monotonic()))
        if self.scripted_done_at is None:
            item = next(self._images, _END)
            if item is not _END:
                if item is not GOOD:
                    self._fault()
                if isinstance(item, tuple):
                    return item  # type: ignore[return-value]
                return item, time.monotonic()  # type: ignore[return-value]
            self.scripted_done_at = time.time()
        return GOOD, time.monotonic()

    def close(self) -> None:
        self.closed_while_reading = self.closed_while_reading or self._reading
        self.closed_by = threading.get_ident()
        self.closes += 1
        time.sleep(self._close_takes)
        self.closed.set()


_END = object()


class HangingOpen:
    """An ``open_source`` step (for :class:`tests.serverkit.Sources`) that blocks until
    ``release`` is set, then opens ``then()`` — after the capture has given up on it."""

    def __init__(self, then: Callable[[], FaultySource]) -> None:
        self._then = then
        self.release = threading.Event()
        self.entered = threading.Event()
        self.thread: int | None = None
        self.source: FaultySource | None = None
        """What the open returned, late; ``opened`` is set when it has."""
        self.opened = threading.Event()

    def __call__(self) -> Source:
        self.thread = threading.get_ident()
        self.entered.set()
        self.release.wait()
        self.source = self._then()
        self.opened.set()
        return self.source


class FailingAnalyzer(Synthetic):
    """:class:`Synthetic`, raising RuntimeError on the calls numbered in ``fails_on`` (from 1,
    counted across resets)."""

    def __init__(self, fails_on: Iterable[int]) -> None:
        super().__init__()
        self.calls = 0
        self._fails_on = frozenset(fails_on)
        self.failed_at: list[float] = []
        """Wall-clock time of each failure."""

    def process(self, image: NDArray[np.uint8], t: float) -> Observation:
        self.calls += 1
        if self.calls in self._fails_on:
            self.failed_at.append(time.time())
            raise RuntimeError(f"analysis bug (injected) on call {self.calls}")
        return super().process(image, t)


def release_all(*things: Any) -> None:
    """Let every blocked read or open return (tests call this on their way out)."""
    for thing in things:
        thing.release.set()
