"""Running trackerd as a service: `trackerd health`, /healthz and /metrics on the WebSocket's
port, structured logs, and shutdown under load."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.media import DATA
from tests.serverkit import (
    EXIT_CAP_S,
    RawClient,
    Sources,
    SyntheticSource,
    capped,
    metric_samples,
    recv_json,
    recv_type,
    run_trackerd,
    start,
    start_server,
    url,
    vm_rss_bytes,
    wait_for_log,
)
from trackerd.sources import SourceError


def health(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_trackerd("health", *args, env=env)


# --- trackerd health --------------------------------------------------------------------------


def test_health_passes_on_this_installation() -> None:
    done = health("--json", "--source", str(DATA / "single_face.jpg"))
    assert done.returncode == 0, done.stdout
    report = json.loads(done.stdout)
    assert report["healthy"] is True
    assert [c["name"] for c in report["checks"]] == [
        "dependencies",
        "opencv",
        "kernels",
        "settings",
        "source",
    ]
    assert all(c["ok"] for c in report["checks"])


def test_health_names_a_missing_cascade_file(tmp_path: Path) -> None:
    done = health(env={"TRACKERD_CASCADE_DIR": str(tmp_path)})
    assert done.returncode == 1
    assert "FAIL opencv" in done.stdout
    assert str(tmp_path / "haarcascade_frontalface_default.xml") in done.stdout
    assert "OpenCV 4." in done.stdout and "NOT healthy" in done.stdout


def test_health_names_an_invalid_setting() -> None:
    done = health("--json", env={"PORT": "eighty"})
    assert done.returncode == 1
    (settings,) = [c for c in json.loads(done.stdout)["checks"] if c["name"] == "settings"]
    assert not settings["ok"] and "PORT='eighty' is not an integer" in settings["detail"]


def test_health_names_a_certificate_that_does_not_load(tmp_path: Path) -> None:
    done = health("--json", env={"TRACKERD_CERTFILE": str(tmp_path / "missing.pem")})
    assert done.returncode == 1
    (settings,) = [c for c in json.loads(done.stdout)["checks"] if c["name"] == "settings"]
    assert not settings["ok"] and "cannot load" in settings["detail"]
    assert "missing.pem" in settings["detail"]


def test_health_reports_a_source_that_does_not_open(tmp_path: Path) -> None:
    done = health("--source", str(tmp_path / "nope.mp4"))
    assert done.returncode == 1
    assert "FAIL source" in done.stdout and "no such file" in done.stdout


# --- HTTP on the WebSocket's port ---------------------------------------------------------------


def http_get(
    port: int, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, str, str]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def metric(text: str, name: str) -> float:
    (line,) = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(line.split()[1])


@capped
async def test_healthz_and_metrics_answer_while_websocket_clients_are_served(
    nursery: trio.Nursery,
) -> None:
    running = await start(nursery)
    async with open_websocket_url(url(running)) as ws:
        await recv_json(ws)
        await ws.send_message('{"type": "start_tracking"}')
        for _ in range(5):
            seen = await recv_type(ws, "eye_data")
        status, kind, body = await trio.to_thread.run_sync(http_get, running.port, "/healthz")
        assert status == 200 and kind == "application/json"
        report = json.loads(body)
        assert report["status"] == "ok" and report["clients"] == 1 and report["tracking"] == 1
        assert report["version"] and report["fps"] > 0
        frame_first = seen["frame"]
        _, kind, first = await trio.to_thread.run_sync(http_get, running.port, "/metrics")
        assert kind.startswith("text/plain; version=0.0.4")
        for _ in range(10):
            seen = await recv_type(ws, "eye_data")
        frame_second = seen["frame"]
        _, _, second = await trio.to_thread.run_sync(http_get, running.port, "/metrics")
        # The stream went on throughout, and the counters moved with it.
        await recv_type(ws, "eye_data")
    # Each scrape counts at least every frame the client had by then (``frame`` is the capture's
    # sequence number). Not "10 more than the first scrape": frames counted before it can still
    # be on their way to the client, and are then among the 10 it reads after it.
    processed = "trackerd_frames_processed_total"
    assert isinstance(frame_first, int) and isinstance(frame_second, int)
    assert frame_second >= frame_first + 10
    assert metric(first, processed) >= frame_first
    assert metric(second, processed) >= max(frame_second, metric(first, processed) + 1)
    assert metric(second, "trackerd_messages_sent_total") > metric(
        first, "trackerd_messages_sent_total"
    )
    assert metric(second, "trackerd_clients_connected") == 1
    assert metric(second, "trackerd_frame_seconds_count") == metric(second, processed)
    assert (
        "trackerd_messages_dropped_total" in second and "trackerd_protocol_errors_total" in second
    )


@capped
async def test_healthz_is_503_while_the_source_is_failing(nursery: trio.Nursery) -> None:
    sources = Sources(lambda: SyntheticSource(fail_after=3), SourceError("camera unplugged"))
    running = await start(nursery, open_source=sources)
    async with open_websocket_url(url(running)) as ws:
        await recv_json(ws)
        await ws.send_message('{"type": "start_tracking"}')
        await recv_type(ws, "error")
        status, _, body = await trio.to_thread.run_sync(http_get, running.port, "/healthz")
    assert status == 503
    assert json.loads(body)["status"] == "failing" and "failed" in json.loads(body)["error"]


@capped
async def test_other_http_requests_get_plain_answers(nursery: trio.Nursery) -> None:
    running = await start(nursery)
    not_found = await trio.to_thread.run_sync(http_get, running.port, "/no-such-page")
    assert not_found[0] == 404  # "/" is the page (trackerd/net/page.py)
    assert (await trio.to_thread.run_sync(http_get, running.port, "/healthz", "POST"))[0] == 405
    head = await trio.to_thread.run_sync(http_get, running.port, "/healthz", "HEAD")
    assert head[0] == 200 and head[2] == ""
    stream = await trio.open_tcp_stream("127.0.0.1", running.port)
    await stream.send_all(b"NONSENSE\r\n\r\n")
    reply = await stream.receive_some(1024)
    assert reply.startswith(b"HTTP/1.1 400")
    await stream.aclose()
    # None of it disturbed the WebSocket side.
    async with open_websocket_url(url(running)) as ws:
        assert (await recv_json(ws))["type"] == "connection"


# --- logs and shutdown under load ---------------------------------------------------------------


@capped
async def test_json_logs_with_a_periodic_stats_line() -> None:
    process, port = await start_server(
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--source",
        str(DATA / "single_face.mp4"),
        "--log-format",
        "json",
        "--stats-interval",
        "0.2",
    )
    assert process.stderr is not None
    async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
        await recv_json(ws)
        await ws.send_message('{"type": "start_tracking"}')
        await recv_type(ws, "eye_data")
        seen = b""
        while b'"message": "stats"' not in seen or b'"fps": 0' in seen.split(b"\n")[-2]:
            seen += await process.stderr.receive_some(65536)
    process.send_signal(signal.SIGTERM)
    await process.wait()
    lines = [json.loads(line) for line in seen.decode().splitlines() if line.strip()]
    assert all({"ts", "level", "logger", "message"} <= set(entry) for entry in lines)
    stats = [entry for entry in lines if entry["message"] == "stats"]
    assert stats and {"fps", "clients", "frame_ms_p50", "frame_ms_p99", "messages_dropped"} <= set(
        stats[-1]
    )


@capped
async def test_sigterm_under_load_closes_every_client_with_1001() -> None:
    process, port = await start_server(
        "--host", "127.0.0.1", "--port", "0", "--source", str(DATA / "single_face.mp4")
    )
    codes: list[int] = []

    async def client(ready: trio.Event, task_status: trio.TaskStatus[None]) -> None:
        async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
            await recv_json(ws)
            await ws.send_message('{"type": "start_tracking"}')
            await recv_type(ws, "eye_data")
            task_status.started()
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    await ws.get_message()
            codes.append(info.value.reason.code)

    async with trio.open_nursery() as nursery:
        for _ in range(40):
            await nursery.start(client, trio.Event())
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(EXIT_CAP_S):
            assert await process.wait() == 0
    assert codes == [1001] * 40


# --- leaks visible in /metrics: trio tasks and the process's own figures ------------------------

TASKS_PER_CLIENT = 4
"""A connection handler, trio-websocket's reader task, the client's writer and heartbeat."""

CONNECTED = "trackerd_clients_connected"


def scrape(port: int) -> dict[str, float]:
    """Every unlabelled sample of /metrics, by name."""
    _, _, body = http_get(port, "/metrics")
    return metric_samples(body)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="process metrics need /proc")
@capped
async def test_metrics_count_tasks_and_descriptors_that_come_and_go_with_clients() -> None:
    """Each WebSocket client shows in /metrics as four more trio tasks and one more open file
    descriptor, and both return to where they were when it leaves, even by a TCP reset. (Every
    scrape also counts the handler of its own HTTP connection; that is in the baseline.)"""
    process, port = await start_server(
        "--host", "127.0.0.1", "--port", "0", "--source", str(DATA / "single_face.mp4")
    )
    try:
        before = await trio.to_thread.run_sync(scrape, port)
        # The process metrics are this process's, as the kernel sees it.
        assert 3 <= before["process_open_fds"] < before["process_max_fds"]
        rss = await trio.to_thread.run_sync(vm_rss_bytes, process.pid)
        assert 0.75 * rss < before["process_resident_memory_bytes"] < 1.25 * rss
        assert before["process_cpu_seconds_total"] > 0
        # capture, stats, listener, signals, trio's own, the scrape's handler...: a handful.
        assert 5 <= before["trackerd_tasks"] <= 20

        async with (
            open_websocket_url(f"ws://127.0.0.1:{port}/") as a,
            open_websocket_url(f"ws://127.0.0.1:{port}/") as b,
        ):
            raw = await RawClient.connect(port)
            for ws in (a, b):
                assert (await recv_json(ws))["type"] == "connection"
                await ws.send_message('{"type": "status"}')
                await recv_type(ws, "status")  # its reader runs: all its tasks are started
            assert (await raw.recv())["type"] == "connection"
            await raw.send_text('{"type": "status"}')
            assert (await raw.recv())["type"] == "status"
            with_three = await trio.to_thread.run_sync(scrape, port)
            assert with_three["trackerd_clients_connected"] == 3
            assert with_three["trackerd_tasks"] == before["trackerd_tasks"] + 3 * TASKS_PER_CLIENT
            assert with_three["process_open_fds"] == before["process_open_fds"] + 3

            # Tracking costs no task: the capture runs in the task that was already there.
            await a.send_message('{"type": "start_tracking"}')
            await recv_type(a, "eye_data")
            tracking = await trio.to_thread.run_sync(scrape, port)
            assert tracking["trackerd_tasks"] == with_three["trackerd_tasks"]
            assert tracking["trackerd_clients_tracking"] == 1

            raw.reset()  # vanishes: a TCP RST, no close frame
        # a and b closed normally. The server logs each departure, and the source's release a
        # moment after the last tracking client left; wait for those lines rather than race
        # them. A client's last task ends just after its line: scrape until it has (each
        # scrape is a round trip to the server, not a sleep), then everything is back.
        assert process.stderr is not None
        with trio.fail_after(10):
            await wait_for_log(
                process.stderr, {rb"disconnected: ": 3, rb"capture stopped; .* released": 1}
            )
            baseline = (before["trackerd_tasks"], before["process_open_fds"], 0.0)
            after = await trio.to_thread.run_sync(scrape, port)
            while (
                after["trackerd_tasks"],
                after["process_open_fds"],
                after[CONNECTED],
            ) != baseline:
                after = await trio.to_thread.run_sync(scrape, port)
        assert after["trackerd_connections_total"] == 3
    finally:
        process.send_signal(signal.SIGTERM)
        await process.wait()
