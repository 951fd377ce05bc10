"""The page at ``/`` in real headless Chromium, as a person uses it, with a real face as the camera.

Chromium is Debian's ``chromium`` (``.ci/run`` installs it when it is missing), driven by
Playwright for Python pointed at that executable: Playwright's own browser download is never
used. The fake camera plays a Y4M file written here from the real clips in ``tests/data/``
(``--use-file-for-fake-video-capture``; Chromium loops it at the file's 30 fps). The server is
the real one with the real tracker, on 127.0.0.1 port 0.

Each scenario runs the browser in a worker thread (Playwright's sync API) while the server runs
on the test's Trio loop. Conditions are awaited in the page (:func:`wait_for`), never a sleep.

Set ``TRACKERD_SCREENSHOT=docs/page.png`` to write the README's screenshot from the run
(docs/page.png is that, quantised to 160 colours with Pillow to keep it small).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import importlib
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn, TypeVar

import cv2
import pytest
import trio
from trio_websocket import open_websocket_url

from tests.media import DATA, frames
from tests.serverkit import recv_json, start, with_settings
from trackerd.app import Running, serve_source
from trackerd.vision.tracker import Tracker

pytestmark = pytest.mark.usefixtures("no_unexpected_errors")


T = TypeVar("T")
SIZE = (640, 360)
FPS = 30
SCENARIO_S = 60.0
"""The cap on one scenario: a browser launch, a page, and up to ~15 s of video."""
WAIT_MS = 30_000
"""The cap on one condition awaited in the page."""
TEST_CAP_S = SCENARIO_S + 30.0
"""The cap on a whole test: its scenario, and starting the server and writing the camera file."""
TOKEN = "browser-t0ken"


def missing(message: str) -> NoReturn:
    """CI installs the browser and Playwright (``.ci/run``), so there one missing is a failure,
    as nginx is for tests/test_nginx.py; elsewhere these tests skip, saying what to install."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def browser_tools() -> tuple[ModuleType, str]:
    """Playwright's sync API and the path of Debian's chromium."""
    try:
        playwright_api = importlib.import_module("playwright.sync_api")
    except ImportError:
        missing("Playwright is not installed: pip install '.[test]'")
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        missing("Debian's chromium is not installed: apt-get install -y chromium (.ci/run does)")
    return playwright_api, path


@pytest.fixture(autouse=True)
def browser_installed() -> None:
    """Every test here needs the browser: checked before the test's Trio run, where a skip would
    reach pytest inside an exception group and lose its reason."""
    browser_tools()


def write_y4m(path: Path, clips: Iterable[Path]) -> Path:
    """The clips one after the other as raw I420 frames at 640x360, 30 fps: what Chromium's
    file-backed fake camera reads (YUV4MPEG2; C420jpeg is I420's layout)."""
    width, height = SIZE
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{FPS}:1 Ip A1:1 C420jpeg\n".encode())
        for clip in clips:
            for frame in frames(clip):
                image = cv2.resize(frame.image, SIZE, interpolation=cv2.INTER_AREA)
                out.write(b"FRAME\n" + cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420).tobytes())
    return path


def in_browser(
    scenario: Callable[[Any], T],
    tools: tuple[ModuleType, str],
    *,
    camera: Path | None = None,
    grant_camera: bool = True,
) -> T:
    """Launch Chromium (with ``camera`` as its fake camera), run ``scenario(page)``, close."""
    args = ["--use-fake-device-for-media-stream"]
    if grant_camera:
        args.append("--use-fake-ui-for-media-stream")  # answers the permission prompt: allow
    if camera is not None:
        args.append(f"--use-file-for-fake-video-capture={camera}")
    playwright_api, chromium = tools
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=args)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 540})
            page.set_default_timeout(WAIT_MS)
            problems: list[str] = []
            page.on("pageerror", lambda error: problems.append(str(error)))
            result = scenario(page)
            assert not problems, f"uncaught errors in the page: {problems}"
            return result
        finally:
            browser.close()


async def run_in_browser(scenario: Callable[[Any], T], **options: Any) -> T:
    tools = browser_tools()  # here, not in the browser's thread: a failure names the test
    with trio.fail_after(SCENARIO_S):
        return await trio.to_thread.run_sync(lambda: in_browser(scenario, tools, **options))


async def real_server(
    nursery: trio.Nursery, stop: trio.Event | None = None, **changes: Any
) -> Running:
    """The real server with the real tracker; its own capture plays the demo clip."""
    settings = with_settings(**{"source": "demo", **changes})
    return await start(nursery, settings, open_source=serve_source, make_tracker=Tracker, stop=stop)


