"""``--source none``, the cloud recipes' default, over a real ``python -m trackerd --source none``
on 127.0.0.1: stream mode is refused with a coded ``error`` that shows the message to send (and
that message works), push sessions run on the real tracker with a real face, the probes say
healthy (no camera is not a fault), and the capture never opens anything."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from tests.media import DATA
from tests.serverkit import (
    CAP_S,
    Synthetic,
    metric_samples,
    recv_json,
    recv_type,
    run_trackerd,
    terminate,
)
from tests.test_hostile_push import get
from trackerd.capture import PUSH_ONLY, Capture
from trackerd.hub import Hub, Published
from trackerd.net import protocol
from trackerd.ops.workers import CameraElsewhere
from trackerd.settings import Settings
from trackerd.sources import Source, demo_clip_path

FACE_JPEG = (DATA / "single_face.jpg").read_bytes()
"""A real photo of one face (tests/data/SOURCE.txt), as a browser would push it."""
LOG_CAP_BYTES = 1 << 20
"""What :class:`Log` keeps of a server's log: far more than these tests make it write."""
STREAM = json.dumps({"type": "start_tracking"})


class Log:
    """A server's log as it is written (read without pause, so that the server never blocks
    on it); kept up to :data:`LOG_CAP_BYTES`."""

    def __init__(self) -> None:
        self.text = b""
        self._grew = trio.Event()
        self.ended = False

    async def read(self, stderr: trio.abc.ReceiveStream) -> None:
        while chunk := await stderr.receive_some(65536):
            self.text = (self.text + chunk)[:LOG_CAP_BYTES]
            self._grew.set()
            self._grew = trio.Event()
        self.ended = True
        self._grew.set()

    async def wait_for(self, pattern: bytes) -> re.Match[bytes]:
        """The first match of ``pattern``, once it is in the log (bound it with a cap)."""
        while (found := re.search(pattern, self.text)) is None:
            assert not self.ended, f"the server exited: {self.text[-2000:].decode('replace')}"
            await self._grew.wait()
        return found


@contextlib.asynccontextmanager
async def push_only(data_dir: Path) -> AsyncIterator[tuple[trio.Process, int, Log]]:
    """``python -m trackerd --source none`` on 127.0.0.1 and a free port, once it listens:
    the process, its port and its log; SIGTERM at the end."""
    command = [sys.executable, "-m", "trackerd", "--host", "127.0.0.1", "--port", "0"]
    process = await trio.lowlevel.open_process(
        [*command, "--source", "none", "--data-dir", str(data_dir)], stderr=subprocess.PIPE
    )
    assert process.stderr is not None
    log = Log()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(log.read, process.stderr)
            listening = await log.wait_for(rb"listening on ws://[^:]+:(\d+)")
            yield process, int(listening.group(1)), log
            nursery.cancel_scope.cancel()
    finally:
        await terminate(process, 5)


def open_files(pid: int) -> set[str]:
    """What a process's descriptors point at (a descriptor closed meanwhile is left out)."""
    targets = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):  # closed between the listing and here
            targets.add(os.readlink(fd))
    return targets


async def status(ws: WebSocketConnection) -> dict[str, Any]:
    await ws.send_message('{"type": "status"}')
    return await recv_type(ws, "status")


async def test_stream_mode_is_refused_with_the_message_to_send_and_that_message_works(
    tmp_path: Path,
) -> None:
    with trio.fail_after(CAP_S):
        async with push_only(tmp_path) as (_, port, _log):
            await stream_refused_then_pushed(port)


async def stream_refused_then_pushed(port: int) -> None:
    """A client that forgot ``"source": "client"``, then does as the error says."""
    async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
        assert (await recv_json(ws))["type"] == "connection"
        await ws.send_message(STREAM)
        refusal = await recv_json(ws)
        assert refusal["type"] == "error" and refusal["code"] == "push_only", refusal
        message = refusal["message"]
        assert "push sessions only" in message and "--source none" in message
        # The exact message to send is in it: sent as it stands, it starts a session.
        shown = re.search(r"\{[^{}]*\}", message)
        assert shown is not None, message
        assert json.loads(shown.group()) == {"type": "start_tracking", "source": "client"}
        await ws.send_message(shown.group())
        started = await recv_json(ws)
        assert started["type"] == "tracking_started", started
        await ws.send_message(FACE_JPEG)
        answer = await recv_json(ws)
        assert answer["type"] == "eye_data", answer
        assert answer["session"] == started["session"] and answer["frame"] == 1
        assert answer["face_detected"] is True and answer["eye_count"] >= 1, answer


