"""The platform's side (issue 21), end to end: real ``python -m trackerd`` processes, real clips
pushed with a session token minted by PyJWT, and a real webhook receiver
(:mod:`tests.receiver`, its own process) that verifies every request with the
``standardwebhooks`` package, not with trackerd's code.

- a candidate who leaves and comes back is one ``away`` episode, dated within 1 s of the cuts,
  and the ``session.ended`` report's away total is that episode's;
- ``kill -9`` with events undelivered loses nothing: the next start on the same ``--data-dir``
  delivers them, and ends the cut session with ``reason`` ``server_stopped``;
- observers get a session's events live; a token observes its own sid only;
- ``GET /sessions/{sid}`` (the admin key) and ``trackerd report SID`` give the report;
- a database that fails (corrupt, or locked by another process mid-session) is said in the log
  and ``/readyz``, new sessions are refused, and the open ones go on.

The receiver outage (500, a hang, 60 s of refused connections) is in
tests/test_webhook_outage.py: it takes two minutes.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import trio
from trio_websocket import WebSocketConnection, connect_websocket_url, open_websocket_url

from tests.receiver import ReceiverProcess, receiver
from tests.serverkit import (
    drain,
    recv_json,
    recv_type,
    run_trackerd,
    serving,
    start_server,
    terminate,
    wait_for_log,
)
from tests.test_nginx import free_port
from tests.test_ops import http_get
from tests.test_push import jpegs
from tests.test_tokens import KEY_1, PUSH, claims, mint

SECRET = "whsec_" + base64.b64encode(b"webhook-secret-for-tests-32-byte").decode()
SHARED = "shared-operator-token-for-tests"
ADMIN = "admin-key-for-tests-" + "x" * 20
ENV = {
    "TRACKERD_SIGNING_KEYS": f"k1={KEY_1}",
    "TRACKERD_WEBHOOK_SECRET": SECRET,
    "TRACKERD_TOKEN": SHARED,
    "TRACKERD_ADMIN_KEY": ADMIN,
}
CAP_S = 90


def trackerd(*args: str) -> contextlib.AbstractAsyncContextManager[tuple[trio.Process, int]]:
    """A real push-only trackerd on 127.0.0.1 (``ARGS`` after), with the keys above."""
    return serving("--source", "none", *args, env=ENV)


def ws_url(port: int, token: str) -> str:
    return f"ws://127.0.0.1:{port}/?token={token}"


async def push_clip(ws: WebSocketConnection, clip: Sequence[tuple[bytes, float]]) -> list[float]:
    """Send ``clip``'s frames at their media times, each after the last one's answer (as the
    browser client does); the wall-clock time each was sent at."""
    await recv_type(ws, "connection")
    await ws.send_message(PUSH)
    await recv_type(ws, "tracking_started")
    began = trio.current_time()
    sent_at = []
    for number, (data, t) in enumerate(clip, start=1):
        await trio.sleep_until(began + t)  # the clip's own pace, not a wait for a condition
        sent_at.append(time.time())
        await ws.send_message(data)
        while (answer := await recv_json(ws))["type"] not in ("eye_data", "error"):
            pass
        assert answer.get("frame", number) == number or answer["type"] == "error", answer
    return sent_at


def leaves_and_comes_back() -> tuple[list[tuple[bytes, float]], int, int]:
    """face_noface.mov then noface_face.mov, on one timeline: the frames, and the numbers of
    the first frame without the person and the first with them again."""
    first, second = jpegs("face_noface.mov"), jpegs("noface_face.mov")
    step = first[-1][1] - first[-2][1]
    offset = first[-1][1] + step
    clip = [*first, *((data, offset + t) for data, t in second)]
    return clip, 72 + 1, len(first) + 96 + 1


def unix(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def bodies(rx: ReceiverProcess, type: str, kind: str | None = None) -> list[dict[str, Any]]:
    """The receiver's verified bodies of ``type`` (and episode ``kind``), duplicates dropped."""
    seen: dict[str, dict[str, Any]] = {}
    for delivery in rx.deliveries:
        body = delivery["body"]
        if body["type"] == type and (kind is None or body["data"]["kind"] == kind):
            seen.setdefault(delivery["id"], body)
    return list(seen.values())


