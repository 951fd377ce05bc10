"""The papercuts of issue 11, each over the real thing: JSON logs that stay JSON when OpenCV
fails, ``status`` naming the source before anyone tracks, deployment recipes that name a source,
a Docker build context without the venv, and a health probe that speaks TLS."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from tests.media import DATA
from tests.serverkit import capped, recv_json, recv_type, start, url, with_settings
from tests.test_serve_cli import start_server
from trackerd.capture import planned_description
from trackerd.sources import open_source
from trackerd.tracker import Tracker

pytestmark = pytest.mark.usefixtures("no_unexpected_errors")

# --- 1. --log-format json: every line on stderr is JSON, OpenCV's and FFmpeg's included -------


def truncated_mp4(folder: Path) -> Path:
    """A real clip cut before its index: OpenCV's FFmpeg backend complains on stderr."""
    path = folder / "truncated.mp4"
    path.write_bytes((DATA / "single_face.mp4").read_bytes()[:2000])
    return path


@pytest.mark.parametrize("kind", ["missing camera", "truncated file"])
@capped
async def test_json_logs_stay_json_when_opencv_cannot_open_the_source(
    kind: str, tmp_path: Path
) -> None:
    if kind == "missing camera":
        if Path("/dev/video7").exists():
            pytest.skip("this machine has a camera 7")
        spec = "7"
    else:
        spec = str(truncated_mp4(tmp_path))
    process, port = await start_server(
        "--host", "127.0.0.1", "--port", "0", "--source", spec, "--log-format", "json"
    )
    assert process.stderr is not None
    async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
        await recv_json(ws)
        await ws.send_message('{"type": "start_tracking"}')
        error = await recv_type(ws, "error")
    assert "cannot open" in error["message"]
    process.send_signal(signal.SIGTERM)
    seen = b""
    while chunk := await process.stderr.receive_some(65536):
        seen += chunk
    assert await process.wait() == 0
    lines = seen.decode().splitlines()
    not_json = []
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            not_json.append(line)
    assert not not_json, f"lines on stderr that are not JSON: {not_json}"
    # Our own record of the failure is there instead of OpenCV's.
    messages = [json.loads(line)["message"] for line in lines]
    assert any(m.startswith("capture: cannot open") for m in messages), messages


# --- 2. status names the source the server will open, before anyone tracks ----------------------


async def status(ws: WebSocketConnection) -> dict[str, object]:
    await ws.send_message('{"type": "status"}')
    return await recv_type(ws, "status")


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        ("auto", "camera 0, 1 or 2"),
        ("7", "camera 7"),
        ("rtsp://user:secret@127.0.0.1:1/live", "stream rtsp://***@127.0.0.1:1/live"),
        (str(DATA / "single_face.mp4"), f"video file {DATA / 'single_face.mp4'}"),
        (str(DATA / "astronaut.png"), f"image {DATA / 'astronaut.png'}"),
        (str(DATA), f"image folder {DATA}"),
    ],
)
@capped
async def test_status_names_the_configured_source_before_anyone_tracks(
    nursery: trio.Nursery, spec: str, said: str
) -> None:
    running = await start(nursery, with_settings(source=spec), open_source=open_source)
    async with open_websocket_url(url(running)) as ws:
        await recv_json(ws)
        reply = await status(ws)
    assert reply["capture_running"] is False
    assert reply["source"] == said  # credentials in a URL never reach a client


@pytest.mark.parametrize(
    "spec", ["demo", str(DATA / "single_face.mp4"), str(DATA / "astronaut.png"), str(DATA)]
)
def test_the_planned_description_is_the_one_the_opened_source_gives(spec: str) -> None:
    with open_source(spec) as source:
        assert planned_description(spec) == source.description


@capped
async def test_status_names_the_demo_clip_before_during_and_after_tracking(
    nursery: trio.Nursery,
) -> None:
    running = await start(
        nursery, with_settings(source="demo"), open_source=open_source, make_tracker=Tracker
    )
    async with open_websocket_url(url(running)) as ws:
        await recv_json(ws)
        before = await status(ws)
        await ws.send_message('{"type": "start_tracking"}')
        await recv_type(ws, "eye_data")
        during = await status(ws)
        await ws.send_message('{"type": "stop_tracking"}')
        after = await status(ws)
    assert (before["capture_running"], before["source"]) == (False, "demo clip")
    assert (during["capture_running"], during["source"]) == (True, "demo clip")
    assert after["source"] == "demo clip"
