"""The capture task: source → tracker → hub, running only while someone is tracking.

It waits for the first tracking client, opens the source, and reads, analyses and publishes
frames until the last tracking client stops or leaves; then it releases the source (the camera's
light goes off) and waits again. Blocking source calls and the tracker run in worker threads
(cv2 releases the GIL), so the event loop keeps serving clients.

With ``--source none`` (push sessions only) there is nothing to capture: the task closes the
hub with :data:`PUSH_ONLY`, so that each ``start_tracking`` without ``"source": "client"`` is
answered with an ``error`` (code ``push_only``) showing the message to send instead, and ends.
Nothing is ever opened, and no camera is not a fault: ``/healthz`` stays 200.

Faults, and what the tracking clients get. Nothing a source or the tracker raises ends this task
(that would take the server down with it):

- The source cannot be opened at all (no camera, a file that does not decode, a truncated mp4
  whose index was at its end): an ``error``, and they stop tracking, so that a later
  ``start_tracking`` tries again. A finite file that ends is reported the same way.
- The source fails while streaming: ``read`` raises (``SourceError`` for a camera unplugged or a
  stream that died; anything else, such as ``cv2.error`` or ``OSError``, is logged with its
  traceback at WARNING, a fault of the source and not a bug here). An ``error`` ending in
  ``; retrying``, then the source is closed and reopened with backoff (``RETRY_FIRST_S``
  doubling to ``source_retry_max_s``; back to the start once a source has delivered) for as long
  as anyone tracks. A reopen that fails is reported the same way. Data resumes by itself.
- A read or an open that does not return within ``source_timeout_s`` (a wedged driver, a stream
  that stalls without closing): ``… delivered no frame in N s; retrying``, and the same reopening.
  The stuck thread is abandoned; see :class:`_Handle` for who closes that source, and when.
- An unusable frame (see :func:`trackerd.sources.check_frame`: not a sane ``uint8`` image): it
  is skipped and counted in ``bad_frames``, and clients get nothing; ``BAD_FRAME_LIMIT`` of them
  in a row is a failed source, as above.
- The tracker raising on a frame (a bug in trackerd: the frame had passed the checks): logged at
  ERROR with its traceback, counted in ``analyzer_errors``, the frame skipped and the tracker
  reset. One ``error`` per run of such frames; clients keep tracking and get the next good frame.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import trio

from trackerd.hub import Closed, Hub
from trackerd.settings import Settings
from trackerd.sources import (
    NO_SOURCE,
    BadFrame,
    Frame,
    Source,
    SourceError,
    check_frame,
    planned_description,
)
from trackerd.vision.observation import FrameAnalyzer, Observation

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_FIRST_S = 0.5
"""The first reopening delay (or ``source_retry_max_s`` if that is smaller)."""
RECENT_FRAMES = 300
BAD_FRAME_LIMIT = 30
"""Unusable frames in a row that make a failed source: a second of a 30 fps camera. Fewer would
reopen a camera for a glitch; more would leave clients without data and without a word."""
IN_FLIGHT_WAIT_S = 0.25
"""How long letting go of a source waits for a read in flight (a frame's time at 4 fps or more)
before it leaves the closing to that read's thread: short, so that shutdown stays prompt."""
SOURCE_THREADS = 4
"""Worker threads inside sources at once: the one in use, and up to three that are stuck in a
call the capture gave up on. A source that hangs every time thus cannot pile up threads: once
three are stuck, opening another one times out too, until one of them returns."""
PUSH_ONLY = Closed(
    "this server takes push sessions only (--source none): it has no camera or clip of its "
    'own to stream. Send {"type": "start_tracking", "source": "client"}, then your frames as '
    "binary messages (JPEG, PNG or WebP), and each one gets its eye_data",
    "push_only",
)
"""What a ``--source none`` server answers ``start_tracking`` without ``"source": "client"``
with: the mode, and the exact message to send instead."""


OpenSource = Callable[[str], Source]


@dataclass(frozen=True, slots=True)
class CaptureStatistics:
    """The capture at one moment, for ``status``, ``/metrics``, ``/healthz`` and the stats line."""

    running: bool
    """A source is open and frames are being analysed."""
    source: str
    """What the capture reads from: the source it opened last, and before it has opened any, the
    one ``--source`` names."""
    frames: int
    """Frames analysed and published."""
    errors: int
    """Source failures: opens and reads that raised or timed out, runs of unusable frames."""
    bad_frames: int
    """Frames skipped because :func:`check_frame` rejected them."""
    analyzer_errors: int
    """Frames skipped because the tracker raised on them."""
    fps: float
    """Frames published per second over the recent frames; 0 when idle for a second."""
    failing: str | None
    """The last failure while clients wanted frames, until a frame is published again."""
    recent_ms: tuple[float, ...]
    """The tracker's time for the most recent frames (at most RECENT_FRAMES)."""


class Capture:
    def __init__(
        self,
        settings: Settings,
        hub: Hub,
        open_source: OpenSource,
        analyzer: FrameAnalyzer,
        *,
        on_frame: Callable[[float], object] | None = None,
    ) -> None:
        """``on_frame`` is called with each frame's tracker time in seconds (the metrics
        histogram)."""
        self._settings = settings
        self._hub = hub
        self._open_source = open_source
        self._analyzer = analyzer
        self._on_frame = on_frame
        # For ``status`` before anyone has tracked; the fault messages keep saying "the source"
        # until one has opened (what they name is then what was actually opened).
        self._planned_description = planned_description(settings.source)
        self._opened_description = ""
        self._running = False
        self._failing: str | None = None
        # Two limiters: a thread stuck in a source keeps its token until it returns, if ever,
        # and must not starve the tracker. The tracker has one worker: it is not thread-safe
        # (and is never abandoned, so its token comes back with each frame).
        self._source_limiter = trio.CapacityLimiter(SOURCE_THREADS)
        self._tracker_limiter = trio.CapacityLimiter(1)
        self._frames = 0
        self._errors = 0
        self._bad_frames = 0
        self._analyzer_errors = 0
        self._recent_ms: deque[float] = deque(maxlen=RECENT_FRAMES)
        self._recent_at: deque[float] = deque(maxlen=RECENT_FRAMES)

    def statistics(self) -> CaptureStatistics:
        at = self._recent_at
        idle = len(at) < 2 or trio.current_time() - at[-1] > 1.0
        return CaptureStatistics(
            running=self._running,
            source=self._opened_description or self._planned_description,
            frames=self._frames,
            errors=self._errors,
            bad_frames=self._bad_frames,
            analyzer_errors=self._analyzer_errors,
            fps=0.0 if idle else (len(at) - 1) / (at[-1] - at[0]),
            failing=self._failing,
            recent_ms=tuple(self._recent_ms),
        )

    def _fail(self, message: str, *, drop_subscribers: bool) -> None:
        """Tell the clients (through the hub); remember it for /healthz while they still want
        frames (with ``drop_subscribers`` they stop tracking, so nobody is left waiting)."""
        self._failing = None if drop_subscribers else message
        self._hub.fail(message, drop_subscribers=drop_subscribers)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self._settings.source.strip() == NO_SOURCE:
            self._hub.close(PUSH_ONLY)
            log.info("push-only (--source none): no source is opened; clients push their frames")
            task_status.started()
            return
        task_status.started()
        while True:
            await self._hub.wait_wanted()
            await self._capture()

    async def _capture(self) -> None:
        """Open the source and publish its frames until nobody is tracking, reopening it with
        backoff when it fails; return early if it never opens or a finite file ends. Whatever
        happens, each source is released on the way out of its round."""
        first_delay = min(RETRY_FIRST_S, self._settings.source_retry_max_s)
        delay = first_delay
        opened = False
        try:
            while True:
                handle = _Handle(
                    self._source_limiter,
                    self._settings.source_timeout_s,
                    self._opened_description or "the source",
                )
                frames_before = self._frames
                try:
                    await handle.open(self._open_source, self._settings.source)
                    opened = True
                    self._analyzer.reset()
                    self._opened_description = handle.description
                    self._running = True
                    log.info("capture started from %s", handle.description)
                    await self._publish_frames(handle)
                    return  # nobody is tracking, or a finite file has ended
                except SourceError as exc:
                    self._errors += 1
                    self._running = False
                    if not opened:
                        # No source at all (no camera): the clients that asked stop tracking,
                        # so that a later start_tracking tries again.
                        self._fail(str(exc), drop_subscribers=True)
                        return
                    self._fail(f"{exc}; retrying", drop_subscribers=False)
                finally:
                    await handle.release()
                if self._frames > frames_before:
                    delay = first_delay  # it worked for a while: a new failure, not the same
                await trio.sleep(delay)
                if not self._hub.wanted:
                    return
                delay = min(delay * 2, self._settings.source_retry_max_s)
        finally:
            self._running = False

    async def _publish_frames(self, handle: _Handle) -> None:
        """Read, check, analyse and publish until nobody is tracking (or a finite file ends).
        Raises SourceError when the source fails."""
        pace = _Pacer(self._settings.fps, live=handle.live)
        bad_in_a_row = 0
        analyzer_failing = False
        while self._hub.wanted:
            got = await handle.read()
            if got is None:
                # A finite file has ended: nothing more to track. Tell the clients why.
                self._fail(f"{handle.description} has ended", drop_subscribers=True)
                return
            try:
                frame = check_frame(got)
            except BadFrame as exc:
                self._bad_frames += 1
                bad_in_a_row += 1
                if bad_in_a_row == 1:  # once per run: a broken source would flood the log
                    log.warning("skipping unusable frames from %s: %s", handle.description, exc)
                if bad_in_a_row >= BAD_FRAME_LIMIT:
                    raise SourceError(
                        f"{handle.description} delivered {bad_in_a_row} unusable frames in a "
                        f"row ({exc})"
                    ) from exc
                continue
            bad_in_a_row = 0
            captured_at = await pace.admit(frame)
            if captured_at is None:
                continue
            try:
                observation, seconds = await trio.to_thread.run_sync(
                    _timed, self._analyzer, frame, limiter=self._tracker_limiter
                )
            except Exception:
                self._analyzer_errors += 1
                if not analyzer_failing:
                    # A bug in trackerd (the frame passed the checks), hence ERROR; once per
                    # run, and the clients keep tracking: the next frame may well do.
                    log.exception(
                        "the tracker failed on frame %d of %s; skipping it",
                        frame.index,
                        handle.description,
                    )
                    self._fail(
                        "analysis failed on a frame (a server bug); skipping such frames",
                        drop_subscribers=False,
                    )
                analyzer_failing = True
                self._analyzer.reset()  # its state may be half-updated
                continue
            analyzer_failing = False
            self._frames += 1
            self._failing = None
            self._recent_ms.append(seconds * 1000.0)
            self._recent_at.append(trio.current_time())
            if self._on_frame is not None:
                self._on_frame(seconds)
            self._hub.publish(observation, captured_at)


class _Handle:
    """One source, from opening to closing, whose blocking calls each run in a worker thread
    under ``source_timeout_s``, and which the capture can let go of while a call is stuck.

    Every failure comes out as :class:`SourceError`: a call that raised, or that timed out (its
    thread abandoned; it runs on and keeps its limiter token until it returns, if ever).

    Closing: cv2 must not release a ``VideoCapture`` while another thread is inside it, so the
    last one out closes. :meth:`release` closes at once if no call is running; otherwise the
    thread of the running call closes when that call returns (an open that returns late closes
    what it opened). The lock settles the race of a call returning just as it is given up on.
    Whichever thread closes holds ``_closing`` while it does, and :meth:`release` waits for it
    (bounded): a release that returned while another thread was still inside
    ``VideoCapture.release`` let the server exit under it, and a thread that comes back from cv2
    into a finalising interpreter is unwound through C++ frames: ``std::terminate``, SIGABRT
    (2 of 40 SIGTERMs, ``tests/test_faults.py``).
    """

    def __init__(self, limiter: trio.CapacityLimiter, timeout_s: float, description: str) -> None:
        self.description = description
        self.live = False
        self._source: Source | None = None
        self._limiter = limiter
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._closing = threading.Lock()  # held by the thread closing the source
        self._idle = threading.Condition(self._lock)  # notified when a call returns
        self._busy = False  # a thread is inside a call
        self._released = False  # the capture has let go; no call starts any more

    async def open(self, open_source: OpenSource, spec: str) -> None:
        def opening() -> None:
            source = open_source(spec)
            self._source = source  # before the call ends: a late open must close it
            self.description = source.description
            self.live = source.live

        await self._call(opening, f"{self.description} did not open", "opening ")

    async def read(self) -> Frame | None:
        source = self._source
        assert source is not None, "opened"
        return await self._call(source.read, f"{self.description} delivered no frame", "")

    async def release(self) -> None:
        """Let go of the source and close it: at once if no call is running, else as soon as
        that call returns (a read in flight as the server shuts down takes milliseconds). A
        call still running after ``IN_FLIGHT_WAIT_S`` is left to close the source itself when
        it returns, if ever."""
        with self._lock:
            self._released = True
            if self._source is None and not self._busy and not self._closing.locked():
                return  # nothing open, nothing opening, nobody closing
        # Shielded, so that a source is closed even as the capture is cancelled; bounded, so
        # that a stuck call or a close that hangs cannot stall a shutdown.
        # Trio's default limiter: a close must not queue behind threads stuck in sources.
        with trio.CancelScope(shield=True), trio.move_on_after(self._timeout_s) as scope:
            await trio.to_thread.run_sync(
                self._close_when_idle,
                min(IN_FLIGHT_WAIT_S, self._timeout_s),
                abandon_on_cancel=True,
            )
        if scope.cancelled_caught:
            log.warning("closing %s is taking over %g s", self.description, self._timeout_s)

    async def _call(self, call: Callable[[], T], stuck: str, doing: str) -> T:
        with trio.move_on_after(self._timeout_s):
            try:
                return await trio.to_thread.run_sync(
                    self._in_thread, call, abandon_on_cancel=True, limiter=self._limiter
                )
            except SourceError:
                raise
            except Exception as exc:
                kind = type(exc).__qualname__
                if type(exc).__module__ != "builtins":
                    kind = f"{type(exc).__module__}.{kind}"
                log.warning("%s%s raised %s", doing, self.description, kind, exc_info=True)
                # The client gets the kind only; the details (paths, cv2 internals) are logged.
                raise SourceError(f"{doing}{self.description} failed ({kind})") from exc
        raise SourceError(f"{stuck} in {self._timeout_s:g} s")

    def _in_thread(self, call: Callable[[], T]) -> T:
        with self._lock:
            if self._released:  # a thread that started after its call had been given up on
                raise SourceError(f"{self.description} has been released")
            self._busy = True
        try:
            return call()
        finally:
            if self._leave():
                self._close()

    def _leave(self) -> bool:
        """A call has returned: whether its thread is to close the source (it was let go)."""
        with self._lock:
            self._busy = False
            self._idle.notify_all()
            return self._released

    def _close_when_idle(self, wait_s: float) -> None:
        """In a thread: wait (at most ``wait_s``) for the running call to return, then close, or
        wait for the call's own thread to finish closing; if the call is still running, its own
        thread closes when it returns."""
        with self._idle:
            if not self._idle.wait_for(lambda: not self._busy, timeout=wait_s):
                return
        self._close()

    def _close(self) -> None:
        """Close the source once no call is inside it; whichever thread comes first does it
        (the one whose call was let go, or the one waiting for it), the other waits until it
        is done and then finds nothing."""
        with self._closing:
            with self._lock:
                source, self._source = self._source, None
            if source is None:
                return
            try:
                source.close()
            except Exception:
                log.warning("closing %s failed", source.description, exc_info=True)
            else:
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
