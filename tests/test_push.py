"""Push mode over real connections: a client sends JPEG frames of real clips and gets its own
``eye_data``, from the real tracker, on a real server on 127.0.0.1.

The frames are the clips of ``tests/data/`` (permissive; see its SOURCE.txt), JPEG-encoded as a
browser would send them.
"""

from __future__ import annotations

import functools
import json
import math
import struct
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from benchmarks.zju import iou
from tests.media import DATA, frames
from tests.serverkit import (
    RawClient,
    Running,
    capped,
    client_frame,
    recv_json,
    recv_type,
    start,
    url,
    with_settings,
)
from trackerd.vision.tracker import Tracker

pytestmark = pytest.mark.usefixtures("no_unexpected_errors")

START = json.dumps({"type": "start_tracking", "source": "client"})


@functools.cache
def jpegs(name: str) -> tuple[tuple[bytes, float], ...]:
    """Every frame of a clip as (JPEG at quality 80, media time)."""
    encoded = []
    for frame in frames(DATA / name):
        ok, data = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, 80])
        assert ok
        encoded.append((data.tobytes(), frame.t))
    return tuple(encoded)


async def serve(nursery: trio.Nursery, **changes: Any) -> Running:
    """The real server with the real tracker; its own capture is never started here."""
    return await start(nursery, with_settings(**changes), make_tracker=Tracker)


async def start_session(ws: WebSocketConnection) -> dict[str, Any]:
    assert (await recv_json(ws))["type"] == "connection"
    await ws.send_message(START)
    return await recv_type(ws, "tracking_started")


FRAME_ERRORS = frozenset(
    {"frame_over_rate", "frame_replaced", "bad_frame", "frame_too_large", "frame_over_budget"}
)
"""The codes of an ``error`` that answers a frame instead of its eye_data
(trackerd.net.sessions)."""


class Answers:
    """A push session's answers as they arrive: every frame gets one, its eye_data or an
    ``error`` with a code of ``FRAME_ERRORS``. So a test can wait for the last frame's answer
    itself, not for a time it guesses is long enough."""

    def __init__(self) -> None:
        self.count = 0
        self._more = trio.Event()

    def add(self, message: dict[str, Any]) -> None:
        if message["type"] == "eye_data" or message.get("code") in FRAME_ERRORS:
            self.count += 1
            self._more.set()
            self._more = trio.Event()

    async def wait_for(self, n: int) -> None:
        while self.count < n:
            await self._more.wait()


async def push_each(ws: WebSocketConnection, clip: str, fps: float = 30.0) -> list[dict[str, Any]]:
    """Push the clip frame by frame, each after the previous one's eye_data (the one-in-flight
    rule of the browser client) and no faster than ``fps`` (the session's max_fps): every
    frame is answered."""
    answers = []
    due = trio.current_time()
    for data, _ in jpegs(clip):
        await trio.sleep_until(due)  # the sender's frame rate
        due = trio.current_time() + 1 / fps
        await ws.send_message(data)
        answers.append(await recv_type(ws, "eye_data"))
    return answers


@capped
async def test_every_pushed_frame_is_answered_with_its_number_and_a_face(
    nursery: trio.Nursery,
) -> None:
    running = await serve(nursery)
    async with open_websocket_url(url(running)) as ws:
        started = await start_session(ws)
        assert started["source"] == "client" and started["session"]
        assert started["max_frame_bytes"] == 524288 and started["max_fps"] == 30
        answers = await push_each(ws, "single_face.mp4")
    assert [a["frame"] for a in answers] == list(range(1, len(jpegs("single_face.mp4")) + 1))
    with_face = [a for a in answers if a["face_detected"]]
    assert len(with_face) >= 0.95 * len(answers)
    x, y, w, h = with_face[-1]["face"]
    assert 0 <= x < x + w <= 640 and 0 <= y < y + h <= 360 and w > 60  # frame pixels
    assert all(a["captured_at"] > 0 and "timestamp" in a for a in answers)
    # Nobody else tracked: the server's own capture never opened a source.
    assert not running.capture.statistics().running and running.capture.statistics().frames == 0
    # The answers went by the fan-out's one-write path (this client reads as fast as it can),
    # not through trio-websocket's framing: the connection and tracking_started went awaited.
    sent = running.server.statistics().clients
    assert sent.fast_sends >= len(answers) - 2 and sent.slow_sends <= 4, sent


