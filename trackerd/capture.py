"""The capture task: source → tracker → hub, running only while someone is tracking.

It waits for the first tracking client, opens the source, and reads, analyses and publishes
frames until the last tracking client stops or leaves; then it releases the source (the camera's
light goes off) and waits again. Blocking reads and the tracker run in a worker thread (cv2
releases the GIL) through a limiter of one, so the event loop keeps serving clients.

Failures: a source that cannot be opened is reported to the clients that asked, which stop
tracking (a later ``start_tracking`` tries again). A source that fails mid-stream is reported
and reopened with exponential backoff while clients still want it; data resumes when it does.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import numpy as np
import trio
from numpy.typing import NDArray

from trackerd.hub import Hub
from trackerd.observation import Observation
from trackerd.settings import Settings
from trackerd.sources import Frame, Source, SourceError

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.5
RECENT_FRAMES = 300


class FrameAnalyzer(Protocol):
    """What the capture needs of a tracker (``trackerd.tracker.Tracker`` is one)."""

    def process(self, image: NDArray[np.uint8], t: float) -> Observation: ...

    def reset(self) -> None: ...


OpenSource = Callable[[str], Source]


class Capture:
    def __init__(
        self, settings: Settings, hub: Hub, open_source: OpenSource, analyzer: FrameAnalyzer
    ) -> None:
        self._settings = settings
        self._hub = hub
        self._open_source = open_source
        self._analyzer = analyzer
        # One worker at a time: the tracker is not thread-safe, and one core is the budget.
        self._limiter = trio.CapacityLimiter(1)
        self.frames = 0
        self.errors = 0
        self.recent_ms: deque[float] = deque(maxlen=RECENT_FRAMES)
        """The tracker's time for the most recent frames, for the stats line and /healthz."""
        self.recent_at: deque[float] = deque(maxlen=RECENT_FRAMES)
        self.on_frame: Callable[[float], None] | None = None
        """Called with each frame's tracker time in seconds (the metrics histogram)."""

    def fps(self) -> float:
        """Frames published per second over the recent frames; 0 when idle for a second."""
        at = self.recent_at
        if len(at) < 2 or trio.current_time() - at[-1] > 1.0:
            return 0.0
        return (len(at) - 1) / (at[-1] - at[0])

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self._hub.wait_wanted()
            source = await self._open(report=self._report_open_failure)
            if source is not None:
                await self._stream(source)

    async def _open(self, *, report: Callable[[str], None]) -> Source | None:
        """The source, open; or ``None`` after telling ``report`` why it would not open."""
        try:
            source = await trio.to_thread.run_sync(
                self._open_source, self._settings.source, limiter=self._limiter
            )
        except SourceError as exc:
            self.errors += 1
            report(str(exc))
            return None
        self._analyzer.reset()
        self._hub.source_description = source.description
        log.info("capture started from %s", source.description)
        return source

    async def _stream(self, source: Source) -> None:
        """Publish frames until nobody is tracking; reopen with backoff on failure. Whatever
        happens, the source in use is released on the way out."""
        delay = RETRY_FIRST_S
        current: Source | None = source
        self._hub.capture_running = True
        try:
            while current is not None:
                frames_before = self.frames
                try:
                    await self._publish_frames(current)
                    return
                except SourceError as exc:
                    self.errors += 1
                    self._report_retry(str(exc))
                if self.frames > frames_before:
                    delay = RETRY_FIRST_S  # it worked for a while: a new failure, not the same
                broken, current = current, None
                await self._release(broken)
                current = await self._reopen(delay)  # None: everyone left meanwhile
                delay = min(delay * 2, self._settings.source_retry_max_s)
        finally:
            self._hub.capture_running = False
            if current is not None:
                with trio.CancelScope(shield=True):
                    await self._release(current)

    async def _publish_frames(self, source: Source) -> None:
        """Read, analyse and publish until nobody is tracking (or a finite file ends)."""
        pace = _Pacer(self._settings.fps, live=source.live)
        while self._hub.wanted:
            frame = await trio.to_thread.run_sync(source.read, limiter=self._limiter)
            if frame is None:
                # A finite file has ended: nothing more to track. Tell the clients why.
                self._hub.fail(f"{source.description} has ended", drop_subscribers=True)
                return
            captured_at = await pace.admit(frame)
            if captured_at is None:
                continue
            observation, seconds = await trio.to_thread.run_sync(
                _timed, self._analyzer, frame, limiter=self._limiter
            )
            self.frames += 1
            self.recent_ms.append(seconds * 1000.0)
            self.recent_at.append(trio.current_time())
            if self.on_frame is not None:
                self.on_frame(seconds)
            self._hub.publish(observation, captured_at)

    async def _reopen(self, delay: float) -> Source | None:
        """Open the source again after ``delay``, doubling it after each failure, for as long
        as someone is tracking; ``None`` once nobody is."""
        while True:
            await trio.sleep(delay)
            if not self._hub.wanted:
                return None
            source = await self._open(report=self._report_retry)
            if source is not None:
                return source
            delay = min(delay * 2, self._settings.source_retry_max_s)

    def _report_open_failure(self, message: str) -> None:
        # The clients that asked stop tracking, so that a later start_tracking tries again.
        self._hub.fail(message, drop_subscribers=True)

    def _report_retry(self, message: str) -> None:
        self._hub.fail(f"{message}; retrying", drop_subscribers=False)

    async def _release(self, source: Source) -> None:
        await trio.to_thread.run_sync(source.close, limiter=self._limiter)
        log.info("capture stopped; %s released", source.description)


def _timed(analyzer: FrameAnalyzer, frame: Frame) -> tuple[Observation, float]:
    """Analyse in the worker thread, timing only the analysis."""
    start = time.perf_counter()
    observation = analyzer.process(frame.image, frame.t)
    return observation, time.perf_counter() - start


class _Pacer:
    """When each frame counts as captured, and the frame-rate cap.

    Live sources deliver in real time: a frame is captured when its read returns, and with a cap
    the frames that come too soon are dropped unread by the tracker (sleeping instead would let
    the camera's buffer fill with stale frames). Files are played at their media time (the demo
    clip at its own 24 fps, not flat out) and a frame counts as captured when it is due.
    """

    def __init__(self, fps: float, *, live: bool) -> None:
        self._min_interval = 1.0 / fps if fps > 0 else 0.0
        self._live = live
        self._origin: tuple[float, float] | None = None  # (media t, trio clock) of frame one
        self._last = -math.inf

    async def admit(self, frame: Frame) -> float | None:
        """The frame's capture time (Unix seconds), or ``None`` to drop it."""
        if self._live:
            due = trio.current_time()
        else:
            if self._origin is None:
                self._origin = (frame.t, trio.current_time())
            due = self._origin[1] + (frame.t - self._origin[0])
        if due - self._last < self._min_interval:
            return None
        await trio.sleep_until(due)
        self._last = due
        return time.time()
