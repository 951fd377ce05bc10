"""What a push session may cost, on :class:`~trackerd.net.sessions.Sessions` itself, without a
server: the turns of sessions whose frames went over the budget. The analyzer here is a stand-in
that spends a set amount of CPU on each frame (the real tracker's cost on block noise is what
tests/test_hostile_push.py sends a real server); the frames are real JPEGs, read and decoded by
the server's own code."""

from __future__ import annotations

import functools
import gc
import threading
import time

import numpy as np
import pytest
import trio
import trio.testing
from numpy.typing import NDArray

from benchmarks import hostile
from tests.serverkit import with_settings
from trackerd.net.sessions import PushSession, Sessions, in_thread
from trackerd.vision.observation import Observation

BUDGET_S = 0.05


class Costly:
    """Spends ``cost_s`` of this thread's CPU on every frame, and records how many frames of
    costly sessions were being analysed at once."""

    running = 0
    most = 0
    lock = threading.Lock()

    def __init__(self, cost_s: float) -> None:
        self.cost_s = cost_s

    def process(self, grey: NDArray[np.uint8], t: float) -> Observation:
        costly = self.cost_s > BUDGET_S
        with Costly.lock:
            Costly.running += costly
            Costly.most = max(Costly.most, Costly.running)
        end = time.thread_time() + self.cost_s
        while time.thread_time() < end:
            pass
        with Costly.lock:
            Costly.running -= costly
        return Observation(t, False, 0, False, 0.0, 0, None, (), (), 0.0)


class Collecting:
    """Sets off a full garbage collection on every frame, as any frame's allocations may."""

    def process(self, grey: NDArray[np.uint8], t: float) -> Observation:
        gc.collect()
        return Observation(t, False, 0, False, 0.0, 0, None, (), (), 0.0)


@functools.cache
def jpeg() -> bytes:
    return hostile.real_face_jpegs(1, (160, 120))[0]


async def test_sessions_over_the_budget_never_hold_every_analysis_thread() -> None:
    """Two sessions whose frames cost twice the budget, and one honest session, on two analysis
    threads: once each costly session has gone over the budget, their frames are analysed one
    at a time, so a thread is always left for the honest one."""
    settings = with_settings(analysis_threads=2, frame_cpu_budget_s=BUDGET_S)
    costs = iter([2 * BUDGET_S, 2 * BUDGET_S, 0.001])
    sessions = Sessions(settings, lambda: Costly(next(costs)))
    opened = [sessions.open(f"127.0.0.{i}") for i in (2, 3, 4)]
    assert all(isinstance(s, PushSession) for s in opened)
    answered: dict[str, list[str]] = {}
    round_done = trio.Event()

    async with trio.open_nursery() as nursery:
        for session in opened:
            assert isinstance(session, PushSession)
            answers = answered.setdefault(session.id, [])

            async def send(message: str, answers: list[str] = answers) -> None:
                answers.append(message)
                if all(len(a) >= rounds for a in answered.values()):
                    round_done.set()

            nursery.start_soon(session.run, send)
        for rounds in (1, 2, 3):
            with trio.fail_after(10):
                if rounds == 2:
                    assert Costly.most == 2  # neither was suspect yet: both ran at once
                    Costly.most = 0
                for session in opened:
                    assert isinstance(session, PushSession)
                    assert session.receive(jpeg()) is None
                await round_done.wait()
                round_done = trio.Event()
        nursery.cancel_scope.cancel()
    assert Costly.most == 1, "two suspect sessions were analysed at once"
    costly, _, honest = (answered[s.id] for s in opened if isinstance(s, PushSession))
    assert all('"frame_over_budget"' in m for m in costly)
    assert all('"eye_data"' in m for m in honest)


async def test_a_garbage_collection_during_a_frame_is_not_charged_to_it() -> None:
    """A full collection walks the whole process's heap, in whichever thread set it off: its
    cost is the process's, not the frame's. An honest frame in a full test run got
    ``frame_over_budget`` (244 ms against 150); a collection over a test process's heap costs
    that much (2 million lists: ~130 ms here)."""
    heap = [[i] for i in range(2_000_000)]  # lists: objects the collector must visit
    started = time.thread_time()
    gc.collect()
    assert time.thread_time() - started > 1.5 * BUDGET_S, "the heap is too small to matter"
    sessions = Sessions(with_settings(analysis_threads=1, frame_cpu_budget_s=BUDGET_S), Collecting)
    session = sessions.open("127.0.0.2")
    assert isinstance(session, PushSession)
    answers: list[str] = []
    answered = trio.Event()

    async def send(message: str) -> None:
        answers.append(message)
        answered.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run, send)
        assert session.receive(jpeg()) is None
        with trio.fail_after(10):
            await answered.wait()
        nursery.cancel_scope.cancel()
    del heap
    assert '"eye_data"' in answers[0], answers


async def test_in_thread_gives_the_work_its_own_thread_and_its_result_or_error() -> None:
    loop_thread = threading.get_ident()
    assert await in_thread(threading.get_ident) != loop_thread

    def fails() -> None:
        raise LookupError("from the analysis thread")

    with pytest.raises(LookupError, match="from the analysis thread"):
        await in_thread(fails)


async def test_in_thread_waits_for_its_work_when_cancelled() -> None:
    """A frame in analysis is never abandoned: the tracker it uses is not thread-safe, so the
    next frame of the session must not start while it runs."""
    release = threading.Event()
    events: list[str] = []

    def work() -> str:
        release.wait(timeout=30)  # the cap only: the test sets it
        events.append("work done")
        return "result"

    async def caller(scope: trio.CancelScope) -> None:
        with scope:
            events.append(await in_thread(work))
            await trio.lowlevel.checkpoint()
        events.append("caller left" + (" cancelled" if scope.cancelled_caught else ""))

    scope = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller, scope)
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert events == []  # still waiting for the work, though cancelled
        release.set()
    assert events == ["work done", "result", "caller left cancelled"]
