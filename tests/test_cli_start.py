"""What ``trackerd`` says when it cannot start, and only then: a source that cannot be right,
a port it cannot listen on; and what ``trackerd health --source`` reports it checked."""

from __future__ import annotations

import errno
import functools
import io
import logging
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.media import DATA
from tests.serverkit import LOCAL, Synthetic, run_trackerd
from trackerd import app, cli
from trackerd.app import ListenError
from trackerd.ops import health
from trackerd.sources import SourceError, check_source


def test_a_missing_source_file_stops_the_server_before_it_listens() -> None:
    done = run_trackerd("--port", "0", "--source", "/nope.mp4")
    assert done.returncode == 2
    assert "invalid setting: source: no such file or folder: /nope.mp4" in done.stderr
    assert "listening" not in done.stderr


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("{empty}", "contains no images"),
        ("rtsp://", "stream URL rtsp:// names no host"),
        ("http://camera.local:http/feed", "Port could not be cast"),
        ("rtsp://camera.local/live stream", "contains spaces"),
    ],
)
def test_a_source_that_cannot_be_right_is_exit_status_2(
    source: str, says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = source.format(empty=tmp_path)
    assert cli.main(["--port", "0", "--source", source]) == 2
    assert says in capsys.readouterr().err


def test_the_environment_source_is_checked_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRACKERD_SOURCE", "/nope/clip.mp4")
    assert cli.main(["--port", "0"]) == 2
    assert "no such file or folder: /nope/clip.mp4" in capsys.readouterr().err


@pytest.mark.parametrize(
    "source",
    [
        "demo",
        "auto",  # cameras are not opened at start-up: that would turn their light on
        "3",
        str(DATA / "single_face.mp4"),
        str(DATA),  # a folder with images in it
        str(DATA / "single_face.jpg"),
        "rtsp://user:pass@camera.local:8554/live",
    ],
)
def test_sources_that_may_be_right_pass_the_check(source: str) -> None:
    check_source(source)


def test_the_url_in_a_refusal_has_no_password() -> None:
    with pytest.raises(SourceError) as info:
        check_source("rtsp://user:s3cret@camera.local:port/live")
    assert "s3cret" not in str(info.value)


async def test_a_taken_port_is_a_listen_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenError, match=f"cannot listen on 127.0.0.1:{port}"):
            await app.run(replace(LOCAL, port=port), make_tracker=Synthetic)


@pytest.fixture
def root_logging() -> Iterator[None]:
    """``cli.main`` routes the root logger to stderr; give pytest its handlers back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


def test_an_oserror_after_start_up_is_not_reported_as_listening(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], root_logging: None
) -> None:
    real_run = app.run

    async def listens_then_fails(settings: Any, **kwargs: Any) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(real_run, settings, **kwargs))
            # Up and listening; now a fault that has nothing to do with listening.
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(app, "run", listens_then_fails)
    with pytest.raises(ExceptionGroup) as info:
        cli.main(["--host", "127.0.0.1", "--port", "0", "--source", "demo"])
    assert info.group_contains(OSError, match="No space left", depth=None)
    assert not info.group_contains(ListenError, depth=None)
    err = capsys.readouterr().err
    assert "listening on ws://127.0.0.1:" in err
    assert "cannot listen" not in err


def test_health_reports_the_source_it_checked() -> None:
    out = io.StringIO()
    assert health.main(["--source", "demo"], stdout=out) == 0
    lines = out.getvalue().splitlines()
    settings = next(line for line in lines if line.split()[1] == "settings")
    assert "source demo;" in settings and "source auto" not in settings
    assert any(line.split()[1] == "source" and "demo clip" in line for line in lines)


def test_health_fails_the_settings_check_for_a_missing_source() -> None:
    out = io.StringIO()
    assert health.main(["--source", "/nope.mp4"], stdout=out) == 1
    settings = next(line for line in out.getvalue().splitlines() if " settings " in line)
    assert settings.startswith("FAIL") and "no such file or folder: /nope.mp4" in settings
