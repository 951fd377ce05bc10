"""The papercuts of issue 11, each over the real thing: JSON logs that stay JSON when OpenCV
fails, ``status`` naming the source before anyone tracks, deployment recipes that name a source,
a Docker build context without the venv, and a health probe that speaks TLS."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import trio
import trustme
from trio_websocket import WebSocketConnection, open_websocket_url

from tests.children import children
from tests.media import DATA
from tests.serverkit import (
    CAP_S,
    capped,
    recv_json,
    recv_type,
    run_trackerd,
    start,
    start_server,
    url,
    with_settings,
)
from tests.test_deploy import dockerfile
from trackerd import app, cli
from trackerd.settings import Settings
from trackerd.sources import open_source, planned_description
from trackerd.vision.tracker import Tracker

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


@pytest.mark.parametrize(
    ("args", "env", "code"),
    [
        (["--port", "99999", "--log-format", "json"], {}, 2),
        (["--source", "/nope.mp4"], {"TRACKERD_LOG_FORMAT": "json"}, 2),
        (["--log-format", "json", "--host", "192.0.2.1"], {}, 1),  # not this machine's address
    ],
    ids=["bad setting", "bad source from the environment", "cannot listen"],
)
def test_a_failure_to_start_is_a_json_line_when_json_is_asked_for(
    args: list[str], env: dict[str, str], code: int
) -> None:
    done = run_trackerd(*args, env=env)
    assert done.returncode == code, done.stderr
    lines = done.stderr.splitlines()
    assert lines and all(json.loads(line)["level"] for line in lines), lines
    assert json.loads(lines[-1])["message"].startswith("trackerd: "), lines


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


# --- The deployment files, read as Docker, Heroku and a person following the README would -------

ROOT = Path(__file__).resolve().parents[1]


def settings_for(argv: list[str], environ: dict[str, str]) -> Settings:
    """What ``trackerd ARGV`` would run with in ``environ``."""
    return Settings.load(vars(cli.parser().parse_args(argv)), environ)


# --- 3. every deployment recipe names a source that works without a camera ----------------------


# (tests/test_deploy.py checks that each recipe serves push sessions only.)


# --- 4. .dockerignore keeps the venv and git out, and everything the Dockerfile COPYs in ---------


def _pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go's filepath.Match plus ``**``) as a regular expression."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignored(path: str) -> bool:
    """Whether Docker leaves ``path`` (relative to the context) out: the last matching line
    decides (``!`` lines put back), and a matched directory takes everything in it."""
    parts = path.split("/")
    excluded = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pattern = _pattern(line.removeprefix("!").strip().strip("/"))
        if any(pattern.fullmatch("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            excluded = not line.startswith("!")
    return excluded


def test_dockerignore_keeps_out_venvs_git_and_caches() -> None:
    for path in (
        ".venv/lib/python3.11/site-packages/cv2/cv2.abi3.so",
        "venv/bin/python",
        ".git/HEAD",
        "trackerd/__pycache__/app.cpython-311.pyc",
        "kernels/__pycache__/filters.ema_step-12.py311.nbi",
        "trackerd.egg-info/PKG-INFO",
        "build/lib/trackerd/app.py",
        "dist/trackerd-1.0-py3-none-any.whl",
        "benchmarks/results/tracker.json",
        ".mypy_cache/3.11/cache.db",
        ".env",
    ):
        assert dockerignored(path), path


def test_dockerignore_keeps_everything_the_dockerfile_copies() -> None:
    sources = []
    for keyword, rest in dockerfile():
        # COPY --from=<stage> copies out of an earlier stage, not out of the build context.
        if keyword == "COPY" and "--from=" not in rest:
            words = [w for w in shlex.split(rest) if not w.startswith("--")]
            sources += [w.rstrip("/") for w in words[:-1]]
    assert {"pyproject.toml", "setup.py", "README.md", "trackerd", "kernels"} <= set(sources)
    tracked = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "--", *sources],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "trackerd/data/demo.mp4" in tracked
    assert [path for path in sources + tracked if dockerignored(path)] == []


# --- 5. the image's HEALTHCHECK passes with and without TLS --------------------------------------


def healthcheck(port: int, **environ: str) -> int:
    """Run the Dockerfile's HEALTHCHECK command against ``port``: its exit status."""
    ((rest,),) = [[rest] for keyword, rest in dockerfile() if keyword == "HEALTHCHECK"]
    argv = json.loads(rest.split("CMD", 1)[1])
    assert argv[0] == "python"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRACKERD_")}
    done = subprocess.run(
        [sys.executable, *argv[1:]],
        env={**clean, "PORT": str(port), **environ},
        capture_output=True,
        timeout=CAP_S,
    )
    return done.returncode


