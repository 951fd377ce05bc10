"""Sources that fail mid-stream, hang or deliver garbage, and a tracker that raises: what the
tracking clients get, that the data comes back from a fresh source, and that every broken source
is closed — a hung one by the thread that was stuck in it, once its call returns.

The real server on 127.0.0.1 and real clients, with the fault-injecting sources of
tests/faults.py (a synthetic analyzer unless the real one matters). Timeouts and backoff are cut
to 0.3 s and 0.2 s. Each recovery prints how long the clients went without data: run with ``-s``
to see them. Nothing sleeps to wait for a condition.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import cv2
import numpy as np
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from tests.faults import GOOD, FailingAnalyzer, FaultySource, HangingOpen, release_all
from tests.media import DATA
from tests.serverkit import (
    CAP_S,
    Sources,
    Synthetic,
    capped,
    recv_json,
    recv_type,
    start,
    url,
    with_settings,
)
from trackerd.app import Running, run, serve_source
from trackerd.capture import BAD_FRAME_LIMIT, Capture
from trackerd.hub import Hub, Published
from trackerd.net import protocol
from trackerd.settings import Settings
from trackerd.sources import (
    MAX_FRAME_SIDE,
    BadFrame,
    Frame,
    Source,
    SourceError,
    VideoFileSource,
    check_frame,
    demo_clip_path,
)
from trackerd.vision.tracker import Tracker

pytestmark = pytest.mark.usefixtures("no_unexpected_errors")

FAST = with_settings(source_timeout_s=0.3, source_retry_max_s=0.2)
START = '{"type": "start_tracking"}'

GARBAGE: dict[str, Any] = {
    "no image": None,
    "float32": np.zeros((4, 4, 3), np.float32),
    "uint16": np.zeros((4, 4, 3), np.uint16),
    "empty 0x0": np.zeros((0, 0, 3), np.uint8),
    "1-D": np.zeros(12, np.uint8),
    "5 channels": np.zeros((4, 4, 5), np.uint8),
    # 100000 x 100000 x 3 bytes that all alias one: no memory spent on it.
    "absurdly large": np.lib.stride_tricks.as_strided(
        np.zeros(1, np.uint8), shape=(100_000, 100_000, 3), strides=(0, 0, 0)
    ),
    "NaN time": (GOOD, math.nan),
}


def opened(sources: Sources, i: int) -> FaultySource:
    source = sources.opened[i]
    assert isinstance(source, FaultySource)
    return source


@asynccontextmanager
async def tracking(running: Running) -> AsyncIterator[WebSocketConnection]:
    async with open_websocket_url(url(running)) as ws:
        assert (await recv_json(ws))["type"] == "connection"
        await ws.send_message(START)
        yield ws


async def data_after(ws: WebSocketConnection, fault_at: float | None, case: str) -> None:
    """Wait for the first eye_data captured after the fault (a frame read before it may still
    be on its way), which only a fresh source can have delivered; print how long it took. An
    ``error`` on the way fails the test."""
    assert fault_at is not None
    while (await recv_type(ws, "eye_data"))["captured_at"] <= fault_at:
        pass
    print(f"\n{case}: first eye_data {time.time() - fault_at:.3f} s after the fault")


async def stoppable(
    nursery: trio.Nursery, settings: Settings, sources: Sources
) -> tuple[Running, trio.Event, trio.Event, trio.CancelScope]:
    """The server in ``nursery``, and three ways to watch it end: set the first event to stop
    it as SIGTERM does, or cancel the scope; the second event is set once ``run`` returned."""
    stop = trio.Event()
    stopped = trio.Event()
    scope = trio.CancelScope()

    async def serve(task_status: trio.TaskStatus[Running]) -> None:
        with scope:
            await run(
                settings,
                open_source=sources,
                make_tracker=Synthetic,
                stop=stop,
                task_status=task_status,
            )
        stopped.set()

    running: Running = await nursery.start(serve)
    return running, stop, stopped, scope


def assert_closed_once_idle(source: FaultySource) -> None:
    assert source.closed.is_set()
    assert not source.closed_while_reading and source.reads_after_close == 0


# --- a source that fails ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raises", "says"),
    [
        (SourceError, "faulty source failed after 5 frames (injected); retrying"),
        (RuntimeError, "faulty source failed (RuntimeError); retrying"),
        (OSError, "faulty source failed (OSError); retrying"),
        (cv2.error, "faulty source failed (cv2.error); retrying"),
    ],
    ids=["SourceError", "RuntimeError", "OSError", "cv2.error"],
)
@capped
async def test_a_source_failing_mid_stream_is_reported_closed_and_reopened(
    nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
    raises: type[Exception],
    says: str,
) -> None:
    sources = Sources(lambda: FaultySource(fails_after=5, raises=raises), lambda: FaultySource())
    running = await start(nursery, FAST, open_source=sources)
    async with tracking(running) as ws:
        assert (await recv_type(ws, "error"))["message"] == says
        broken = opened(sources, 0)
        kind = f"{raises.__module__}.{raises.__qualname__}"
        await data_after(ws, broken.fault_at, f"fails after 5 frames ({kind})")
    assert_closed_once_idle(broken)
    assert sources.attempts == 2 and running.capture.statistics().errors == 1
    # A SourceError is an expected failure: its message says it all. Anything else is logged
    # with its traceback, at WARNING (a fault of the source, not of trackerd).
    tracebacks = [r for r in caplog.records if r.name == "trackerd.capture" and r.exc_info]
    expected = [] if raises is SourceError else [(logging.WARNING, raises)]
    assert [(r.levelno, r.exc_info[0]) for r in tracebacks if r.exc_info] == expected


# --- a source that hangs ----------------------------------------------------------------------


@capped
async def test_a_read_that_hangs_times_out_and_its_thread_closes_the_source(
    nursery: trio.Nursery,
) -> None:
    sources = Sources(lambda: FaultySource(hangs_after=5), lambda: FaultySource())
    running = await start(nursery, FAST, open_source=sources)
    try:
        async with tracking(running) as ws:
            error = await recv_type(ws, "error")
            assert error["message"] == "faulty source delivered no frame in 0.3 s; retrying"
            stuck = opened(sources, 0)
            assert stuck.fault_at is not None
            assert time.time() - stuck.fault_at >= 0.25, "not before the timeout"
            await data_after(ws, stuck.fault_at, "read hangs")
            assert stuck.hung.is_set() and not stuck.closed.is_set(), "not closed under a read"
            stuck.release.set()  # the wedged driver returns at last
            assert await trio.to_thread.run_sync(stuck.closed.wait, CAP_S)
            assert stuck.closed_by == stuck.hung_in, "closed by the thread that was stuck"
            assert_closed_once_idle(stuck)
            await recv_type(ws, "eye_data")  # and the fresh source carries on regardless
    finally:
        release_all(*sources.opened)


class _Tracking:
    """A tracking client without a socket, for driving a :class:`Capture` directly."""

    def offer(self, published: Published) -> None:
        pass

    def notify_error(self, message: str, code: str) -> None:
        pass


@capped
async def test_reads_that_return_just_as_time_runs_out_close_each_source_once_and_idle() -> None:
    """Reads taking 0.5 to 1.5 times the timeout: about half are given up on, many of them
    right at the deadline, the race of a call returning just as it is abandoned. Every source
    must be closed exactly once, never while a read is inside it, and never read after."""
    timeout = 0.02
    rng = random.Random(7)
    sources = Sources(lambda: FaultySource(read_takes=lambda: timeout * rng.uniform(0.5, 1.5)))
    enough = threading.Event()

    def open_source(spec: str) -> Source:
        if sources.attempts >= 50:
            enough.set()
        return sources(spec)

    hub = Hub(protocol.eye_data)
    hub.subscribe(_Tracking())
    settings = with_settings(source_timeout_s=timeout, source_retry_max_s=0.001)
    capture = Capture(settings, hub, open_source, Synthetic())
    async with trio.open_nursery() as nursery:
        await nursery.start(capture.run)
        assert await trio.to_thread.run_sync(enough.wait, CAP_S)
        nursery.cancel_scope.cancel()
    stats = capture.statistics()
    print(f"\n{stats.frames} frames, {stats.errors} timeouts")
    assert stats.frames > 20 and stats.errors > 20, "both sides of the deadline"
    for i in range(len(sources.opened)):
        source = opened(sources, i)
        assert await trio.to_thread.run_sync(source.closed.wait, 5.0)  # once its read is over
        assert_closed_once_idle(source)
        assert source.closes == 1


@capped
async def test_the_server_stops_only_once_its_source_is_closed(nursery: trio.Nursery) -> None:
    """A read in flight at shutdown returns within IN_FLIGHT_WAIT_S, and its own thread then
    closes the source, slowly (FFmpeg joins its decoder threads). The server must not return
    before that close is over: a process that exits while a thread is inside cv2 aborts when
    the thread comes back (``terminate called without an active exception``, SIGABRT, seen in
    CI). Before the fix the server returned at once, with the close still under way."""
    sources = Sources(lambda: FaultySource(read_takes=lambda: 0.1, close_takes=0.3))
    settings = with_settings(source_timeout_s=5.0)
    running, stop, stopped, _ = await stoppable(nursery, settings, sources)
    try:
        async with tracking(running) as ws:
            await recv_type(ws, "eye_data")
            source = opened(sources, 0)
            stop.set()  # what SIGTERM does; a 0.1 s read is almost surely in flight
            with trio.fail_after(CAP_S):
                await stopped.wait()
            assert source.closed.is_set(), "the server returned while its source was closing"
            assert_closed_once_idle(source)
            assert source.closes == 1
    finally:
        release_all(*sources.opened)


@pytest.mark.parametrize("how", ["stop", "cancel"])
@capped
async def test_stopping_the_server_while_a_read_hangs_is_prompt(
    nursery: trio.Nursery, how: str
) -> None:
    # Only the shutdown can end the stuck read here: the capture waits IN_FLIGHT_WAIT_S for
    # it, then leaves the closing to the stuck thread.
    settings = with_settings(source_timeout_s=5.0, graceful_timeout_s=0.2)
    sources = Sources(lambda: FaultySource(hangs_after=3))
    running, stop, stopped, scope = await stoppable(nursery, settings, sources)
    try:
        async with tracking(running) as ws:
            await recv_type(ws, "eye_data")
            stuck = opened(sources, 0)
            await trio.to_thread.run_sync(stuck.hung.wait, CAP_S)
            asked = trio.current_time()
            if how == "stop":
                stop.set()  # what SIGTERM does
            else:
                scope.cancel()
            with trio.fail_after(1.0):
                with pytest.raises(ConnectionClosed):
                    while True:
                        await ws.get_message()
                await stopped.wait()
            print(f"\nshutdown ({how}) with a read hung: {trio.current_time() - asked:.3f} s")
        assert not stuck.closed.is_set(), "nobody closed it under the read"
        stuck.release.set()
        assert await trio.to_thread.run_sync(stuck.closed.wait, CAP_S)
        assert stuck.closed_by == stuck.hung_in
        assert_closed_once_idle(stuck)
    finally:
        release_all(*sources.opened)


@capped
async def test_a_reopen_that_hangs_times_out_and_is_retried(nursery: trio.Nursery) -> None:
    late = HangingOpen(lambda: FaultySource())
    sources = Sources(lambda: FaultySource(fails_after=3), late, lambda: FaultySource())
    running = await start(nursery, FAST, open_source=sources)
    try:
        async with tracking(running) as ws:
            error = await recv_type(ws, "error")
            assert error["message"] == "faulty source failed after 3 frames (injected); retrying"
            broken = opened(sources, 0)
            error = await recv_type(ws, "error")
            assert error["message"] == "faulty source did not open in 0.3 s; retrying"
            await data_after(ws, broken.fault_at, "fails, then its reopening hangs")
        assert late.entered.is_set() and not late.opened.is_set()
        late.release.set()  # the open returns, long after the capture gave up on it
        assert await trio.to_thread.run_sync(late.opened.wait, CAP_S)
        assert late.source is not None
        assert await trio.to_thread.run_sync(late.source.closed.wait, CAP_S)
        assert late.source.closed_by == late.thread, "closed by the thread that opened it"
        assert late.source.reads_after_close == 0 and late.source._count == 0, "never read"
        assert sources.attempts == 3 and running.capture.statistics().errors == 2
    finally:
        release_all(late, *sources.opened)


@capped
async def test_a_first_open_that_hangs_is_reported_and_a_later_start_tries_again(
    nursery: trio.Nursery,
) -> None:
    late = HangingOpen(lambda: FaultySource())
    sources = Sources(late, lambda: FaultySource())
    running = await start(nursery, FAST, open_source=sources)
    try:
        async with tracking(running) as ws:
            error = await recv_json(ws)
            assert (error["type"], error["message"]) == (
                "error",
                "the source did not open in 0.3 s",
            )
            await ws.send_message('{"type": "status"}')
            assert (await recv_json(ws))["is_tracking"] is False
            await ws.send_message(START)
            await recv_type(ws, "eye_data")
        late.release.set()
        assert await trio.to_thread.run_sync(late.opened.wait, CAP_S)
        assert late.source is not None
        assert await trio.to_thread.run_sync(late.source.closed.wait, CAP_S)
        assert late.source.closed_by == late.thread
    finally:
        release_all(late, *sources.opened)


# --- garbage frames ---------------------------------------------------------------------------


@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=list(GARBAGE))
def test_check_frame_rejects_garbage(garbage: Any) -> None:
    image, t = garbage if isinstance(garbage, tuple) else (garbage, 0.0)
    with pytest.raises(BadFrame):
        check_frame(Frame(image=image, t=t, index=0))


@pytest.mark.parametrize(
    "shape", [(4, 5), (4, 5, 1), (4, 5, 3), (4, 5, 4), (MAX_FRAME_SIDE, 1)], ids=str
)
def test_check_frame_passes_grey_and_colour_images(shape: tuple[int, ...]) -> None:
    frame = Frame(image=np.zeros(shape, np.uint8), t=1.5, index=3)
    checked = check_frame(frame)
    assert checked.image.shape == shape[:2] + (shape[2:] if shape[2:] != (1,) else ())
    assert (checked.t, checked.index) == (1.5, 3)


@capped
async def test_garbage_frames_are_skipped_counted_and_the_data_goes_on(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    # Each kind of garbage between good frames (a one-channel image is good: grey).
    script = [x for g in GARBAGE.values() for x in (g, GOOD, np.zeros((4, 4, 1), np.uint8))]
    source = FaultySource(images=script)
    sources = Sources(lambda: source)
    running = await start(nursery, FAST, open_source=sources)
    published = []
    arrivals = []
    async with tracking(running) as ws:
        while True:  # an error on the way fails the test
            message = await recv_type(ws, "eye_data")
            published.append(message["frame"])
            arrivals.append((message["captured_at"], time.time()))
            done = source.scripted_done_at
            if done is not None and message["captured_at"] > done:
                break
    assert running.capture.statistics().bad_frames == len(GARBAGE)
    assert source.fault_at is not None
    gap = min(arrived for captured, arrived in arrivals if captured > source.fault_at)
    print(f"\ngarbage between good frames: next eye_data {gap - source.fault_at:.3f} s after")
    assert (
        running.capture.statistics().errors == 0
        and sources.attempts == 1
        and not source.closed.is_set()
    )
    assert published == sorted(set(published)) and len(published) >= 2
    skipped = [r for r in caplog.records if "skipping unusable frames" in r.getMessage()]
    assert len(skipped) == len(GARBAGE), "each run of garbage logged once"


@capped
async def test_a_source_delivering_only_garbage_is_reported_and_reopened(
    nursery: trio.Nursery,
) -> None:
    empty = np.zeros((0, 0), np.uint8)
    sources = Sources(lambda: FaultySource(images=itertools.repeat(empty)), lambda: FaultySource())
    running = await start(nursery, FAST, open_source=sources)
    async with tracking(running) as ws:
        error = await recv_type(ws, "error")
        assert error["message"] == (
            f"faulty source delivered {BAD_FRAME_LIMIT} unusable frames in a row "
            f"(the image is 0x0, outside 1..{MAX_FRAME_SIDE} a side); retrying"
        )
        broken = opened(sources, 0)
        await data_after(ws, broken.fault_at, "only garbage")
    assert_closed_once_idle(broken)
    assert (
        running.capture.statistics().bad_frames == BAD_FRAME_LIMIT
        and running.capture.statistics().errors == 1
    )


# --- a tracker that raises --------------------------------------------------------------------


def claim_errors(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    """The ERROR records this test provokes, taken out of the log, so that
    ``no_unexpected_errors`` still fails it on any other."""
    claimed = [r for r in caplog.records if r.levelno >= logging.ERROR and text in r.getMessage()]
    for record in claimed:
        caplog.records.remove(record)
    return claimed


@capped
async def test_a_tracker_that_raises_is_reported_once_per_run_and_the_data_goes_on(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    analyzer = FailingAnalyzer(fails_on={5, 6, 7, 20})  # two runs: calls 5-7, and call 20
    sources = Sources(lambda: FaultySource())
    running = await start(nursery, FAST, open_source=sources, make_tracker=lambda: analyzer)
    errors = []
    arrivals = []
    async with tracking(running) as ws:
        while analyzer.calls < 35:  # well past the last failure
            message = await recv_json(ws)
            if message["type"] == "error":
                errors.append(message["message"])
            else:
                assert message["type"] == "eye_data"
                arrivals.append((message["captured_at"], time.time()))
    first = analyzer.failed_at[0]
    gap = min(arrived for captured, arrived in arrivals if captured > first) - first
    print(f"\ntracker raises on 3 frames: first eye_data {gap:.3f} s after the first failure")
    assert errors == ["analysis failed on a frame (a server bug); skipping such frames"] * 2
    assert (
        running.capture.statistics().analyzer_errors == 4
        and running.capture.statistics().errors == 0
    )
    assert sources.attempts == 1, "the source was not blamed"
    logged = claim_errors(caplog, "the tracker failed on frame")
    assert [(r.name, r.exc_info and r.exc_info[0]) for r in logged] == [
        ("trackerd.capture", RuntimeError)
    ] * 2, "ERROR with the traceback, once per run"


# --- real files, cut short --------------------------------------------------------------------


@capped
async def test_a_truncated_video_plays_to_its_cut_and_loops(
    nursery: trio.Nursery, tmp_path: Any
) -> None:
    """The demo clip keeps its index at the front ("faststart"), so a copy cut short still
    opens: OpenCV decodes up to the cut (the last frame there is damaged: "Invalid NAL unit
    size") and then reports the end, and the served file loops. A tenth of it (~41 frames,
    1.7 s, as the served file plays in real time) with the real tracker and the real source."""
    data = demo_clip_path().read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 10])
    with VideoFileSource(cut) as source:
        per_loop = await trio.to_thread.run_sync(lambda: sum(1 for _ in source))
    assert 20 <= per_loop < 100, "cut mid-clip"
    settings = with_settings(source=str(cut))
    running = await start(nursery, settings, open_source=serve_source, make_tracker=Tracker)
    received = []
    async with tracking(running) as ws:
        while not received or received[-1]["frame"] <= per_loop + 10:  # into the second loop
            received.append(await recv_type(ws, "eye_data"))  # an error fails the test
    captured = [m["captured_at"] for m in received]
    assert captured == sorted(captured) and max(np.diff(captured)) < 0.5, "no stall at the cut"
    at_cut = captured[per_loop] - captured[per_loop - 1]
    print(f"\ntruncated clip: {at_cut:.3f} s between the last frame and the first of the loop")
    assert sum(m["face_detected"] for m in received) >= 0.8 * len(received), "a real face"
    assert running.capture.statistics().errors == 0 and running.capture.statistics().bad_frames == 0


@capped
async def test_a_truncated_mp4_that_lost_its_index_is_reported(
    nursery: trio.Nursery, tmp_path: Any
) -> None:
    """The clips in tests/data keep their index ("moov") at the end: cut in half, OpenCV cannot
    open them at all ("moov atom not found"). The clients are told and stop tracking."""
    data = (DATA / "single_face.mp4").read_bytes()
    cut = tmp_path / "half.mp4"
    cut.write_bytes(data[: len(data) // 2])
    running = await start(
        nursery, with_settings(source=str(cut)), open_source=serve_source, make_tracker=Tracker
    )
    async with tracking(running) as ws:
        error = await recv_json(ws)
        assert error["type"] == "error" and error["message"] == f"cannot open video file {cut}"
        await ws.send_message('{"type": "status"}')
        status = await recv_json(ws)
        assert status["is_tracking"] is False and status["capture_running"] is False
