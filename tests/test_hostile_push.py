"""The candidate is the adversary (issue 20): pushed frames and sessions built to take the server
from everyone else, each sent to a real ``trackerd --source demo`` process on 127.0.0.1, with
its defaults unless a test names a flag.

Each test failed before its fix (the issue's closing note gives the runs):

1. a 365-byte JPEG that hides a 6000x6000 frame header behind ``FF 00`` was decoded whole;
2. a progressive JPEG in thousands of scans took seconds to decode;
3. a JPEG of ``FF`` fill bytes cost ~140 ms of the event loop a frame, and a PNG of 43,000
   empty chunks ~130 ms of the GIL;
4. frames built to be costly to search were searched, seconds each, as often as they came;
5. one address held every session, idle, and ``/readyz`` said nothing;
6. a frame in analysis when ``stop_tracking`` came was answered after it.

The frames come from :mod:`benchmarks.hostile`, which the attack benchmark
(``python -m benchmarks attacks``) sends at the rates the issue names.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import trio

from benchmarks import hostile
from tests.serverkit import RawClient, client_frame, serving
from trackerd.net.sessions import COSTLY_FRAMES
from trackerd.vision.images import MAX_JPEG_SCANS, MAX_PNG_CHUNKS

START = json.dumps({"type": "start_tracking", "source": "client"})
CAP_S = 60


@functools.cache
def honest() -> bytes:
    return hostile.real_face_jpegs(1)[0]


async def open_session(port: int, source: str = "") -> tuple[RawClient, dict[str, Any]]:
    """A connection that asked for a push session, and the server's answer to it."""
    client = await RawClient.connect(port, source=source)
    assert (await client.recv())["type"] == "connection"
    await client.send_text(START)
    return client, await client.recv()


async def push(client: RawClient, frame: bytes) -> dict[str, Any]:
    """Send one frame and return the server's answer to it (``eye_data`` or ``error``)."""
    await client.send(client_frame(0x2, frame))
    return await client.recv()


def peak_rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    (line,) = [line for line in status.splitlines() if line.startswith("VmHWM:")]
    return int(line.split()[1]) * 1024