def wait_for(page: Any, condition: str) -> None:
    """Wait until the JavaScript expression ``condition`` is true in the page, checked at each
    animation frame. (Playwright's wait_for_function compiles it with eval, which the page's
    Content-Security-Policy forbids, as it should; an evaluate is exempt, being the debugger's.)"""
    page.evaluate(
        "new Promise((resolve, reject) => {"
        f" const fail = () => reject(new Error('timed out: ' + {condition!r}));"
        f" const timer = setTimeout(fail, {WAIT_MS});"
        f" const check = () => ({condition}) ? (clearTimeout(timer), resolve()) :"
        " requestAnimationFrame(check); check(); })"
    )


def pushed(page: Any) -> list[dict[str, Any]]:
    """The eye_data the page received for its own frames (a push session's)."""
    received: list[dict[str, Any]] = page.evaluate("window.trackerd.received")
    return [m for m in received if m["mode"] == "client" and m["session"]]


def rate(messages: list[dict[str, Any]]) -> float:
    """Messages a second, as the page received them (its own clock, in ms)."""
    span_s = (messages[-1]["at"] - messages[0]["at"]) / 1000
    return (len(messages) - 1) / span_s


def problem_text(page: Any, needle: str) -> str:
    """Wait until the page's error line shows ``needle``; its text."""
    wait_for(page, f"!problem.hidden && problem.textContent.includes({needle!r})")
    text: str = page.inner_text("#problem")
    return text


def save_screenshot(page: Any, tmp_path: Path) -> Path:
    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot))
    if target := os.environ.get("TRACKERD_SCREENSHOT"):
        shutil.copyfile(shot, target)
    return shot


# --- push mode: this browser's camera ------------------------------------------------------------