@pytest.fixture
def public_tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for a public name, as a real deployment has: not for 127.0.0.1."""
    issued = trustme.CA().issue_cert("trackerd.example.com")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    certfile.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(keyfile))
    return certfile, keyfile


@capped
async def test_the_healthcheck_probes_a_plain_server(nursery: trio.Nursery) -> None:
    running = await start(nursery)
    assert await trio.to_thread.run_sync(healthcheck, running.port) == 0


@capped
async def test_the_healthcheck_probes_a_tls_server_over_https(
    nursery: trio.Nursery, public_tls_files: tuple[Path, Path]
) -> None:
    certfile, keyfile = public_tls_files
    running = await start(nursery, with_settings(certfile=str(certfile), keyfile=str(keyfile)))
    tls = {"TRACKERD_CERTFILE": str(certfile), "TRACKERD_KEYFILE": str(keyfile)}
    assert await trio.to_thread.run_sync(partial(healthcheck, running.port, **tls)) == 0
    # Without the variable the probe speaks plain HTTP, which a TLS-only port refuses: it
    # fails, as the image's probe did for every TLS deployment before.
    assert await trio.to_thread.run_sync(healthcheck, running.port) != 0


# --- issue 22: what a new user hit -------------------------------------------------------------


async def test_the_log_names_the_page_url_at_start_up() -> None:
    with trio.fail_after(CAP_S):
        async with children() as started:
            server = await started.spawn(
                sys.executable, "-m", "trackerd", "--host", "127.0.0.1", "--port", "0",
                "--source", "none",
            )  # fmt: skip
            (page,) = await server.wait_for(rb"page: (\S+)")
            (listening,) = await server.wait_for(rb"listening on ws://127\.0\.0\.1:(\d+)")
            server.process.send_signal(signal.SIGTERM)
            assert await server.process.wait() == 0
    assert page.group(1).decode() == f"http://127.0.0.1:{int(listening.group(1))}/"


@pytest.mark.parametrize(
    ("host", "tls", "url", "every"),
    [
        ("localhost", False, "http://localhost:5000/", False),
        ("127.0.0.1", True, "https://127.0.0.1:5000/", False),
        ("::1", False, "http://[::1]:5000/", False),
        ("[::1]", False, "http://[::1]:5000/", False),
        ("0.0.0.0", False, "http://127.0.0.1:5000/", True),
        ("::", True, "https://[::1]:5000/", True),
    ],
)
def test_the_page_line_names_a_host_a_browser_can_open(
    host: str, tls: bool, url: str, every: bool
) -> None:
    line = cli.page_line(host, 5000, tls=tls)
    assert line.split()[1] == url
    assert ("from another machine" in line) == every, line


@pytest.mark.parametrize(
    ("args", "meant"),
    [
        (["--prot", "5000"], "--port"),
        (["--sorce=demo"], "--source"),
        (["--log-formt", "json"], "--log-format"),
        (["--max-inbound-byte-per-s", "4096"], "--max-inbound-bytes-per-s"),
        (["analyze", "--sequnce", "x.mp4"], "--sequence"),
        (["health", "--jsn"], "--json"),
    ],
)
def test_a_mistyped_flag_gets_did_you_mean(args: list[str], meant: str) -> None:
    done = run_trackerd(*args, timeout=30)
    assert done.returncode == 2, done.stderr  # argparse's status, as before
    assert f"did you mean {meant}?" in done.stderr, done.stderr


def test_a_flag_like_none_gets_no_suggestion() -> None:
    done = run_trackerd("--xyzzy", timeout=30)
    assert done.returncode == 2
    assert "unrecognized arguments: --xyzzy" in done.stderr
    assert "did you mean" not in done.stderr


def test_max_inbound_bytes_per_s_reads_whole_in_help_and_works() -> None:
    done = run_trackerd("--help", timeout=30)
    assert "--max-inbound-bytes-per-s MAX_INBOUND_BYTES_PER_S" in done.stdout, done.stdout
    assert "--max-inbound-bytes-per " not in done.stdout
    args = cli.parser().parse_args(["--max-inbound-bytes-per-s", "4096"])
    assert Settings.load(vars(args), {}).max_inbound_bytes_per_s == 4096


@pytest.mark.parametrize("command", ["analyze", "health"])
def test_ffmpeg_lines_do_not_leak_into_health_and_analyze(command: str, tmp_path: Path) -> None:
    broken = truncated_mp4(tmp_path)
    args = [str(broken)] if command == "analyze" else ["--source", str(broken)]
    done = run_trackerd(command, *args)
    assert done.returncode in (1, 2), done.stderr
    assert "cannot open video file" in done.stdout + done.stderr  # trackerd's own words
    assert "moov atom" not in done.stderr + done.stdout, done.stderr  # FFmpeg's


def test_analyze_checks_every_path_before_it_starts(tmp_path: Path) -> None:
    video = str(DATA / "single_face.mp4")
    done = run_trackerd("analyze", video, video, str(tmp_path / "third.mp4"))
    assert done.returncode == 2
    assert done.stdout == ""
    assert "third.mp4" in done.stderr
    assert "frames" not in done.stderr  # no summary: nothing was analysed


@capped
async def test_an_image_source_is_served_as_a_still(nursery: trio.Nursery) -> None:
    """It used to give one eye_data, then "image ... has ended" and drop the client."""
    settings = with_settings(source=str(DATA / "single_face.jpg"))
    running = await start(nursery, settings, open_source=app.serve_source)
    async with open_websocket_url(url(running)) as ws:
        await recv_json(ws)
        await ws.send_message('{"type": "start_tracking"}')
        seen = 0
        while seen < 5:  # 1 before: then "image ... has ended", and the client was dropped
            message = await recv_json(ws)
            assert message["type"] != "error", message
            seen += message["type"] == "eye_data"