def main_thread_cpu_s(pid: int) -> float:
    """CPU time of the process's main thread, which runs trio's event loop (the analysis
    threads and the capture are other threads): what a frame costs everyone else."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def test_a_jpeg_that_hides_its_size_is_refused_and_costs_no_memory() -> None:
    with trio.fail_after(CAP_S):
        async with serving("--source", "demo") as (process, port):
            client, started = await open_session(port)
            assert started["type"] == "tracking_started"
            assert (await push(client, honest()))["type"] == "eye_data"
            before = peak_rss_bytes(process.pid)
            answer = await push(client, hostile.jpeg_hidden_sof(6000, 6000))
            grown = peak_rss_bytes(process.pid) - before
            print(f"\nhidden 6000x6000: {answer}; peak RSS +{grown / 2**20:.1f} MiB")
            assert answer["type"] == "error" and answer["code"] == "bad_frame", answer
            assert "frame 2" in answer["message"]
            assert grown < 16 * 2**20  # 6000x6000 grey alone is 34 MiB
            assert (await push(client, honest()))["type"] == "eye_data"  # the session goes on


async def test_a_jpeg_in_thousands_of_scans_is_refused_at_its_header() -> None:
    with trio.fail_after(CAP_S):
        async with serving("--source", "demo") as (_, port):
            client, _ = await open_session(port)
            answer = await push(client, hostile.jpeg_many_scans(scans=2000))
            assert answer["type"] == "error" and answer["code"] == "bad_frame", answer
            assert f"at most {MAX_JPEG_SCANS}" in answer["message"]


async def test_fill_bytes_and_empty_chunks_cost_the_event_loop_next_to_nothing() -> None:
    """20 frames of 512 KiB of fill bytes: the old marker walk spent ~140 ms of the event
    loop's thread on each (2.8 s in all); libjpeg skips them in C, in the analysis thread's
    decode or in ~1 ms of header. Measured in CPU time of that one thread, not wall time."""
    with trio.fail_after(CAP_S):
        async with serving("--source", "demo") as (process, port):
            client, _ = await open_session(port)
            fill = hostile.jpeg_fill_bytes()
            assert (await push(client, fill))["type"] == "eye_data"  # a legal JPEG
            before = main_thread_cpu_s(process.pid)
            for _ in range(20):
                assert (await push(client, fill))["type"] == "eye_data"
            spent = main_thread_cpu_s(process.pid) - before
            print(f"\n20 fill-byte frames: {spent * 1000:.0f} ms of the event loop's thread")
            assert spent < 0.5
            answer = await push(client, hostile.png_empty_chunks(43_000))
            assert answer["type"] == "error" and answer["code"] == "bad_frame", answer
            assert f"more than {MAX_PNG_CHUNKS} chunks" in answer["message"]


async def test_costly_frames_get_coded_errors_then_the_session_and_its_address_are_shut_out() -> (
    None
):
    """Block noise passes the face cascade's first stages: 3.9 s a search at 1279x1621 before
    (decoded whole, searched on every frame it could). Now each frame is searched at 640 at
    most, a frame over ``--frame-cpu-budget`` gets ``frame_over_budget``, and a few of them
    close the session (1008) and keep its address out for a while."""
    with trio.fail_after(CAP_S):
        async with serving("--source", "demo") as (_, port):
            client, _ = await open_session(port)
            noise = hostile.jpeg_block_noise()
            codes: list[str] = []
            while "session_over_budget" not in codes:
                # The frames between the full searches (a lost face's search runs at most 5
                # times a second, the fine one once) cost less than the budget, and are
                # answered. Paced under --max-fps, so that no frame is refused for its rate.
                answer = await push(client, noise)
                codes.append(answer.get("code", answer["type"]))
                if answer["type"] == "error":  # named like every error about a frame
                    assert answer["message"].startswith(f"frame {len(codes)}: "), answer
                await trio.sleep(0.1)
            print(f"\nanswers to block noise: {codes}")
            assert set(codes) <= {"eye_data", "frame_over_budget", "session_over_budget"}
            assert codes.count("frame_over_budget") == COSTLY_FRAMES
            assert await client.close_code() == 1008
            _, answer = await open_session(port)
            assert answer["type"] == "error" and answer["code"] == "address_penalised", answer
            other, answer = await open_session(port, source="127.0.0.2")
            assert answer["type"] == "tracking_started"  # another address is not held to it
            assert (await push(other, honest()))["type"] == "eye_data"
            body = (await get(port, "/metrics"))[1].decode()
            samples = dict(line.rsplit(" ", 1) for line in body.splitlines() if "{" in line)
            over = float(samples['trackerd_pushed_frames_total{outcome="over_budget"}'])
            assert over == COSTLY_FRAMES + 1  # the one that closed the session too
            for code in ("session_over_budget", "address_penalised"):
                assert float(samples[f'trackerd_sessions_refused_total{{code="{code}"}}']) == 1


async def test_one_address_holds_few_sessions_and_readyz_says_when_all_are_taken() -> None:
    with trio.fail_after(CAP_S):
        async with serving("--source", "demo", "--max-sessions", "6") as (_, port):
            held = []
            for _ in range(4):
                client, answer = await open_session(port)
                assert answer["type"] == "tracking_started"
                held.append(client)
            _, answer = await open_session(port)
            assert answer["type"] == "error" and answer["code"] == "address_busy", answer
            assert await readyz(port) == (200, "ready")
            for source in ("127.0.0.2", "127.0.0.3"):
                client, answer = await open_session(port, source)
                assert answer["type"] == "tracking_started"
                held.append(client)
            assert await readyz(port) == (503, "full")
            _, answer = await open_session(port, "127.0.0.4")
            assert answer["type"] == "error" and answer["code"] == "server_busy", answer
            # A close frame, then the server's TCP close: it ends the connection only after
            # the client's handler, and with it the session, is gone.
            leaving = held.pop()
            await leaving.send(client_frame(0x8, (1000).to_bytes(2, "big")))
            await leaving.read_until_closed()
            assert await readyz(port) == (200, "ready")


async def get(port: int, path: str) -> tuple[int, bytes]:
    client = await RawClient.connect(port, handshake=False)
    try:
        await client.send(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        response = await client.read_until_closed()
    finally:
        await client.aclose()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def readyz(port: int) -> tuple[int, str]:
    status, body = await get(port, "/readyz")
    return status, json.loads(body)["status"]


async def test_a_session_that_sends_nothing_is_closed_with_a_coded_error() -> None:
    with trio.fail_after(CAP_S):
        async with serving("--source", "demo", "--session-idle-timeout", "1") as (_, port):
            sender, _ = await open_session(port)
            idle, _ = await open_session(port)
            for _ in range(6):  # 1.5 s of frames, paced as a slow camera: never idle
                assert (await push(sender, honest()))["type"] == "eye_data"
                await trio.sleep(0.25)
            answer = await idle.recv()
            assert answer["type"] == "error" and answer["code"] == "session_idle", answer
            assert await idle.close_code() == 1008
            assert (await push(sender, honest()))["type"] == "eye_data"


async def test_no_eye_data_comes_after_stop_tracking() -> None:
    """A frame in analysis when ``stop_tracking`` arrives is never answered: frame numbers start
    again at 1 in the next session, so its answer would pass for the new session's. One analysis
    thread, so the new session's frame is analysed only after the old one.

    The frame left in analysis is the session's first, of noise: a new tracker searches the
    whole of its first frame, ~0.25 s here, and the budget is raised so that its answer would be
    ``eye_data``, not ``frame_over_budget``. (A second frame, after a face was held, costs
    ~4 ms: a race its answer won once in a full run.)"""
    server = ("--source", "demo", "--analysis-threads", "1", "--frame-cpu-budget", "10")
    with trio.fail_after(CAP_S):
        async with serving(*server) as (_, port):
            client, first = await open_session(port)
            await client.send(client_frame(0x2, hostile.jpeg_block_noise(640, 480)))
            await client.send_text(json.dumps({"type": "status"}))
            assert (await client.recv())["type"] == "status"  # frame 1 is in analysis by now
            await client.send_text(json.dumps({"type": "stop_tracking"}))
            await client.send_text(START)
            seen = [await client.recv()]
            second = seen[0]
            assert second["type"] == "tracking_started" and second["session"] != first["session"]
            await client.send(client_frame(0x2, honest()))
            while seen[-1]["type"] != "eye_data" or seen[-1].get("frame") != 1:
                seen.append(await client.recv())
            print(f"\nafter stop_tracking: {[m['type'] for m in seen]}")
            assert [m for m in seen if m["type"] == "eye_data"] == [seen[-1]]
            assert seen[-1]["session"] == second["session"]


async def test_an_honest_first_frame_is_not_charged_for_the_servers_one_time_costs() -> None:
    """The first frame a process analysed, and the first in each new analysis thread, used to
    pay the one-time costs of OpenCV and numba (~25-50 ms of CPU here, more on a busy machine)
    against the candidate's budget: on a busy CI machine a real face got ``frame_over_budget``.
    The server now pays them off the clock. A 320x240 face costs ~12 ms a frame; its first frame
    must fit a 30 ms budget, in a fresh process and in a second session."""
    frame = hostile.real_face_jpegs(1, (320, 240))[0]
    with trio.fail_after(CAP_S):
        async with serving("--frame-cpu-budget", "0.03") as (_, port):
            for _ in range(2):
                client, started = await open_session(port)
                assert started["type"] == "tracking_started", started
                answer = await push(client, frame)
                assert answer["type"] == "eye_data", answer
