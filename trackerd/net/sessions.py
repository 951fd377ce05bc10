"""Push sessions: a client sends its own frames and gets its own ``eye_data``.

A session is a :class:`~trackerd.vision.tracker.Tracker` of its own (its region-of-interest tracking
and smoothing follow this client's face only) and one slot for the frame waiting to be analysed:
no queue. The shape, per session::

    reader ──binary frame──▶ receive(): number it, rate check, header check ──▶ slot (latest wins)
                                                                                  │
    client ◀── eye_data / error ◀── run(): CPU share → limiter turn → thread: decode → track

- Frames are numbered in the order they arrive on the connection, from 1. Every frame is
  answered, once: with its ``eye_data``, or with an ``error`` naming it and saying why it was
  not analysed (``frame_over_rate``, ``frame_replaced``, ``bad_frame``, ``frame_too_large``,
  ``frame_over_budget``). A client that sends its next frame when the last one is answered, as
  trackerd.js does, never stalls. Each outcome is counted.
- Decoding and tracking run in worker threads (cv2 releases the GIL), under one
  :class:`trio.CapacityLimiter` for all sessions (``analysis_threads``). Its waiters are served
  first come, first served, and a session waits for a turn *before* it takes its newest frame
  from the slot, so each session has at most one frame in analysis and one waiting, whatever it
  sends.
- The shared capture has its own thread and is not in this limiter: neither slows the other
  beyond the CPU they share.

In proctoring the client that pushes is the candidate, who may want the proctor gone, so what a
session may cost is bounded three ways (each a setting, each with a coded ``error``):

- **A frame's cost is bounded before it is decoded** (:mod:`trackerd.vision.images`): its size
  as the decoder reads it, its scans, its chunks; and the tracker never searches more than a
  640-pixel side, so the worst frame costs ~220 ms of analysis, whatever its size.
- **Fairness counts cost, not frames.** Each session may use ``session_cpu_share`` of a core
  (its CPU time, measured in the analysis thread, against a bucket holding
  :data:`CPU_BURST_S` seconds of that rate). A session in debt waits before its next turn,
  out of the limiter, while its frames are replaced in the slot: a session of costly frames
  gets fewer of them, and honest ones (0.03-0.1 of a core) never wait.
- **A frame over** ``frame_cpu_budget_s`` gets ``error`` ``frame_over_budget`` instead of its
  ``eye_data``; :data:`COSTLY_FRAMES` of them within :data:`COSTLY_WINDOW_S` close the
  session (``session_over_budget``, then close 1008), and its address may open no session for
  :data:`PENALTY_S`. Until then the session is *suspect*: suspect sessions share all analysis
  threads but one, so their frames (a frame cannot be stopped once its search has started)
  never hold every thread at once. With one analysis thread there is no thread to spare: a
  costly frame then delays the others by up to its cost, four times per session at most.
- **Held sessions are freed:** a session that sends nothing for ``session_idle_timeout_s`` is
  closed (``session_idle``), and one address holds at most ``max_sessions_per_ip`` of them.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import gc
import ipaddress
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, TypeVar

import trio

from trackerd.errors import TrackerdError
from trackerd.net import protocol
from trackerd.net.limits import TokenBucket
from trackerd.platform.episodes import EpisodeSettings
from trackerd.platform.recorder import Recorder
from trackerd.platform.records import Records, Subject
from trackerd.platform.tokens import EVERYTHING, Grant
from trackerd.settings import SESSIONS_PER_ANALYSIS_THREAD, Settings
from trackerd.vision.images import BadImage, Header, decode_grey, read_header
from trackerd.vision.observation import Box, FrameAnalyzer, Observation, Point
from trackerd.vision.stillness import Stillness
from trackerd.vision.tracker import warm_up

log = logging.getLogger(__name__)

RATE_BURST_S: Final = 0.5
"""Frames a session may send at once beyond ``max_fps``, in seconds' worth: a browser's timer
jitters, and a frame sent a little early is not a flood."""
CPU_BURST_S: Final = 2.0
"""The CPU bucket holds this many seconds of ``session_cpu_share``: a first full search, or a
face lost for a moment, is paid from it without waiting."""
COSTLY_FRAMES: Final = 3
COSTLY_WINDOW_S: Final = 30.0
"""Frames over ``frame_cpu_budget_s`` a session may send within this long before it is closed.
An honest session has none (its most costly frame took half the budget); one over the budget
by accident is forgiven after ``COSTLY_WINDOW_S / COSTLY_FRAMES`` seconds."""
PENALTY_S: Final = 60.0
"""How long an address whose session was closed for its frames' cost may open none."""
MAX_PENALISED: Final = 4096
"""Addresses remembered for :data:`PENALTY_S` at most; the oldest is forgotten first."""


