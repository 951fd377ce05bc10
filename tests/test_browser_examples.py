"""docs/browser.md's Python client example (examples/push_video.py), run as a user runs it
(another process) against the real server with the real tracker: pushing a real face video,
and reading the server's own stream. And the client module's Node unit tests, so that the
README's one test command runs them too."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.media import DATA
from tests.serverkit import start, url, with_settings
from trackerd.app import serve_source
from trackerd.vision.tracker import Tracker

pytestmark = pytest.mark.usefixtures("no_unexpected_errors")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "push_video.py"
TOKEN = "example-t0ken"
TEST_CAP_S = 90.0
"""The cap on a whole test: the example's own run is capped at 60 s, the server's start too."""


async def run_example(*args: str) -> list[dict[str, Any]]:
    env = {**os.environ, "TRACKERD_TOKEN": TOKEN}
    with trio.fail_after(60):
        done = await trio.run_process(
            [sys.executable, str(EXAMPLE), *args], capture_stdout=True, capture_stderr=True, env=env
        )
    assert done.stderr == b"", done.stderr.decode()
    return [json.loads(line) for line in done.stdout.decode().splitlines()]


async def test_the_example_pushes_a_video_file_and_prints_its_answers(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TEST_CAP_S):
        settings = with_settings(token=TOKEN)
        running = await start(nursery, settings, open_source=serve_source, make_tracker=Tracker)
        answers = await run_example(url(running), str(DATA / "single_face.mp4"), "--count", "30")
        assert [a["frame"] for a in answers] == list(range(1, 31)), "each frame answered, in order"
        assert all(a["type"] == "eye_data" for a in answers)
        assert sum(a["face_detected"] for a in answers) >= 29
        assert all(a["face"] is not None for a in answers if a["face_detected"])


async def test_the_example_reads_the_servers_stream(nursery: trio.Nursery) -> None:
    with trio.fail_after(TEST_CAP_S):
        settings = with_settings(token=TOKEN, source=str(DATA / "single_face.mp4"))
        running = await start(nursery, settings, open_source=serve_source, make_tracker=Tracker)
        answers = await run_example(url(running), "--server", "--count", "20")
        assert len(answers) == 20 and all(a["type"] == "eye_data" for a in answers)
        assert sum(a["face_detected"] for a in answers) >= 19


def test_the_client_modules_unit_tests_pass_under_node() -> None:
    node = shutil.which("node")
    if node is None:
        message = "node is not installed: apt-get install -y nodejs (.ci/run does)"
        if os.environ.get("CI"):  # CI installs it: as for nginx in tests/test_nginx.py
            pytest.fail(message)
        pytest.skip(message)
    done = subprocess.run(
        [node, "--test", "tests/js/trackerd.test.mjs"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "# fail 0" in done.stdout