async def test_a_candidate_who_leaves_and_comes_back_is_one_away_episode_at_the_receiver() -> None:
    clip, gone, back = leaves_and_comes_back()
    with trio.fail_after(CAP_S):
        async with receiver(SECRET) as rx, trackerd("--webhook-url", rx.url()) as (_, port):
            token = mint(claims(now=time.time(), sid="interview-p1", metadata={"exam": "x"}))
            async with open_websocket_url(ws_url(port, token)) as ws:
                sent_at = await push_clip(ws, clip)
                await ws.send_message('{"type": "stop_tracking"}')
                await rx.wait(lambda: bool(bodies(rx, "session.ended")))
    (away,) = bodies(rx, "episode.ended", "away")
    (started,) = bodies(rx, "episode.started", "away")
    data = away["data"]
    assert (data["sid"], data["sub"], data["metadata"]) == (
        "interview-p1",
        "candidate-7",
        {"exam": "x"},
    )
    assert started["data"]["start"] == data["start"] and started["data"]["end"] is None
    print(f"\naway {data['start']} - {data['end']}; cut at {sent_at[gone - 1]:.3f}, back at "
          f"{sent_at[back - 1]:.3f}")  # fmt: skip
    assert abs(unix(data["start"]) - sent_at[gone - 1]) <= 1.0
    assert abs(unix(data["end"]) - sent_at[back - 1]) <= 1.0
    (ended,) = bodies(rx, "session.ended")
    report = ended["data"]
    assert report["reason"] == "stopped" and report["sid"] == "interview-p1"
    assert report["episodes"]["away"] == {
        "count": 1,
        "total_s": data["duration_s"],
        "longest_s": data["duration_s"],
    }
    assert report["frames"]["received"] == len(clip)
    assert [e["kind"] for e in report["timeline"] if e["kind"] == "away"] == ["away"]


async def observe(
    nursery: trio.Nursery, port: int, token: str, sid: str | None = None
) -> WebSocketConnection:
    """An observer connection (closed with ``nursery``), past its ``observing`` answer."""
    ws = await connect_websocket_url(nursery, ws_url(port, token))
    await recv_type(ws, "connection")
    await ws.send_message(json.dumps({"type": "observe", **({"sid": sid} if sid else {})}))
    await recv_type(ws, "observing")
    return ws


async def next_event(
    ws: WebSocketConnection, event: str, kind: str | None = None
) -> dict[str, Any]:
    while True:
        message = await recv_json(ws)
        wanted = message["type"] == "event" and message["event"] == event
        if wanted and (kind is None or message["data"]["kind"] == kind):
            return message


async def test_kill_9_with_events_undelivered_loses_none_of_them(data_dir: Path) -> None:
    """The receiver is down while trackerd records a no_face episode (an observer sees it: it
    is on disk), then trackerd is killed with SIGKILL. Started again on the same --data-dir
    with the receiver up, it delivers the episode, and ends the cut session
    ``server_stopped``."""
    port_rx = free_port()
    hook = f"http://127.0.0.1:{port_rx}/hooks"
    empty = jpegs("no_face.mp4")
    with trio.fail_after(CAP_S):
        async with trackerd("--webhook-url", hook) as (process, port):
            token = mint(claims(now=time.time(), sid="interview-k1"))
            async with trio.open_nursery() as nursery:
                watcher = await observe(nursery, port, SHARED, "interview-k1")
                candidate = await connect_websocket_url(nursery, ws_url(port, token))
                nursery.start_soon(push_clip, candidate, empty * 3)
                seen = await next_event(watcher, "episode.started", "no_face")
                process.send_signal(signal.SIGKILL)
                nursery.cancel_scope.cancel()
            await process.wait()
        assert (data_dir / "trackerd.sqlite3").exists()
        async with receiver(SECRET, port=port_rx) as rx, trackerd("--webhook-url", hook):
            await rx.wait(lambda: bool(bodies(rx, "session.ended")))
    (started,) = bodies(rx, "episode.started", "no_face")
    assert started["data"] == seen["data"]
    (ended,) = bodies(rx, "session.ended")
    assert ended["data"]["sid"] == "interview-k1"
    assert ended["data"]["reason"] == "server_stopped"
    assert ended["data"]["episodes"]["no_face"]["count"] == 1