@capped
async def test_a_wide_frame_decoded_at_half_size_is_answered_in_its_own_pixels(
    nursery: trio.Nursery,
) -> None:
    """1280x720 frames are decoded at 640x360: the boxes and pupils come back in 1280x720."""
    running = await serve(nursery)
    small = [frame.image for frame in frames(DATA / "single_face.mp4")[:20]]
    async with open_websocket_url(url(running)) as ws:
        await start_session(ws)
        for image in small:
            ok, data = cv2.imencode(".jpg", cv2.resize(image, (1280, 720)))
            assert ok
            await ws.send_message(data.tobytes())
            answer = await recv_type(ws, "eye_data")
            await trio.sleep(1 / 30)  # the sender's frame rate
    x, y, w, h = answer["face"]
    assert w > 2 * 60 and x + w <= 1280 and y + h <= 720, answer["face"]
    for pupil in answer["pupils"] or []:
        if pupil is not None:
            assert x <= pupil[0] <= x + w and y <= pupil[1] <= y + h, (pupil, answer["face"])


@capped
async def test_looking_away_turns_true_after_the_person_leaves(nursery: trio.Nursery) -> None:
    """face_noface.mov pushed at its own rate: a face in frames 0-71, none after."""
    running = await serve(nursery)
    clip = jpegs("face_noface.mov")
    answers: list[dict[str, Any]] = []
    async with open_websocket_url(url(running)) as ws:
        await start_session(ws)

        answered = Answers()

        async def receive() -> None:
            while True:
                message = await recv_json(ws)
                answered.add(message)
                if message["type"] == "eye_data":
                    answers.append(message)

        async with trio.open_nursery() as inner:
            inner.start_soon(receive)
            start_at = trio.current_time()
            for data, t in clip:
                await trio.sleep_until(start_at + t)  # the clip's own timeline
                await ws.send_message(data)
            await answered.wait_for(len(clip))  # the last frames' answers
            inner.cancel_scope.cancel()
    before = [a for a in answers if a["frame"] <= 72]
    late = [a for a in answers if a["frame"] >= 72 + 30]  # a second after the cut
    assert before and all(not a["looking_away"] for a in before[10:60])
    assert late and all(a["looking_away"] for a in late), [a["frame"] for a in late]


@capped
async def test_two_sessions_each_get_their_own_answers_only(nursery: trio.Nursery) -> None:
    running = await serve(nursery)
    results: dict[str, list[dict[str, Any]]] = {}

    async def session(clip: str) -> None:
        async with open_websocket_url(url(running)) as ws:
            await start_session(ws)
            results[clip] = await push_each(ws, clip)

    async with trio.open_nursery() as both:
        both.start_soon(session, "single_face.mp4")
        both.start_soon(session, "no_face.mp4")
    faces = results["single_face.mp4"]
    nobody = results["no_face.mp4"]
    assert [a["frame"] for a in faces] == list(range(1, len(faces) + 1))
    assert [a["frame"] for a in nobody] == list(range(1, len(nobody) + 1))
    assert sum(a["face_detected"] for a in faces) >= 0.95 * len(faces)
    # Had the answers crossed, the face-less session would see the other's face, where the
    # other saw it, on most frames. The cartoon itself has a false face the cascade finds at
    # some frame timings (a server under load spaces the frames differently each run): up to
    # 8 of these 95 frames were seen in CI, always elsewhere in the picture.
    # tests/test_tracker.py bounds that false face on its own.
    crossed = [
        a
        for a, b in zip(nobody, faces, strict=False)
        if a["face"] is not None and b["face"] is not None and iou(a["face"], b["face"]) > 0.5
    ]
    assert not crossed, crossed
    assert sum(a["face_detected"] for a in nobody) <= 0.15 * len(nobody)
    assert running.server.sessions.statistics().active == 0  # both ended with their connection