END_REASONS: Final = {"session_idle": "idle", "session_over_budget": "over_budget"}
"""A report's ``reason`` when the server closed the session, by the close's code (others, such
as ``token_expired``, are their own reason)."""


class SessionClosed(TrackerdError):
    """The server ends a session: ``code`` for programs, the message for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def analysis_threads(settings: Settings) -> int:
    """``analysis_threads``, or with 0 the CPUs this process may run on (``taskset`` and
    container CPU sets count; ``os.cpu_count()`` would not see them)."""
    return settings.analysis_threads or len(os.sched_getaffinity(0))


def max_sessions(settings: Settings) -> int:
    return settings.max_sessions or SESSIONS_PER_ANALYSIS_THREAD * analysis_threads(settings)


def address_key(address: str) -> str:
    """What ``max_sessions_per_ip`` counts by: the address, or for IPv6 its /64 (one host is
    given a whole /64, and picks any address in it)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


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
    over_budget: int = 0
    """Frames whose analysis took more than ``frame_cpu_budget_s`` (each got an ``error``)."""
    busy_s: float = 0.0
    """Seconds an analysis thread spent on this session's frames (decode and track): over
    time, against ``analysis_threads``, the share of the analysis capacity in use."""

    @property
    def dropped(self) -> int:
        """Frames not analysed for the server's reasons, not the frame's: replaced (a session
        waiting for its CPU share has its frames replaced too), or over the rate."""
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
    header: Header


