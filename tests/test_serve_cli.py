"""``trackerd`` as an operator runs it: a real process, its flags, its environment, SIGTERM."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.media import DATA
from tests.serverkit import EXIT_CAP_S, capped, recv_json, recv_type, run_trackerd, start_server
from trackerd.vision.cascades import (
    CASCADE_DIR_ENV,
    EYE_CASCADE,
    EYEGLASSES_CASCADE,
    FACE_CASCADE,
    PROFILE_CASCADE,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


@capped
async def test_sigterm_closes_every_client_with_1001_and_exits_0_within_2_s() -> None:
    process, port = await start_server(
        "--host", "127.0.0.1", "--port", "0", "--source", str(DATA / "single_face.mp4")
    )
    codes = []
    async with (
        open_websocket_url(f"ws://127.0.0.1:{port}/") as a,
        open_websocket_url(f"ws://127.0.0.1:{port}/") as b,
    ):
        for ws in (a, b):
            await recv_json(ws)
            await ws.send_message('{"type": "start_tracking"}')
            await recv_type(ws, "eye_data")
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(EXIT_CAP_S):
            for ws in (a, b):
                with pytest.raises(ConnectionClosed) as info:
                    while True:
                        await ws.get_message()
                codes.append(info.value.reason.code)
            assert await process.wait() == 0
    assert codes == [1001, 1001]


@capped
async def test_port_and_host_from_the_environment_as_in_the_original() -> None:
    process, port = await start_server("--source", "demo", env={"HOST": "127.0.0.1", "PORT": "0"})
    async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
        assert (await recv_json(ws))["type"] == "connection"
    process.send_signal(signal.SIGINT)
    with trio.fail_after(EXIT_CAP_S):
        assert await process.wait() == 0


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        ([], {"PORT": "http"}, "PORT='http' is not an integer"),
        (["--port", "70000"], {}, "port must be 0-65535"),
        (["--fps", "-1"], {}, "fps must be >= 0"),
        ([], {"TRACKERD_HEARTBEAT_TIMEOUT_S": "0"}, "heartbeat_timeout_s must be > 0"),
    ],
)
def test_invalid_settings_are_refused_at_start_up(
    args: list[str], env: dict[str, str], says: str
) -> None:
    done = run_trackerd(*args, env=env)
    assert done.returncode == 2
    assert says in done.stderr


def test_help_explains_every_option() -> None:
    done = run_trackerd("--help")
    assert done.returncode == 0
    for option in (
        "--host",
        "--port",
        "--source",
        "--fps",
        "--heartbeat-interval",
        "--heartbeat-timeout",
        "--max-message-bytes",
        "--log-level",
        "analyze",
        "HOST",
    ):
        assert option in done.stdout


def test_a_taken_port_is_a_clear_error() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_trackerd("--host", "127.0.0.1", "--port", str(port))
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr


@pytest.mark.parametrize(
    ("content", "says"),
    [(None, "Haar cascade file not found"), ("not a cascade", "does not load")],
)
def test_a_missing_or_broken_cascade_is_a_clear_error_at_start_up(
    tmp_path: Path, content: str | None, says: str
) -> None:
    """The cascades are loaded on a thread of their own beside the start's imports
    (``warm_up_soon``): what fails there still stops the start, with the same message."""
    if content is not None:
        for name in (FACE_CASCADE, EYE_CASCADE, PROFILE_CASCADE, EYEGLASSES_CASCADE):
            (tmp_path / name).write_text(content)
    done = run_trackerd(
        "--host", "127.0.0.1", "--port", "0", "--source", "demo",
        env={CASCADE_DIR_ENV: str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 1
    assert says in done.stderr and str(tmp_path) in done.stderr
    assert "Traceback" not in done.stderr
