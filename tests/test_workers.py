"""``trackerd --workers N``: N processes on one port, only the first with the server's camera.

Real processes, real signals: the supervisor's SIGTERM drains every worker; a worker that dies
takes the others down with it (the platform restarts the whole); so does the supervisor's own
death, through Linux's parent-death signal.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import urllib.request
from pathlib import Path

import cv2
import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from tests.children import Children, Process, children
from tests.media import DATA, frames
from tests.serverkit import EXIT_CAP_S, closing_code, recv_json, recv_type

PUSH = json.dumps({"type": "start_tracking", "source": "client"})
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="SO_REUSEPORT balancing, /proc")

CONNECTIONS = 16
"""The kernel picks a worker by a hash of each connection's ports: with 16, all on one of two
workers happens once in 32,768 runs."""


async def supervisor(started: Children) -> tuple[Process, int, list[int]]:
    """``trackerd --workers 2`` on a clip; its port and its workers' pids, once both listen."""
    server = await started.spawn(
        sys.executable, "-m", "trackerd", "--host", "127.0.0.1", "--port", "0",
        "--source", str(DATA / "single_face.mp4"), "--workers", "2",
        # Every test connection comes from 127.0.0.1, and worker 1 takes ~8 push sessions.
        "--max-sessions-per-ip", str(CONNECTIONS),
    )  # fmt: skip
    listening = await server.wait_for(rb"listening on ws://[^:]+:(\d+) \(.*worker", count=2)
    ports = {int(found.group(1)) for found in listening}
    assert len(ports) == 1, ports  # one port for both
    pid = server.process.pid
    workers = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    assert len(workers) == 2
    return server, ports.pop(), workers


async def first_answer(ws: WebSocketConnection) -> dict[str, object]:
    """Ask for the server's camera: eye_data from worker 0, an error from the others."""
    await recv_json(ws)
    await ws.send_message('{"type": "start_tracking"}')
    while (message := await recv_json(ws))["type"] not in ("eye_data", "error"):
        pass
    return message


async def test_workers_share_a_port_only_worker_0_has_the_camera_and_sigterm_drains_all() -> None:
    jpeg = cv2.imencode(".jpg", frames(DATA / "single_face.mp4")[0].image)[1].tobytes()
    with trio.fail_after(30):
        async with children() as started:
            server, port, _ = await supervisor(started)
            answers: list[dict[str, object]] = []
            codes: list[int] = []

            async def connection(task_status: trio.TaskStatus[None]) -> None:
                async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
                    answer = await first_answer(ws)
                    answers.append(answer)
                    if answer["type"] == "error":  # every worker takes push sessions
                        await ws.send_message('{"type": "stop_tracking"}')
                        await ws.send_message(PUSH)
                        await recv_type(ws, "tracking_started")
                        await ws.send_message(jpeg)
                        await recv_type(ws, "eye_data")
                    task_status.started()
                    codes.append(await closing_code(ws))

            async with trio.open_nursery() as nursery:
                for _ in range(CONNECTIONS):
                    await nursery.start(connection)
                server.process.send_signal(signal.SIGTERM)
                with trio.fail_after(EXIT_CAP_S):
                    assert await server.process.wait() == 0
    kinds = [a["type"] for a in answers]
    assert 0 < kinds.count("eye_data") < CONNECTIONS, kinds
    refusals = [str(a["message"]) for a in answers if a["type"] == "error"]
    assert all("worker 0 only" in r and "worker 1" in r for r in refusals), refusals
    assert codes == [1001] * CONNECTIONS


async def test_the_supervisor_does_not_load_the_tracker() -> None:
    """It only starts and stops the workers: it used to import numba (LLVM) and the tracker for
    nothing, 167 MiB beside each ~190 MiB worker. Checked by what it maps: the compiled kernels'
    library, which only the tracker imports. (Its RSS against a worker's no longer tells them
    apart: a worker is ~85 MiB since the kernels are compiled at install, and the supervisor's
    own varies with what opening the source to check it loads, OpenCV's video libraries:
    25-80 MiB on different machines.)"""
    with trio.fail_after(30):
        async with children() as started:
            server, _, workers = await supervisor(started)
            pid = server.process.pid
            supervisor_maps = Path(f"/proc/{pid}/maps").read_text()
            worker_maps = Path(f"/proc/{workers[0]}/maps").read_text()
            server.process.send_signal(signal.SIGTERM)
            assert await server.process.wait() == 0
    kernels = "kernels/_compiled"
    assert kernels in worker_maps and kernels not in supervisor_maps


async def test_a_worker_that_dies_takes_the_others_down_and_the_supervisor_exits_1() -> None:
    with trio.fail_after(30):
        async with children() as started:
            server, _, workers = await supervisor(started)
            os.kill(workers[1], signal.SIGKILL)
            with trio.fail_after(5.0):
                assert await server.process.wait() == 1
                await server.wait_closed()  # the supervisor waited for worker 0 to drain
    assert f"worker 1 (pid {workers[1]}) exited (-9): stopping the others".encode() in server.log
    assert server.log.count(b"SIGTERM received") == 1  # worker 0's


async def test_when_the_supervisor_is_killed_its_workers_drain_and_exit() -> None:
    with trio.fail_after(30):
        async with children() as started:
            server, _, _ = await supervisor(started)
            server.process.kill()
            with trio.fail_after(5.0):
                await server.wait_closed()  # the workers, which share its stderr, are gone too
    # Each worker drains once. One may be told twice: Linux sends the parent-death signal each
    # time a worker is reparented, first to a thread of the dying supervisor that is still
    # alive (it has a few: OpenBLAS, OpenCV), then past it; the second is logged "already
    # draining" and changes nothing (seen in CI).
    assert server.log.count(b"SIGTERM received\n") == 2


async def test_workers_are_named_in_logs_and_healthz_and_share_the_command_line() -> None:
    """The port reaches a worker in its environment: its command line is the supervisor's, not
    the supervisor's with a second ``--port``; and behind one port, who answered is said."""
    with trio.fail_after(30):
        async with children() as started:
            server, port, workers = await supervisor(started)
            pid = server.process.pid
            lines = [Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0") for p in workers]
            answers = set()
            while answers != {0, 1}:  # the kernel picks the worker
                answer = await trio.to_thread.run_sync(_get_json, port, "/healthz")
                answers.add(answer["worker"])
            supervisor_line = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            server.process.send_signal(signal.SIGTERM)
            assert await server.process.wait() == 0
    for line in lines:
        assert line.count(b"--port") == 1, line
        assert line == supervisor_line, (line, supervisor_line)
    log = server.log.decode()
    assert re.search(r"INFO trackerd\.app\[worker 0\]: listening on", log), log
    assert re.search(r"INFO trackerd\.app\[worker 1\]: listening on", log), log
    assert "SIGTERM received" in log
    assert all("[worker " in line for line in log.splitlines() if "SIGTERM received" in line)


def _get_json(port: int, path: str) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        answer: dict[str, object] = json.loads(response.read())
    return answer