class PushSession:
    def __init__(
        self,
        settings: Settings,
        analyzer: FrameAnalyzer,
        limiter: trio.CapacityLimiter,
        address: str = "?",
        suspects: trio.CapacityLimiter | None = None,
        grant: Grant = EVERYTHING,
    ) -> None:
        """``suspects``: the turns of sessions that sent a frame over the budget lately, which
        they take before ``limiter``'s (see :class:`Sessions`). ``grant``: the candidate's
        session token; its ``sid`` is the session's id (the platform's interview), a random
        one without."""
        self.id = grant.sid if grant.sid is not None else secrets.token_urlsafe(9)
        self.grant = grant
        self.recorder = Recorder(
            Subject(self.id, grant.sub, grant.metadata),
            EpisodeSettings(closed_episode_s=settings.closed_episode_s),
        )
        """Its episodes and report (the platform's side); run by :meth:`Sessions.run`."""
        self._stillness = Stillness()
        self.detached_at: float | None = None
        """trio time the connection was lost at, while the session waits for a reconnect."""
        self.address = address
        """Whose session this is, as ``max_sessions_per_ip`` counts it (:func:`address_key`)."""
        self._settings = settings
        self._analyzer = analyzer
        self._limiter = limiter
        now = trio.current_time()
        self._rate = TokenBucket(settings.max_fps, max(1.0, settings.max_fps * RATE_BURST_S), now)
        share = settings.session_cpu_share
        self._cpu = TokenBucket(share, share * CPU_BURST_S, now)
        self._cpu_ready_at = now
        self._costly = TokenBucket(COSTLY_FRAMES / COSTLY_WINDOW_S, COSTLY_FRAMES, now)
        self._suspects = suspects if suspects is not None else trio.CapacityLimiter(1)
        self._suspect_until = -math.inf
        """Until when this session is suspect: :data:`COSTLY_WINDOW_S` after a frame over the
        budget."""
        self._last_frame_at = now
        self._analysing = trio.Lock()
        self._ended = False
        self._waiting: _Pushed | None = None
        self._arrived = trio.Event()
        self._received = self._analysed = self._replaced = self._over_rate = self._bad = 0
        self._over_budget = 0
        self._busy_s = 0.0

    def statistics(self) -> SessionStatistics:
        return SessionStatistics(
            self._received,
            self._analysed,
            self._replaced,
            self._over_rate,
            self._bad,
            self._over_budget,
            self._busy_s,
        )

    def receive(self, data: bytes) -> str | None:
        """Take the next frame off the connection. Never blocks: the frame waits in the slot,
        replacing any older one. Returns the ``error`` to send, if this frame is refused (for
        its rate, or its header: read here, in C, so a decompression bomb is never decoded), or
        if the frame it replaced will never be analysed."""
        self._received += 1
        received = self._received
        now = trio.current_time()
        self._last_frame_at = now
        if not self._rate.take(now):
            self._over_rate += 1
            self.recorder.dropped(received, time.time())
            return protocol.error(
                f"frame {received}: over max_fps ({self._settings.max_fps:g} a second); "
                "not analysed",
                code="frame_over_rate",
            )
        try:
            header = read_header(data)
        except BadImage as exc:
            self._bad += 1
            self.recorder.dropped(received, time.time())
            return protocol.error(f"frame {received}: {exc}", code="bad_frame")
        limit = self._settings.max_frame_pixels
        if header.pixels > limit:
            self._bad += 1
            self.recorder.dropped(received, time.time())
            return protocol.error(
                f"frame {received}: {header.width}x{header.height} is over max_frame_pixels "
                f"({limit}); send smaller frames",
                code="frame_too_large",
            )
        if header.pixels == 0:
            self._bad += 1
            self.recorder.dropped(received, time.time())
            return protocol.error(
                f"frame {received}: its header declares an empty image", code="bad_frame"
            )
        replaced, self._waiting = self._waiting, _Pushed(received, data, now, time.time(), header)
        self._arrived.set()
        if replaced is None:
            return None
        self._replaced += 1
        self.recorder.dropped(replaced.number, replaced.unix)
        return protocol.error(
            f"frame {replaced.number}: replaced by frame {received} before its turn; not analysed",
            code="frame_replaced",
        )

    def reattach(self) -> None:
        """The candidate came back on a new connection within the grace period: the frame
        left waiting by the old one is forgotten, and the idle clock starts again."""
        self.detached_at = None
        self._waiting = None
        self._arrived = trio.Event()
        self._last_frame_at = trio.current_time()

    def end(self) -> None:
        """No answer is sent from here on, not even for a frame still in its thread."""
        self._ended = True

    @property
    def ended(self) -> bool:
        """Read through a property in :meth:`run`: it changes while ``run`` awaits a thread,
        which a narrowed attribute would hide from mypy."""
        return self._ended

    async def run(self, send: Callable[[str], Awaitable[None]]) -> None:
        """Analyse this session's newest frame whenever there is one, until cancelled or ended.
        Raises :class:`SessionClosed` when the session must end (idle, or over budget)."""
        settings = self._settings
        while True:
            await self._next_frame()
            # Fairness by cost: a session that used more than its share waits, out of the
            # limiter, and its frames meanwhile replace one another in the slot.
            await trio.sleep_until(self._cpu_ready_at)
            suspect = trio.current_time() < self._suspect_until
            async with self._suspects if suspect else contextlib.nullcontext(), self._limiter:
                self._arrived = trio.Event()
                frame, self._waiting = self._waiting, None
                if frame is None:
                    continue
                # Not abandoned on cancel: the tracker is not thread-safe, and a frame's cost
                # is bounded (see the module docstring); stopping waits for it.
                # The tracker is not thread-safe: after a reconnect, the old connection's
                # frame may still be in its thread (a thread cannot be cancelled).
                async with self._analysing:
                    started = time.perf_counter()
                    outcome, change, cpu_s = await in_thread(
                        functools.partial(self._analyse, frame)
                    )
                    self._busy_s += time.perf_counter() - started
            now = trio.current_time()
            self._cpu_ready_at = now + self._cpu.charge(now, cpu_s)
            if self.ended:
                return  # stop_tracking came while the frame was analysed: never answer it
            if cpu_s > settings.frame_cpu_budget_s or isinstance(outcome, str):
                self.recorder.dropped(frame.number, frame.unix)
            else:
                self.recorder.frame(frame.number, frame.unix, outcome, change)
            if cpu_s > settings.frame_cpu_budget_s:
                self._over_budget += 1
                self._suspect_until = now + COSTLY_WINDOW_S
                cost = f"frame {frame.number}: {cpu_s * 1000:.0f} ms of analysis"
                budget = f"{settings.frame_cpu_budget_s * 1000:g} ms"
                if not self._costly.take(now):
                    raise SessionClosed(
                        "session_over_budget",
                        f"{cost}, over the budget of {budget} for the {COSTLY_FRAMES + 1}th "
                        f"time within {COSTLY_WINDOW_S:g} s: session closed",
                    )
                await send(
                    protocol.error(f"{cost}, over the budget of {budget}", code="frame_over_budget")
                )
            elif isinstance(outcome, str):
                self._bad += 1
                await send(protocol.error(outcome, code="bad_frame"))
            else:
                self._analysed += 1
                await send(protocol.eye_data(outcome, frame.unix, frame.number, self.id))

    async def _next_frame(self) -> None:
        """Wait for a frame; raise :class:`SessionClosed` after ``session_idle_timeout_s``
        with none (any binary message counts, refused or not)."""
        timeout = self._settings.session_idle_timeout_s
        while not self._arrived.is_set():
            with trio.move_on_at(self._last_frame_at + timeout):
                await self._arrived.wait()
            if not self._arrived.is_set() and trio.current_time() >= self._last_frame_at + timeout:
                raise SessionClosed("session_idle", f"no frame for {timeout:g} s; session closed")

    def _analyse(self, frame: _Pushed) -> tuple[Observation | str, float | None, float]:
        """In a worker thread: decode to grey, track, give the boxes in frame pixels; how much the
        picture changed (:mod:`trackerd.vision.stillness`); and the CPU time this thread spent on it
        (not wall time: a busy machine is not the frame's fault; nor a garbage collection of the
        whole heap that its allocations happened to set off). A new thread's one-time costs are
        paid first, off the clock."""
        warm_up()
        started, collected = time.thread_time(), _COLLECTOR.seconds
        try:
            decoded = decode_grey(frame.data, frame.header)
        except BadImage as exc:
            return f"frame {frame.number}: {exc}", None, _charged(started, collected)
        change = self._stillness.change(decoded.grey)
        observation = self._analyzer.process(decoded.grey, frame.received_at)
        if decoded.scale != 1:
            observation = _scaled(observation, decoded.scale)
        return observation, change, _charged(started, collected)