@capped
async def test_the_latest_frame_wins_and_at_most_one_waits(nursery: trio.Nursery) -> None:
    """Frames sent faster than they are analysed: the newest is analysed, each one it replaced
    gets a ``frame_replaced`` error, and every frame is one or the other (never queued)."""
    running = await serve(nursery, max_fps=1000.0, analysis_threads=1)
    clip = jpegs("single_face.mp4")[:40]
    async with open_websocket_url(url(running)) as ws:
        await start_session(ws)
        for data, _ in clip:  # as fast as the socket takes them
            await ws.send_message(data)
        answered: list[int] = []
        replaced: list[int] = []
        while not answered or answered[-1] != len(clip):
            message = await recv_json(ws)
            if message["type"] == "eye_data":
                answered.append(message["frame"])
            else:
                assert message["code"] == "frame_replaced", message
                replaced.append(int(message["message"].split(":")[0].removeprefix("frame ")))
        await ws.send_message('{"type": "status"}')
        status = await recv_type(ws, "status")
    assert answered == sorted(set(answered)) and answered[-1] == len(clip)
    assert len(answered) < len(clip)
    assert sorted(answered + replaced) == list(range(1, len(clip) + 1))
    assert status["frames_received"] == len(clip)
    assert status["frames_analysed"] == len(answered)
    assert status["frames_dropped"] == len(clip) - len(answered)
    metrics = running.metrics.prometheus().decode()
    assert f'trackerd_pushed_frames_total{{outcome="analysed"}} {len(answered)}.0' in metrics
    replaced = len(clip) - len(answered)
    assert f'trackerd_pushed_frames_total{{outcome="replaced"}} {replaced}.0' in metrics