async def test_observers_see_their_sid_only_and_the_candidate_only_if_the_token_says() -> None:
    empty = jpegs("no_face.mp4")
    with trio.fail_after(CAP_S):
        async with trackerd() as (_, port):
            now = time.time()
            proctor = mint(claims(now=now, sid="interview-o1", grants=["observe"]))
            other = mint(claims(now=now, sid="interview-o2", grants=["observe"]))
            pusher = mint(claims(now=now, sid="interview-o2", grants=["push"]))
            async with open_websocket_url(ws_url(port, other)) as ws:
                await recv_type(ws, "connection")
                await ws.send_message('{"type": "observe", "sid": "interview-o1"}')
                refused = await recv_type(ws, "error")
                assert refused["code"] == "not_granted", refused
            async with open_websocket_url(ws_url(port, pusher)) as ws:
                await recv_type(ws, "connection")
                await ws.send_message('{"type": "observe"}')
                assert (await recv_type(ws, "error"))["code"] == "not_granted"
            told = mint(claims(now=now, sid="interview-o1", events_to_client=True))
            async with (
                open_websocket_url(ws_url(port, told)) as ws,
                trio.open_nursery() as nursery,
            ):
                watcher = await observe(nursery, port, proctor)
                nursery.start_soon(push_clip, ws, empty * 2)
                seen = await next_event(watcher, "episode.started", "no_face")
                nursery.cancel_scope.cancel()
            assert seen["data"]["sid"] == "interview-o1"
            # Not told by default: the candidate of interview-o3 gets eye_data only.
            quiet = mint(claims(now=now, sid="interview-o3"))
            async with open_websocket_url(ws_url(port, quiet)) as ws:
                async with trio.open_nursery() as nursery:
                    watcher_3 = await observe(nursery, port, SHARED, "interview-o3")
                    nursery.start_soon(push_clip, ws, empty * 2)
                    await next_event(watcher_3, "episode.started", "no_face")
                    nursery.cancel_scope.cancel()
                await ws.send_message('{"type": "status"}')
                while (message := await recv_json(ws))["type"] != "status":
                    assert message["type"] != "event", message


async def test_the_candidate_told_by_its_token_gets_its_own_events() -> None:
    empty = jpegs("no_face.mp4")
    with trio.fail_after(CAP_S):
        async with trackerd() as (_, port):
            told = mint(claims(now=time.time(), sid="interview-t1", events_to_client=True))
            async with open_websocket_url(ws_url(port, told)) as ws:
                await recv_type(ws, "connection")
                await ws.send_message(PUSH)
                await recv_type(ws, "tracking_started")
                events: list[dict[str, Any]] = []
                for data, _ in empty * 2:
                    await ws.send_message(data)
                    while (answer := await recv_json(ws))["type"] not in ("eye_data", "error"):
                        events.append(answer)
                    if events:
                        break
                    await trio.sleep(1 / 25)  # the clip's pace
    assert events and events[0]["type"] == "event", events
    assert events[0]["data"]["kind"] == "no_face"


async def test_the_report_by_admin_key_and_by_the_command_line(data_dir: Path) -> None:
    clip = jpegs("single_face.mp4")[:30]
    with trio.fail_after(CAP_S):
        async with trackerd() as (_, port):
            token = mint(claims(now=time.time(), sid="interview-r1"))
            async with open_websocket_url(ws_url(port, token)) as ws:
                await push_clip(ws, clip)
                status, _, body = await trio.to_thread.run_sync(
                    get, port, "/sessions/interview-r1", ADMIN
                )
                assert status == 200, body
                live = json.loads(body)
                assert live["end"] is None and live["frames"]["analysed"] == len(clip)
                await ws.send_message('{"type": "stop_tracking"}')
            for key, expected in ((None, 401), ("wrong", 401), (ADMIN, 404)):
                status, _, _ = await trio.to_thread.run_sync(get, port, "/sessions/nobody", key)
                assert status == expected, key
            status, _, _ = await trio.to_thread.run_sync(http_get, port, "/sessions/interview-r1")
            assert status == 401
    printed = await trio.to_thread.run_sync(
        lambda: run_trackerd("report", "interview-r1", "--data-dir", str(data_dir))
    )
    assert printed.returncode == 0, printed.stderr
    report = json.loads(printed.stdout)
    assert report["sid"] == "interview-r1" and report["reason"] == "stopped"
    assert report["frames"]["analysed"] == len(clip)
    missing = run_trackerd("report", "nobody", "--data-dir", str(data_dir))
    assert missing.returncode == 1 and "no session" in missing.stderr


def get(port: int, path: str, key: str | None) -> tuple[int, str, str]:
    return http_get(port, path, headers={"Authorization": f"Bearer {key}"} if key else {})