_T = TypeVar("_T")


async def in_thread(work: Callable[[], _T]) -> _T:
    """``work()`` in one of trio's cached threads, waited for even if the caller is cancelled
    (the tracker is not thread-safe, and a frame's cost is bounded before it starts).

    What ``trio.to_thread.run_sync`` does for a pushed frame, less what the sessions do not
    use: its own thread limiter (the sessions' limiter is the bound), copying the caller's
    context, and naming the thread for every call, then naming it back. Those cost ~55 us of CPU
    a frame, mostly Python under the GIL that bounds one process
    (``python -m benchmarks.bench_hop``)."""
    task = trio.lowlevel.current_task()
    token = trio.lowlevel.current_trio_token()
    trio.lowlevel.start_thread_soon(
        work, lambda result: token.run_sync_soon(trio.lowlevel.reschedule, task, result)
    )
    result: _T = await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)
    return result


class _CollectorTime(threading.local):
    """Per thread: the CPU time spent in Python's cyclic garbage collector so far."""

    seconds = 0.0
    started = math.nan


_COLLECTOR = _CollectorTime()


def _on_collection(phase: str, info: dict[str, int]) -> None:
    """A ``gc.callbacks`` entry: the collector runs in whichever thread's allocation set it off,
    and a full collection walks the whole process's heap, so its cost is the process's, not
    that frame's (over a heap of 2 million objects, ~130 ms: near the default budget)."""
    if phase == "start":
        _COLLECTOR.started = time.thread_time()
    elif not math.isnan(_COLLECTOR.started):
        _COLLECTOR.seconds += time.thread_time() - _COLLECTOR.started
        _COLLECTOR.started = math.nan