async def test_the_probes_are_healthy_and_the_capture_never_opens_anything(
    tmp_path: Path,
) -> None:
    """No camera is not a fault: /healthz and /readyz answer 200 before and after clients ask
    for the server's camera. Nothing was opened or tried: the capture never ran, counted no
    error and no frame (an attempt to open anything would count one or the other), logged no
    start, and the process holds neither a camera nor the demo clip."""
    with trio.fail_after(CAP_S):
        async with push_only(tmp_path) as (process, port, log):
            await log.wait_for(rb"push-only \(--source none\)")
            for path, expected in (("/healthz", "ok"), ("/readyz", "ready")):
                code, body = await get(port, path)
                assert (code, json.loads(body)["status"]) == (200, expected), (path, body)
            async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
                assert (await recv_json(ws))["type"] == "connection"
                # Without a source, naming the server's, and again: each is refused.
                server = json.dumps({"type": "start_tracking", "source": "server"})
                for ask in (STREAM, server, STREAM):
                    await ws.send_message(ask)
                    assert (await recv_json(ws))["code"] == "push_only", ask
                now = await status(ws)
                assert now["is_tracking"] is False and now["capture_running"] is False
                assert now["source"] == "no source (push sessions only)"
            code, body = await get(port, "/healthz")
            health = json.loads(body)
            assert code == 200 and health["status"] == "ok" and not health["capture_running"]
            code, body = await get(port, "/metrics")
            samples = metric_samples(body.decode())
            assert code == 200
            assert samples["trackerd_capture_errors_total"] == 0
            assert samples["trackerd_frames_processed_total"] == 0
            assert samples["trackerd_capture_running"] == 0
            opened = open_files(process.pid)
            assert str(demo_clip_path()) not in opened
            assert not any(target.startswith("/dev/video") for target in opened)
    # No start, and no warning (a source that failed to open is one: "trackerd.hub: capture: ...").
    assert b"capture started" not in log.text, log.text
    assert re.search(rb" (WARNING|ERROR|CRITICAL) ", log.text) is None, log.text


def test_trackerd_health_passes_with_source_none() -> None:
    """What the recipes run, checked as an operator would before deploying."""
    done = run_trackerd("health", "--source", "none", env={"TRACKERD_SOURCE": "none"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "healthy" in done.stdout and "NOT healthy" not in done.stdout
    assert "source none" in done.stdout, done.stdout


class Told:
    """A tracking client without a socket: what the hub told it."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, str | None]] = []

    def offer(self, published: Published) -> None:
        raise AssertionError("a push-only hub published an observation")

    def notify_error(self, message: str, code: str | None = None) -> None:
        self.errors.append((message, code))


async def test_every_worker_of_a_push_only_server_answers_push_only() -> None:
    """``--workers N --source none``: worker 0's hub and the others' (closed first with
    ``camera_elsewhere``) alike answer ``push_only``, since there is no camera anywhere; and
    the capture task ends at once without asking for a source."""
    asked: list[str] = []

    def open_source(spec: str) -> Source:
        asked.append(spec)
        raise AssertionError(f"the capture asked to open {spec!r}")

    settings = Settings(host="127.0.0.1", port=0, source="none", workers=2)
    with trio.fail_after(CAP_S):
        for hub in (Hub(protocol.eye_data), CameraElsewhere(1, 2)):
            await Capture(settings, hub, open_source, Synthetic()).run()  # returns: no work
            client = Told()
            assert hub.subscribe(client) is False and not hub.wanted
            assert client.errors == [(PUSH_ONLY.message, "push_only")]
    assert asked == []