@capped
async def test_a_fast_sender_does_not_slow_a_slow_one(nursery: trio.Nursery) -> None:
    """One analysis thread, one session sending 60 frames a second and one 15: the slow one's
    frames are all answered about as fast as when it is alone."""
    running = await serve(nursery, max_fps=1000.0, analysis_threads=1)
    clip = jpegs("single_face.mp4")
    latencies: dict[str, list[float]] = {"alone": [], "shared": []}
    slow_sent = {"alone": 0, "shared": 0}

    async def sender(ws: WebSocketConnection, fps: float, seconds: float, key: str) -> None:
        await start_session(ws)
        sent_at: dict[int, float] = {}
        answered = Answers()

        async def receive() -> None:
            while True:
                message = await recv_json(ws)
                answered.add(message)
                if message["type"] == "eye_data" and key:
                    latencies[key].append(trio.current_time() - sent_at[message["frame"]])

        async with trio.open_nursery() as inner:
            inner.start_soon(receive)
            n = 0
            end = trio.current_time() + seconds
            while trio.current_time() < end:
                data, _ = clip[n % len(clip)]
                n += 1
                sent_at[n] = trio.current_time()
                await ws.send_message(data)
                if key:
                    slow_sent[key] += 1
                await trio.sleep(1 / fps)  # the sender's frame rate
            await answered.wait_for(n)  # the last answers
            inner.cancel_scope.cancel()

    async with open_websocket_url(url(running)) as slow:
        await sender(slow, 15, 2.0, "alone")
    async with (
        open_websocket_url(url(running)) as slow,
        open_websocket_url(url(running)) as fast,
        trio.open_nursery() as both,
    ):
        both.start_soon(sender, fast, 60, 2.0, "")
        both.start_soon(sender, slow, 15, 2.0, "shared")
    alone, shared = sorted(latencies["alone"]), sorted(latencies["shared"])
    print(
        f"\nslow sender alone: {len(alone)}/{slow_sent['alone']} answered, median "
        f"{alone[len(alone) // 2] * 1000:.1f} ms; beside a 60 fps sender: {len(shared)}/"
        f"{slow_sent['shared']}, median {shared[len(shared) // 2] * 1000:.1f} ms"
    )
    assert len(shared) >= 0.9 * slow_sent["shared"]
    # One analysis ahead of it at most: its median latency grows by about one frame's work.
    assert shared[len(shared) // 2] <= alone[len(alone) // 2] + 0.05


@capped
async def test_a_flood_elsewhere_does_not_slow_a_push_session(nursery: trio.Nursery) -> None:
    """A flooder keeps the budget all busy connections share in debt; a push session's frames
    are charged to its own budget, so they are answered as fast as without the flood."""
    running = await serve(nursery, max_inbound_bytes_per_s=2048.0)
    flooder = await RawClient.connect(running.port)
    async with trio.open_nursery() as flooding:

        async def flood() -> None:
            while True:
                await flooder.send(client_frame(0x9, b"p") * 20)

        flooding.start_soon(flood)
        async with open_websocket_url(url(running)) as ws:
            await start_session(ws)
            began = trio.current_time()
            answers = await push_each(ws, "single_face.mp4", fps=15.0)
            took = trio.current_time() - began
        flooding.cancel_scope.cancel()
    flooder.reset()
    print(f"\n{len(answers)} frames at 15 fps beside a flood: {took:.2f} s")
    assert took < len(answers) / 15.0 + 2.0  # the frames' own pace, give or take


# --- bad input ------------------------------------------------------------------------------


def png_header(width: int, height: int) -> bytes:
    """A PNG's signature and IHDR declaring ``width`` x ``height``, and one tiny IDAT: a
    decompression bomb's header, without the bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    chunk += struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    idat = zlib.compress(b"\x00" * 1000)
    chunk += struct.pack(">I", len(idat)) + b"IDAT" + idat + struct.pack(">I", zlib.crc32(idat))
    return b"\x89PNG\r\n\x1a\n" + chunk


@capped
async def test_bad_frames_get_an_error_naming_them_and_the_session_goes_on(
    nursery: trio.Nursery,
) -> None:
    running = await serve(nursery)
    good, _ = jpegs("single_face.mp4")[0]
    async with open_websocket_url(url(running)) as ws:
        await start_session(ws)
        await ws.send_message(good[: len(good) // 3])  # frame 1: cut short
        error = await recv_type(ws, "error")
        assert error["message"].startswith("frame 1: "), error
        await ws.send_message(b"GIF89a not a frame we take")  # frame 2
        error = await recv_type(ws, "error")
        assert error["message"] == "frame 2: not a JPEG, PNG or WebP image"
        await ws.send_message(png_header(20_000, 20_000))  # frame 3: 400 Mpx declared
        error = await recv_type(ws, "error")
        assert "frame 3: 20000x20000 is over max_frame_pixels (2073600)" in error["message"]
        await ws.send_message(good)  # frame 4: the session goes on
        answer = await recv_type(ws, "eye_data")
        assert answer["frame"] == 4 and answer["face_detected"]
    # The bomb was never decoded: it would have taken 400 MB.
    assert running.server.sessions.statistics().frames.bad == 3


@capped
async def test_a_binary_message_without_a_session_says_how_to_start_one(
    nursery: trio.Nursery,
) -> None:
    running = await serve(nursery)
    async with open_websocket_url(url(running)) as ws:
        await recv_json(ws)
        await ws.send_message(jpegs("single_face.mp4")[0][0])
        error = await recv_type(ws, "error")
        assert '"source": "client"' in error["message"]
        await ws.send_message('{"type": "ping"}')  # and the connection goes on
        assert (await recv_type(ws, "pong"))["type"] == "pong"


@capped
async def test_a_frame_over_max_frame_bytes_closes_with_1009(nursery: trio.Nursery) -> None:
    running = await serve(nursery, max_frame_bytes=10_000)
    good, _ = jpegs("single_face.mp4")[0]
    assert len(good) > 10_000
    async with open_websocket_url(url(running)) as ws:
        started = await start_session(ws)
        assert started["max_frame_bytes"] == 10_000
        await ws.send_message(good)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await ws.get_message()
    assert closed.value.reason.code == 1009


@capped
async def test_frames_over_max_fps_are_answered_and_counted(nursery: trio.Nursery) -> None:
    """Each frame over the rate gets a coded error naming it: a client that waits for an answer
    before it sends again (issue 21: a frame dropped unanswered stalled it for ever) goes on."""
    running = await serve(nursery, max_fps=2.0)
    clip = jpegs("single_face.mp4")[:10]
    async with open_websocket_url(url(running)) as ws:
        await start_session(ws)
        for data, _ in clip:  # 10 at once, against 2 a second (a burst of 1)
            await ws.send_message(data)
        answers: dict[int, str] = {}
        while len(answers) < len(clip):
            message = await recv_json(ws)
            if message["type"] == "eye_data":
                answers[message["frame"]] = "eye_data"
            else:
                assert message["type"] == "error", message
                frame = int(message["message"].split(":")[0].removeprefix("frame "))
                answers[frame] = message["code"]
        await ws.send_message('{"type": "status"}')
        status = await recv_type(ws, "status")
        assert status["frames_received"] == 10
        # At most two pass at once (2 fps x 0.5 s of burst, at least 1); nothing waits long.
        assert status["frames_dropped"] >= 8
    assert sorted(answers) == list(range(1, 11))
    over_rate = [n for n, what in answers.items() if what == "frame_over_rate"]
    assert len(over_rate) == running.server.sessions.statistics().frames.over_rate >= 8


@capped
async def test_max_sessions_refuses_one_more_and_the_connection_stays(
    nursery: trio.Nursery,
) -> None:
    running = await serve(nursery, max_sessions=1)
    async with (
        open_websocket_url(url(running)) as first,
        open_websocket_url(url(running)) as second,
    ):
        await start_session(first)
        await recv_json(second)
        await second.send_message(START)
        error = await recv_type(second, "error")
        assert error["message"].startswith("server busy: 1 push sessions")
        await first.send_message('{"type": "stop_tracking"}')  # frees its place
        await first.send_message('{"type": "status"}')
        assert (await recv_type(first, "status"))["session"] is None  # a push connection still
        await second.send_message(START)
        assert (await recv_type(second, "tracking_started"))["session"]


PUSH_FIELDS = {"session", "frames_received", "frames_analysed", "frames_dropped", "frames_bad"}


@capped
async def test_status_carries_the_push_fields_on_push_connections_only(
    nursery: trio.Nursery,
) -> None:
    """A stream client's ``status`` has no push keys; a push connection's has them, and once
    its session stops, ``session`` is null and the counts are its last session's."""
    running = await serve(nursery)
    clip = jpegs("single_face.mp4")[:3]
    async with open_websocket_url(url(running)) as stream, open_websocket_url(url(running)) as ws:
        await recv_json(stream)
        await stream.send_message('{"type": "status"}')
        assert not PUSH_FIELDS & set(await recv_type(stream, "status"))
        started = await start_session(ws)
        for data, _ in clip:
            await ws.send_message(data)
            await recv_type(ws, "eye_data")
        await ws.send_message('{"type": "status"}')
        during = await recv_type(ws, "status")
        await ws.send_message('{"type": "stop_tracking"}')
        await ws.send_message('{"type": "status"}')
        after = await recv_type(ws, "status")
    assert (during["session"], during["frames_analysed"]) == (started["session"], len(clip))
    assert (after["session"], after["frames_received"]) == (None, len(clip))


@capped
async def test_one_connection_tracks_one_way_at_a_time(nursery: trio.Nursery) -> None:
    running = await serve(nursery)
    async with open_websocket_url(url(running)) as ws:
        first = await start_session(ws)
        await ws.send_message(START)  # a second one changes nothing
        assert (await recv_type(ws, "tracking_started"))["session"] == first["session"]
        await ws.send_message('{"type": "start_tracking"}')
        assert "stop_tracking first" in (await recv_type(ws, "error"))["message"]


# --- fuzzing ---------------------------------------------------------------------------------


def _truncations() -> st.SearchStrategy[bytes]:
    good = jpegs("single_face.mp4")[0][0]
    ok, png = cv2.imencode(".png", np.full((40, 60), 128, np.uint8))
    ok2, webp = cv2.imencode(".webp", np.full((40, 60, 3), 90, np.uint8))
    assert ok and ok2
    whole = st.sampled_from([good, png.tobytes(), webp.tobytes()])
    return st.builds(
        lambda data, cut: data[: max(1, math.floor(len(data) * cut))], whole, st.floats(0.0, 0.999)
    )


payloads = st.one_of(
    _truncations(),
    st.binary(max_size=2000),
    st.builds(png_header, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    st.binary(min_size=600_000, max_size=600_001),  # over max_frame_bytes
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=payloads)
async def test_any_binary_payload_gets_an_error_or_1009_and_the_server_serves_on(
    payload: bytes,
) -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            running = await serve(nursery)
            async with open_websocket_url(url(running)) as ws:
                await start_session(ws)
                await ws.send_message(payload)
                try:
                    answer = await recv_json(ws)
                    assert answer["type"] in ("error", "eye_data"), answer
                    if answer["type"] == "eye_data":  # a truncation that still decodes
                        assert answer["frame"] == 1
                except ConnectionClosed as closed:
                    assert len(payload) > 524288 and closed.reason.code == 1009
            async with open_websocket_url(url(running)) as after:  # it serves on
                good, _ = jpegs("single_face.mp4")[0]
                await start_session(after)
                await after.send_message(good)
                assert (await recv_type(after, "eye_data"))["frame"] == 1
            nursery.cancel_scope.cancel()


def test_clip_fixtures_are_there() -> None:
    for name in ("single_face.mp4", "face_noface.mov", "no_face.mp4"):
        assert Path(DATA / name).is_file()
