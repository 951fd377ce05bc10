"""The papercuts of issue 11, each over the real thing: JSON logs that stay JSON when OpenCV
fails, ``status`` naming the source before anyone tracks, deployment recipes that name a source,
a Docker build context without the venv, and a health probe that speaks TLS."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from trio_websocket import open_websocket_url

from tests.media import DATA
from tests.serverkit import capped, recv_json, recv_type
from tests.test_serve_cli import start_server

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