gc.callbacks.append(_on_collection)


def _charged(started: float, collected: float) -> float:
    """This thread's CPU time since ``started``, less its time in the collector since it had
    spent ``collected`` there."""
    return time.thread_time() - started - (_COLLECTOR.seconds - collected)


def _scaled(observation: Observation, scale: float) -> Observation:
    """The tracker saw the frame reduced by ``scale``: its boxes, in the frame's own pixels."""

    def box(b: Box) -> Box:
        return (round(b[0] * scale), round(b[1] * scale), round(b[2] * scale), round(b[3] * scale))

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
    refused: dict[str, int] = dataclasses.field(default_factory=dict)
    """Sessions refused or closed by the server, by code (``server_busy``, ``address_busy``,
    ``address_penalised``, ``session_idle``, ``session_over_budget``)."""

    @property
    def full(self) -> bool:
        return self.active >= self.limit


class Sessions:
    """Every push session of one server: how many, from whom, and the analysis limiter."""

    def __init__(
        self,
        settings: Settings,
        make_analyzer: Callable[[], FrameAnalyzer],
        records: Records | None = None,
    ) -> None:
        """``records``: where sessions' episodes and reports go; None records nothing (a
        :class:`Sessions` made without :meth:`run`, in tests of the analysis alone)."""
        self._settings = settings
        self.records = records
        self._nursery: trio.Nursery | None = None
        self._make_analyzer = make_analyzer
        self._threads = analysis_threads(settings)
        self._limiter = trio.CapacityLimiter(self._threads)
        # Sessions that sent a frame over the budget lately share all threads but one, so
        # that their frames, each up to ~0.3 s of search, never hold every thread at once.
        self._suspects = trio.CapacityLimiter(max(1, self._threads - 1))
        self._limit = max_sessions(settings)
        self._active: set[PushSession] = set()
        """Every session not ended, those waiting for a reconnect too."""
        self._detached: dict[str, PushSession] = {}
        """Sessions whose connection was lost, by sid, waiting ``reconnect_grace_s``."""
        self._detach_changed = trio.Event()
        self._by_address: collections.Counter[str] = collections.Counter()
        self._penalised: collections.OrderedDict[str, float] = collections.OrderedDict()
        """Address → when its penalty ends (:data:`PENALTY_S`), oldest first."""
        self._ended = SessionStatistics()
        self._started = 0
        self._refused: collections.Counter[str] = collections.Counter()

    def open(self, address: str = "?", grant: Grant = EVERYTHING) -> PushSession | SessionClosed:
        """A session for a client at ``address``, or why there is none. ``grant``: the client's
        session token. Its ``sid`` names the session: a session of that sid whose connection
        was lost within ``reconnect_grace_s`` is continued (its tracker, counts and episodes);
        one still open on another connection is refused, so that an interview's results never
        come from two connections at once."""
        key = address_key(address)
        now = trio.current_time()
        sid = grant.sid
        if sid is not None and sid in self._detached:
            # It already holds its place under max_sessions and its address's count.
            session = self._detached.pop(sid)
            session.reattach()
            session.recorder.reconnected()
            return session
        refusal = None
        problem = self.records.problem if self.records is not None else None
        if problem is not None:
            refusal = SessionClosed(
                "store_unavailable", f"no new sessions: trackerd cannot record them ({problem})"
            )
        elif len(self._active) >= self._limit:
            refusal = SessionClosed(
                "server_busy", f"server busy: {self._limit} push sessions already; try later"
            )
        elif self._by_address[key] >= self._settings.max_sessions_per_ip:
            refusal = SessionClosed(
                "address_busy",
                f"{self._settings.max_sessions_per_ip} push sessions from this address already",
            )
        elif sid is not None and any(s.id == sid for s in self._active):
            refusal = SessionClosed(
                "session_in_use", "this token's session is open on another connection already"
            )
        elif self._penalised.get(key, now) > now:
            refusal = SessionClosed(
                "address_penalised",
                f"a session from this address sent frames over the budget: none for "
                f"{self._penalised[key] - now:.0f} s",
            )
        if refusal is not None:
            self._refused[refusal.code] += 1
            return refusal
        session = PushSession(
            self._settings, self._make_analyzer(), self._limiter, key, self._suspects, grant
        )
        self._active.add(session)
        self._by_address[key] += 1
        self._started += 1
        if self._nursery is not None and self.records is not None:
            self._nursery.start_soon(session.recorder.run, self.records)
        return session

    def detach(self, session: PushSession) -> None:
        """``session``'s connection was lost (not stopped): a session named by a token's
        ``sid`` waits ``reconnect_grace_s`` for the candidate to come back (a reload, a network
        change) before it ends; one without a ``sid`` cannot be found again, and ends now."""
        if session.grant.sid is None or self._settings.reconnect_grace_s <= 0:
            self.close(session, reason="closed")
            return
        session.recorder.disconnected()
        session.detached_at = trio.current_time()
        self._detached[session.id] = session
        self._detach_changed.set()

    async def run(self) -> None:
        """Until cancelled: each session's recorder (for its whole life), and the end of the
        sessions whose grace period has passed. Cancelled, every session still open ends
        (``server_stopped``)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                await self._expire_detached()
            finally:
                self._nursery = None

    async def _expire_detached(self) -> None:
        grace = self._settings.reconnect_grace_s
        while True:
            self._detach_changed = trio.Event()
            now = trio.current_time()
            for session in list(self._detached.values()):
                assert session.detached_at is not None
                if session.detached_at + grace <= now:
                    del self._detached[session.id]
                    self.close(session, reason="disconnected")
            deadlines = [s.detached_at for s in self._detached.values() if s.detached_at]
            with trio.move_on_at(min(deadlines) + grace if deadlines else math.inf):
                await self._detach_changed.wait()

    def close(
        self, session: PushSession, closed: SessionClosed | None = None, reason: str = "stopped"
    ) -> None:
        """End ``session`` (``closed``: why the server ended it; otherwise ``reason``, its
        report's: ``stopped``, ``closed`` or ``disconnected``): its counts go to the totals,
        its tracker with it."""
        session.end()
        session.recorder.end(END_REASONS.get(closed.code, closed.code) if closed else reason)
        self._detached.pop(session.id, None)
        if session not in self._active:
            return
        self._active.remove(session)
        self._by_address[session.address] -= 1
        if not self._by_address[session.address]:
            del self._by_address[session.address]
        self._ended += session.statistics()
        if closed is not None:
            self._refused[closed.code] += 1
            if closed.code == "session_over_budget":
                self._penalise(session.address)

    def _penalise(self, key: str) -> None:
        self._penalised.pop(key, None)
        self._penalised[key] = trio.current_time() + PENALTY_S
        while len(self._penalised) > MAX_PENALISED:
            self._penalised.popitem(last=False)

    def statistics(self) -> SessionsStatistics:
        frames = self._ended
        for session in self._active:
            frames += session.statistics()
        return SessionsStatistics(
            len(self._active),
            self._limit,
            self._threads,
            frames,
            self._started,
            dict(self._refused),
        )