async def test_a_corrupt_database_refuses_new_sessions_and_says_so(data_dir: Path) -> None:
    data_dir.mkdir(parents=True)
    (data_dir / "trackerd.sqlite3").write_bytes(b"not a database " * 1000)
    with trio.fail_after(CAP_S):
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "trackerd", "--host", "127.0.0.1", "--port", "0"],
            stderr=subprocess.PIPE,
            env={**os.environ, **ENV, "TRACKERD_SOURCE": "demo"},
        )
        assert process.stderr is not None
        log = await wait_for_log(process.stderr, {rb"listening on ws://[^:]+:\d+": 1})
        port = int(re.findall(rb"listening on ws://[^:]+:(\d+)", log)[0])
        assert re.search(rb"ERROR.*database \(open\).*corrupt", log), log
        try:
            status, _, body = await trio.to_thread.run_sync(http_get, port, "/readyz")
            assert status == 503 and json.loads(body)["status"] == "store", body
            assert "corrupt" in json.loads(body)["problem"]
            async with open_websocket_url(ws_url(port, SHARED)) as ws:
                await recv_type(ws, "connection")
                await ws.send_message(PUSH)
                refused = await recv_type(ws, "error")
                assert refused["code"] == "store_unavailable", refused
                # The server's own camera is not the database's: it still serves.
                await ws.send_message('{"type": "start_tracking"}')
                while (await recv_json(ws))["type"] != "eye_data":
                    pass
        finally:
            await terminate(process, 5)


async def test_a_database_locked_mid_session_refuses_new_ones_and_the_open_one_goes_on(
    data_dir: Path,
) -> None:
    """Another process takes the database's write lock while a session runs: the next event
    cannot be written (after the 2 s busy timeout), /readyz says so, a new session is refused,
    and the open session's frames are answered throughout."""
    clip = jpegs("single_face.mp4")
    empty = jpegs("no_face.mp4")
    with trio.fail_after(CAP_S):
        async with trackerd() as (_, port), trio.open_nursery() as outer:
            watcher = await observe(outer, port, SHARED, "interview-l1")
            token = mint(claims(now=time.time(), sid="interview-l1"))
            async with open_websocket_url(ws_url(port, token)) as ws:
                await push_clip(ws, clip[:10])
                locker = await trio.lowlevel.open_process(
                    [sys.executable, "-c", LOCK, str(data_dir / "trackerd.sqlite3")],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                )
                try:
                    assert locker.stdout is not None and locker.stdin is not None
                    # A pipe may hand the line over in pieces: read until it is whole.
                    await wait_for_log(locker.stdout, {rb"^locked\n": 1})
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(push_clip_on, ws, empty * 3)
                        # Shown to observers even when it could not be recorded.
                        await next_event(watcher, "episode.started", "no_face")
                        status, _, body = await trio.to_thread.run_sync(http_get, port, "/readyz")
                        assert status == 503 and "locked" in json.loads(body)["problem"], body
                        other = mint(claims(now=time.time(), sid="interview-l2"))
                        async with open_websocket_url(ws_url(port, other)) as second:
                            await recv_type(second, "connection")
                            await second.send_message(PUSH)
                            refused = await recv_type(second, "error")
                            assert refused["code"] == "store_unavailable", refused
                        nursery.cancel_scope.cancel()
                    await ws.send_message(clip[0][0])  # the open session goes on
                    while (await recv_json(ws))["type"] != "eye_data":
                        pass
                finally:
                    locker.kill()
                    await locker.wait()
            outer.cancel_scope.cancel()


LOCK = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
"""


async def push_clip_on(ws: WebSocketConnection, clip: Sequence[tuple[bytes, float]]) -> None:
    """``clip``'s frames on a session already started, at the clip's pace, each answered."""
    began = trio.current_time()
    for data, t in clip:
        await trio.sleep_until(began + t)
        await ws.send_message(data)
        while (await recv_json(ws))["type"] not in ("eye_data", "error"):
            pass


async def test_the_servers_own_camera_is_a_session_with_the_same_episodes() -> None:
    """``--source`` a clip in which the person leaves: a client streams its ``eye_data`` as in
    the original, and an observer of sid ``camera`` gets the ``no_face`` episode."""
    clip = Path(__file__).parent / "data" / "face_noface.mov"
    with trio.fail_after(CAP_S):
        process, port = await start_server(
            "--host", "127.0.0.1", "--port", "0", "--source", str(clip), env=ENV
        )
        try:
            async with (
                trio.open_nursery() as nursery,
                open_websocket_url(ws_url(port, SHARED)) as viewer,
            ):
                nursery.start_soon(drain, process)
                watcher = await observe(nursery, port, SHARED, "camera")
                await recv_type(viewer, "connection")
                await viewer.send_message('{"type": "start_tracking"}')
                event = await next_event(watcher, "episode.started", "no_face")
                assert event["data"]["sid"] == "camera"
                status, _, body = await trio.to_thread.run_sync(
                    get, port, "/sessions/camera", ADMIN
                )
                assert status == 200 and json.loads(body)["episodes"]["no_face"]["count"] >= 1
                nursery.cancel_scope.cancel()
        finally:
            await terminate(process, 5)
