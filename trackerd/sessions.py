"""Push sessions: a client sends its own frames and gets its own ``eye_data``.

A session is a :class:`~trackerd.tracker.Tracker` of its own (its region-of-interest tracking
and smoothing follow this client's face only) and one slot for the frame waiting to be analysed:
no queue. The shape, per session::

    reader ──binary frame──▶ receive(): number it, rate check, header check ──▶ slot (latest wins)
                                                                                  │
    client ◀── eye_data / error ◀── run(): limiter turn → thread: decode grey → track

- Frames are numbered in the order they arrive on the connection, from 1. A frame refused for
  its rate or its header, or replaced in the slot by a newer one, gets no ``eye_data``; a frame
  that does not decode gets an ``error`` naming it. Each outcome is counted.
- Decoding and tracking run in worker threads (cv2 releases the GIL), under one
  :class:`trio.CapacityLimiter` for all sessions (``analysis_threads``). Its waiters are served
  first come, first served, and a session waits for a turn *before* it takes its newest frame
  from the slot, so each session has at most one frame in analysis and one waiting, whatever it
  sends: a session at 60 fps gets one turn in each round, like one at 15 fps.
- The shared capture has its own thread and is not in this limiter: neither slows the other
  beyond the CPU they share.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import trio

from trackerd import protocol
from trackerd.capture import FrameAnalyzer
from trackerd.images import BadImage, declared_size, decode_grey
from trackerd.limits import TokenBucket
from trackerd.observation import Box, Observation, Point
from trackerd.settings import Settings

log = logging.getLogger(__name__)

RATE_BURST_S: Final = 0.5
"""Frames a session may send at once beyond ``max_fps``, in seconds' worth: a browser's timer
jitters, and a frame sent a little early is not a flood."""


def analysis_threads(settings: Settings) -> int:
    """``analysis_threads``, or with 0 the CPUs this process may run on (``taskset`` and
    container CPU sets count; ``os.cpu_count()`` would not see them)."""
    return settings.analysis_threads or len(os.sched_getaffinity(0))


def max_sessions(settings: Settings) -> int:
    return settings.max_sessions or 20 * analysis_threads(settings)


@dataclass(frozen=True, slots=True)
class SessionStatistics:
    received: int = 0
    """Binary frames that arrived."""
    analysed: int = 0
    """Frames answered with ``eye_data``."""
    replaced: int = 0
    """Frames a newer one replaced while they waited (latest wins)."""
    over_rate: int = 0
    """Frames that came faster than ``max_fps``."""
    bad: int = 0
    """Frames refused for their header or that did not decode (each got an ``error``)."""
    busy_s: float = 0.0
    """Seconds an analysis thread spent on this session's frames (decode and track): over
    time, against ``analysis_threads``, the share of the analysis capacity in use."""

    @property
    def dropped(self) -> int:
        """Frames that got no ``eye_data`` and no error: replaced, or over the rate."""
        return self.replaced + self.over_rate

    def __add__(self, other: SessionStatistics) -> SessionStatistics:
        return SessionStatistics(
            *(
                a + b
                for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other), strict=True)
            )
        )


@dataclass(frozen=True, slots=True)
class _Pushed:
    number: int
    data: bytes
    received_at: float
    """trio time: the tracker's clock for smoothing."""
    unix: float
    """Wall-clock time of arrival: ``captured_at`` and ``timestamp`` in its ``eye_data``."""
    width: int