async def test_my_camera_sends_frames_and_gets_a_face_back(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    with trio.fail_after(TEST_CAP_S):
        running = await real_server(nursery)
        camera = write_y4m(tmp_path / "single_face.y4m", [DATA / "single_face.mp4"])

        def scenario(page: Any) -> list[dict[str, Any]]:
            page.goto(f"http://127.0.0.1:{running.port}/?autostart=1")
            wait_for(
                page, "trackerd.received.filter(m => m.mode === 'client' && m.session).length >= 60"
            )
            assert page.inner_text("#mode") == "my camera"
            assert page.inner_text("#state") == "Looking at the screen"
            return pushed(page)

        received = await run_in_browser(scenario, camera=camera)
        settled = received[5:]  # the first answers include the camera's start-up
        faces = sum(m["face_detected"] for m in settled) / len(settled)
        print(f"\nmy camera: {rate(settled):.1f} eye_data/s, face in {faces:.1%} of frames")
        assert rate(settled) >= 10.0
        assert faces >= 0.95
        assert all(isinstance(m["face"], list) for m in settled if m["face_detected"])
        frames_seen = [m["frame"] for m in received]
        assert frames_seen == sorted(frames_seen), "answers in the order the frames were sent"


async def test_my_camera_shows_the_person_leave_and_come_back(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    with trio.fail_after(TEST_CAP_S):
        running = await real_server(nursery)
        clips = [DATA / "face_noface.mov", DATA / "noface_face.mov"]
        camera = write_y4m(tmp_path / "leave_and_return.y4m", clips)
        state = "document.getElementById('state').textContent"

        def scenario(page: Any) -> tuple[list[dict[str, Any]], int]:
            page.goto(f"http://127.0.0.1:{running.port}/?autostart=1")
            wait_for(page, f"{state} === 'Looking at the screen'")
            wait_for(page, f"{state} === 'Looking away'")
            wait_for(page, f"{state} === 'Looking at the screen'")
            back_at = page.evaluate("trackerd.received.length")
            wait_for(page, f"trackerd.received.length >= {back_at + 20}")  # a while back in view
            red = page.evaluate(
                "(() => { const c = document.getElementById('timeline');"
                " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                " let n = 0;"
                " for (let i = 0; i < d.length; i += 4) if (d[i] > 150 && d[i + 1] < 80) n++;"
                " return n; })()"
            )
            save_screenshot(page, tmp_path)
            return pushed(page), red

        received, red_pixels = await run_in_browser(scenario, camera=camera)
        away = [i for i, m in enumerate(received) if m["looking_away"]]
        assert away, "looking_away never turned true"
        first_away = away[0]
        assert any(m["face_detected"] for m in received[:first_away]), "a face before"
        assert not any(m["face_detected"] for m in received[first_away - 3 : first_away + 1]), (
            "away once the person has left"
        )
        back = next(i for i, m in enumerate(received) if i > first_away and not m["looking_away"])
        assert received[back]["face_detected"], "present again once a face is back"
        assert red_pixels > 0, "the timeline shows the time away"


# --- the server's camera -----------------------------------------------------------------------


async def test_the_servers_camera_from_the_page_and_a_lost_connection(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TEST_CAP_S):
        stop = trio.Event()
        running = await real_server(nursery, stop)

        def scenario(page: Any) -> tuple[list[dict[str, Any]], str]:
            page.goto(f"http://127.0.0.1:{running.port}/")
            page.click("#server")
            wait_for(page, "trackerd.received.filter(m => m.mode === 'server').length >= 60")
            assert page.inner_text("#mode") == "the server's camera"
            received: list[dict[str, Any]] = page.evaluate("window.trackerd.received")
            trio.from_thread.run_sync(stop.set)  # the server shuts down: 1001 to every client
            return received, problem_text(page, "connection lost")

        received, problem = await run_in_browser(scenario)
        settled = [m for m in received if m["mode"] == "server"][5:]
        faces = sum(m["face_detected"] for m in settled) / len(settled)
        print(f"\nthe server's camera: {rate(settled):.1f} eye_data/s, face in {faces:.1%}")
        assert rate(settled) >= 10.0 and faces >= 0.95  # the demo clip opens with 19.7 s of a face
        assert "reconnecting" in problem


# --- errors, readable on the page --------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Not on stderr: the test's output is about the page."""


@contextlib.contextmanager
def another_site(folder: Path, page: str) -> Iterator[str]:
    """A page on another origin: a plain HTTP server on another port of this machine (a page
    from a public address could not reach a loopback one at all: Chrome's Local Network
    Access)."""
    (folder / "index.html").write_text(page)
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_errors_are_readable_on_the_page(nursery: trio.Nursery, tmp_path: Path) -> None:
    # The allow-list names another site: a page on any other origin is foreign, even on this
    # machine (Chrome would not let a public page reach a loopback address anyway).
    with trio.fail_after(TEST_CAP_S):
        running = await real_server(
            nursery, token=TOKEN, max_connections=1, allowed_origins="https://app.example.com"
        )
        base = f"http://127.0.0.1:{running.port}"
        foreign = (
            "<!doctype html><p id=problem hidden></p><script type=module>"
            f"import {{ TrackerClient }} from '{base}/trackerd.js';"
            f"const c = new TrackerClient({{ token: '{TOKEN}' }});"
            "c.on('problem', p => { const e = document.getElementById('problem');"
            " e.textContent = p.message; e.hidden = false; });"
            "c.startServer();</script>"
        )

        def scenario(page: Any) -> dict[str, str]:
            seen = {}
            page.goto(f"{base}/?autostart=1&token={TOKEN}")  # no permission prompt is answered
            seen["camera"] = problem_text(page, "camera")
            page.goto(f"{base}/?autostart=server&token=wrong")
            seen["token"] = problem_text(page, "401")
            with another_site(tmp_path, foreign) as address:
                page.goto(address)
                seen["origin"] = problem_text(page, "403")
            trio.from_thread.run(occupy_the_only_slot)
            page.goto(f"{base}/?autostart=server&token={TOKEN}")
            seen["busy"] = problem_text(page, "503")
            return seen

        slot_taken, leave = trio.Event(), trio.Event()

        async def hold_slot() -> None:
            url = f"ws://127.0.0.1:{running.port}/?token={TOKEN}"
            async with open_websocket_url(url) as ws:
                assert (await recv_json(ws))["type"] == "connection"
                slot_taken.set()
                await leave.wait()

        async def occupy_the_only_slot() -> None:
            nursery.start_soon(hold_slot)
            await slot_taken.wait()

        seen = await run_in_browser(scenario, grant_camera=False)
        leave.set()
        print(f"\nerrors on the page: {seen}")
        assert "camera permission denied" in seen["camera"]
        assert "token" in seen["token"]
        assert "origin" in seen["origin"]
        assert "full" in seen["busy"]
        assert (
            running.gate.statistics().refused[401, "token"] >= 1
            and running.gate.statistics().refused[403, "origin"] >= 1
        )
