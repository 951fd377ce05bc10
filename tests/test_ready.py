"""Readiness and draining: ``/readyz``, the order of a drain on SIGTERM, and the load figure.

A drain must go: ``/readyz`` 503 and new upgrades refused with 503 at once (a load balancer
stops sending clients, and one that retries sends them elsewhere), the clients already in go on
being served through ``drain_delay_s``, then each gets its 1001.
"""

from __future__ import annotations

import json
import signal
import time

import cv2
import numpy as np
import pytest
import trio
from trio_websocket import open_websocket_url

from tests.media import DATA
from tests.serverkit import (
    EXIT_CAP_S,
    RawClient,
    capped,
    closing_code,
    metric_samples,
    recv_json,
    recv_type,
    start,
    start_server,
    upgrade_request,
    url,
    wait_for_log,
    with_settings,
)

pytestmark = pytest.mark.usefixtures("no_unexpected_errors")


async def get(port: int, path: str) -> tuple[int, str]:
    """One plain HTTP GET over a trio socket: status and body."""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        await stream.send_all(request.encode())
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


async def upgrade_status(port: int) -> bytes:
    """The status line and headers a new WebSocket upgrade gets."""
    client = await RawClient.connect(port, handshake=False)
    await client.send(upgrade_request(port))
    head = await client.read_until(b"\r\n\r\n")
    await client.aclose()
    return head


@capped
async def test_readyz_is_503_from_the_stop_while_clients_are_served_until_the_drain_delay(
    nursery: trio.Nursery,
) -> None:
    stop = trio.Event()
    running = await start(nursery, with_settings(drain_delay_s=0.5), stop=stop)
    assert await get(running.port, "/readyz") == (200, '{"status": "ready"}\n')
    async with open_websocket_url(url(running)) as ws:
        await recv_json(ws)
        await ws.send_message('{"type": "start_tracking"}')
        await recv_type(ws, "eye_data")
        stop.set()
        stopped = trio.current_time()
        assert await get(running.port, "/readyz") == (503, '{"status": "draining"}\n')
        assert (await get(running.port, "/healthz"))[0] == 200  # liveness is not readiness
        refused = await upgrade_status(running.port)
        assert refused.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in refused
        # The client already in is still served while the balancer catches up...
        await recv_type(ws, "eye_data")
        assert ws.closed is None
        # ...and gets its 1001 once the delay is over.
        assert await closing_code(ws) == 1001
        assert trio.current_time() - stopped >= 0.5


@capped
async def test_sigterm_to_a_process_drains_in_order_and_a_second_one_changes_nothing() -> None:
    process, port = await start_server(
        "--host", "127.0.0.1", "--port", "0", "--source", str(DATA / "single_face.mp4"),
        "--drain-delay", "0.3",
    )  # fmt: skip
    async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
        await recv_json(ws)
        await ws.send_message('{"type": "start_tracking"}')
        await recv_type(ws, "eye_data")
        assert (await get(port, "/readyz"))[0] == 200
        process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        assert process.stderr is not None
        with trio.fail_after(2.0):  # the signal reached the server's loop
            await wait_for_log(process.stderr, {b"draining:": 1})
        assert await get(port, "/readyz") == (503, '{"status": "draining"}\n')
        process.send_signal(signal.SIGTERM)  # the impatient operator's second one
        assert ws.closed is None
        with trio.fail_after(EXIT_CAP_S):
            assert await closing_code(ws) == 1001
            assert await process.wait() == 0
    assert time.monotonic() - sent < EXIT_CAP_S


@capped
async def test_the_load_figure_counts_the_seconds_analysis_threads_are_busy(
    nursery: trio.Nursery,
) -> None:
    """Push sessions on the synthetic analyzer (timing, not detection, is under test here),
    with real JPEG frames to decode."""
    running = await start(nursery, with_settings(analysis_threads=2, max_fps=1000.0))
    noise = np.random.default_rng(7).integers(0, 255, (480, 640), np.uint8)
    frame = cv2.imencode(".jpg", noise)[1].tobytes()
    started = trio.current_time()
    async with open_websocket_url(url(running)) as ws:
        await recv_json(ws)
        await ws.send_message(json.dumps({"type": "start_tracking", "source": "client"}))
        await recv_type(ws, "tracking_started")
        for _ in range(20):
            await ws.send_message(frame)
            await recv_type(ws, "eye_data")
        _, body = await get(running.port, "/metrics")
    elapsed = trio.current_time() - started
    samples = metric_samples(body)
    assert samples["trackerd_analysis_threads"] == 2
    busy = samples["trackerd_analysis_busy_seconds_total"]
    # Twenty 640x480 decodes take more than nothing, and one session can keep at most one
    # thread busy at a time.
    assert 0 < busy <= elapsed
