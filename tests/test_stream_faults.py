"""A real stream URL that dies, stalls or is down, served to the real server and tracker.

An MJPEG stream over HTTP (``multipart/x-mixed-replace``, what IP cameras and many webcams
serve) of the demo clip's first two seconds, from a small HTTP server on 127.0.0.1 in a thread.
trackerd opens it with OpenCV's FFmpeg backend, as it would a camera's URL. Each connection the
stream server accepts follows the next step of its script:

- ``("serve", n)``: n frames at 20 fps, then the connection is closed: the stream died;
- ``("stall", n)``: n frames, then nothing, the connection held open until the test ends;
- ``("down", 0)``: 503, as a camera or a proxy answers while it restarts;
- the last step repeats.

What the clients get is what the fault model in ``trackerd/capture.py`` promises: an ``error``
ending in ``; retrying``, then ``eye_data`` again from the reopened stream, with faces found in
it (the real tracker on real frames).
"""

from __future__ import annotations

import http.server
import socketserver
import threading
import time
from collections.abc import Iterator
from typing import Any

import cv2
import pytest
import trio
from trio_websocket import open_websocket_url

from tests.serverkit import capped, recv_json, recv_type, start, url, with_settings
from trackerd.app import Running, serve_source
from trackerd.sources import demo_clip_path
from trackerd.vision.tracker import Tracker

pytestmark = pytest.mark.usefixtures("no_unexpected_errors")

FPS = 20.0


def demo_jpegs(count: int = 48) -> list[bytes]:
    cap = cv2.VideoCapture(str(demo_clip_path()))
    jpegs = []
    for _ in range(count):
        ok, image = cap.read()
        assert ok
        jpegs.append(cv2.imencode(".jpg", image)[1].tobytes())
    cap.release()
    return jpegs


class MjpegServer:
    """An MJPEG stream on 127.0.0.1 whose connections follow ``script`` (see the module)."""

    def __init__(self, *script: tuple[str, int]) -> None:
        self.script = list(script)
        self.connections = 0
        self.ended = threading.Event()
        """Set when the test is done: stalled connections return and close."""
        jpegs = demo_jpegs()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.connections += 1
                step, frames = owner.script.pop(0) if len(owner.script) > 1 else owner.script[0]
                if step == "down":
                    self.send_error(503)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                for i in range(frames):
                    jpeg = jpegs[i % len(jpegs)]
                    part = b"--frame\r\nContent-Type: image/jpeg\r\n"
                    part += b"Content-Length: %d\r\n\r\n%s\r\n" % (len(jpeg), jpeg)
                    try:
                        self.wfile.write(part)
                    except OSError:  # trackerd let go of this connection: fine
                        return
                    time.sleep(1 / FPS)  # the stream's own pace, in its own thread
                if step == "stall":
                    owner.ended.wait()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/stream.mjpg"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.ended.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stream_server() -> Iterator[list[MjpegServer]]:
    made: list[MjpegServer] = []
    yield made
    for server in made:
        server.close()


async def serve(
    nursery: trio.Nursery, made: list[MjpegServer], *script: tuple[str, int], **changes: Any
) -> tuple[MjpegServer, Running]:
    """A stream server with ``script``, and trackerd (real tracker) watching its URL."""
    stream = MjpegServer(*script)
    made.append(stream)
    settings = with_settings(source=stream.url, source_retry_max_s=0.2, **changes)
    running = await start(nursery, settings, open_source=serve_source, make_tracker=Tracker)
    return stream, running


async def faces_after_error(port: int, says: str) -> None:
    """Track: eye_data, then the error, then eye_data again with a face found in it."""
    async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
        await recv_json(ws)
        await ws.send_message('{"type": "start_tracking"}')
        before = (await recv_type(ws, "eye_data"))["frame"]
        while (message := await recv_json(ws))["type"] == "eye_data":
            pass
        assert message["type"] == "error" and says in message["message"], message
        assert message["message"].endswith("; retrying")
        while not (data := await recv_type(ws, "eye_data"))["face_detected"]:
            pass
        assert data["frame"] > before


@capped
async def test_a_stream_that_dies_is_reopened_and_tracked_again(
    nursery: trio.Nursery, stream_server: list[MjpegServer]
) -> None:
    stream, running = await serve(nursery, stream_server, ("serve", 30), ("serve", 10_000))
    await faces_after_error(running.port, "stopped delivering frames")
    assert stream.connections == 2


@capped
async def test_a_stream_that_stalls_times_out_and_is_reopened(
    nursery: trio.Nursery, stream_server: list[MjpegServer]
) -> None:
    stream, running = await serve(
        nursery, stream_server, ("stall", 30), ("serve", 10_000), source_timeout_s=1.0
    )
    await faces_after_error(running.port, "delivered no frame in 1 s")
    assert stream.connections == 2


@capped
async def test_a_stream_that_dies_and_stays_down_for_a_while_comes_back(
    nursery: trio.Nursery, stream_server: list[MjpegServer]
) -> None:
    """Two reopens meet a 503 (each reported), the third finds the stream back."""
    script = (("serve", 30), ("down", 0), ("down", 0), ("serve", 10_000))
    stream, running = await serve(nursery, stream_server, *script)
    async with open_websocket_url(url(running)) as ws:
        await recv_json(ws)
        await ws.send_message('{"type": "start_tracking"}')
        await recv_type(ws, "eye_data")
        errors = [(await recv_type(ws, "error"))["message"] for _ in range(3)]
        assert "stopped delivering frames; retrying" in errors[0]
        assert all("cannot open stream" in e and e.endswith("; retrying") for e in errors[1:])
        while not (await recv_type(ws, "eye_data"))["face_detected"]:
            pass
    assert stream.connections == 4