class PushSession:
    def __init__(
        self, settings: Settings, analyzer: FrameAnalyzer, limiter: trio.CapacityLimiter
    ) -> None:
        self.id = secrets.token_urlsafe(9)
        self._settings = settings
        self._analyzer = analyzer
        self._limiter = limiter
        self._rate = TokenBucket(
            settings.max_fps, max(1.0, settings.max_fps * RATE_BURST_S), trio.current_time()
        )
        self._waiting: _Pushed | None = None
        self._arrived = trio.Event()
        self._received = self._analysed = self._replaced = self._over_rate = self._bad = 0
        self._busy_s = 0.0

    def statistics(self) -> SessionStatistics:
        return SessionStatistics(
            self._received, self._analysed, self._replaced, self._over_rate, self._bad, self._busy_s
        )

    def receive(self, data: bytes) -> str | None:
        """Take the next frame off the connection. Never blocks: the frame waits in the slot,
        replacing any older one. Returns an ``error`` message to send, if the frame is refused
        for its header (which is read here, so a decompression bomb is never decoded)."""
        self._received += 1
        received = self._received
        now = trio.current_time()
        if not self._rate.take(now):
            self._over_rate += 1
            return None
        try:
            width, height = declared_size(data)
        except BadImage as exc:
            self._bad += 1
            return f"frame {received}: {exc}"
        limit = self._settings.max_frame_pixels
        if width * height > limit:
            self._bad += 1
            return (
                f"frame {received}: {width}x{height} is over max_frame_pixels ({limit}); "
                "send smaller frames"
            )
        if width == 0 or height == 0:
            self._bad += 1
            return f"frame {received}: its header declares an empty image"
        if self._waiting is not None:
            self._replaced += 1
        self._waiting = _Pushed(received, data, now, time.time(), width)
        self._arrived.set()
        return None

    async def run(self, send: Callable[[str], Awaitable[None]]) -> None:
        """Analyse this session's newest frame whenever there is one, until cancelled."""
        while True:
            await self._arrived.wait()
            async with self._limiter:
                self._arrived = trio.Event()
                frame, self._waiting = self._waiting, None
                if frame is None:
                    continue
                # Not abandoned on cancel: the tracker is not thread-safe, and a frame takes
                # milliseconds; stopping waits for it.
                started = time.perf_counter()
                outcome = await trio.to_thread.run_sync(self._analyse, frame)
                self._busy_s += time.perf_counter() - started
            if isinstance(outcome, str):
                self._bad += 1
                await send(protocol.error(outcome))
            else:
                self._analysed += 1
                await send(protocol.eye_data(outcome, frame.unix, frame.number))

    def _analyse(self, frame: _Pushed) -> Observation | str:
        """In a worker thread: decode to grey, track, and give the boxes in frame pixels."""
        try:
            decoded = decode_grey(frame.data, frame.width)
        except BadImage as exc:
            return f"frame {frame.number}: {exc}"
        observation = self._analyzer.process(decoded.grey, frame.received_at)
        return _scaled(observation, decoded.scale) if decoded.scale != 1 else observation


def _scaled(observation: Observation, scale: int) -> Observation:
    """The tracker saw the frame reduced by ``scale``: its boxes, in the frame's own pixels."""

    def box(b: Box) -> Box:
        return (b[0] * scale, b[1] * scale, b[2] * scale, b[3] * scale)

    def point(p: Point | None) -> Point | None:
        return None if p is None else (p[0] * scale, p[1] * scale)

    pupils = observation.pupils
    return dataclasses.replace(
        observation,
        face=box(observation.face) if observation.face is not None else None,
        eyes=tuple(box(e) for e in observation.eyes),
        faces=tuple(box(f) for f in observation.faces),
        pupils=None if pupils is None else (point(pupils[0]), point(pupils[1])),
    )


@dataclass(frozen=True, slots=True)
class SessionsStatistics:
    active: int
    limit: int
    threads: int
    """``analysis_threads`` in force."""
    frames: SessionStatistics
    """Totals over every session so far, active or ended."""
    started: int


class Sessions:
    """Every push session of one server: the limit on how many, and the analysis limiter."""

    def __init__(self, settings: Settings, make_analyzer: Callable[[], FrameAnalyzer]) -> None:
        self._settings = settings
        self._make_analyzer = make_analyzer
        self._threads = analysis_threads(settings)
        self._limiter = trio.CapacityLimiter(self._threads)
        self._limit = max_sessions(settings)
        self._active: set[PushSession] = set()
        self._ended = SessionStatistics()
        self._started = 0

    def open(self) -> PushSession | None:
        """A new session, or None at ``max_sessions``."""
        if len(self._active) >= self._limit:
            return None
        session = PushSession(self._settings, self._make_analyzer(), self._limiter)
        self._active.add(session)
        self._started += 1
        return session

    def close(self, session: PushSession) -> None:
        """End ``session``: its counts go to the totals, its tracker with it."""
        if session in self._active:
            self._active.remove(session)
            self._ended += session.statistics()

    def statistics(self) -> SessionsStatistics:
        frames = self._ended
        for session in self._active:
            frames += session.statistics()
        return SessionsStatistics(
            len(self._active), self._limit, self._threads, frames, self._started
        )
