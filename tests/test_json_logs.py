"""``--log-format json`` stays JSON whatever native code writes to fd 2 (libjpeg's and libpng's
complaints about a pushed frame, OpenCV's reports), and what it writes stays bounded.

A real server gets corrupt frames from a real WebSocket client; and, independently of whichever
decoder the server uses, a real process configures its logs and then has C code write to fd 2
(libc's ``fputs`` and ``write`` through ctypes, and libpng itself through ``cv2.imdecode``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import struct
import subprocess
import sys
import textwrap
import zlib
from collections.abc import AsyncIterator
from typing import Any

import cv2
import numpy as np
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.media import DATA
from tests.serverkit import capped, recv_json, recv_type, terminate
from trackerd.ops import logs

# --- a real server whose whole log is kept ------------------------------------------------------


class Log:
    """Everything a process writes to stderr, as it comes."""

    def __init__(self) -> None:
        self.data = b""
        self.ended = False
        self._changed = trio.Event()

    async def record(self, stream: trio.abc.ReceiveStream) -> None:
        while chunk := await stream.receive_some(65536):
            self.data += chunk
            self._changed.set()
            self._changed = trio.Event()
        self.ended = True
        self._changed.set()

    async def wait_for(self, pattern: bytes) -> re.Match[bytes]:
        """The first match of ``pattern`` in the log, once it is there. Bound it with a cap."""
        while (found := re.search(pattern, self.data)) is None:
            assert not self.ended, f"the process exited: {self.data.decode(errors='replace')}"
            await self._changed.wait()
        return found

    def lines(self) -> list[str]:
        return self.data.decode(errors="replace").splitlines()


@contextlib.asynccontextmanager
async def logged_server(*args: str) -> AsyncIterator[tuple[int, Log]]:
    """``python -m trackerd ARGS`` on 127.0.0.1 with a free port, every byte of its stderr
    kept from the first: its port and its log. On the way out, SIGTERM; the log is complete
    (the process has exited, status 0) when the block is left."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trackerd", "--host", "127.0.0.1", "--port", "0", *args],
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    log = Log()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(log.record, process.stderr)
        try:
            with trio.fail_after(30):  # start-up includes loading numba's cache
                found = await log.wait_for(rb"listening on ws://[^:]+:(\d+)")
            yield int(found.group(1)), log
        finally:
            await terminate(process, 10)
    assert process.returncode == 0, log.data[-2000:].decode(errors="replace")


def not_json(lines: list[str]) -> list[str]:
    """The lines that are not one JSON object each (the first five, cut to 200 characters, for
    a readable failure)."""
    bad = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if not isinstance(entry, dict):
            bad.append(line[:200])
    return bad[:5]


# --- frames that make decoders complain ---------------------------------------------------------


def _chunk(kind: bytes, body: bytes) -> bytes:
    """A PNG chunk with a correct CRC: it passes any CRC check and reaches libpng."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(*chunks: tuple[bytes, bytes], idat: bytes | None = None) -> bytes:
    """A 32x32 grey PNG whose IDAT is replaced by ``idat``, with ``chunks`` before it."""
    ok, encoded = cv2.imencode(".png", np.full((32, 32), 128, np.uint8))
    assert ok
    data = encoded.tobytes()
    signature, ihdr = data[:8], data[8:33]
    (length,) = struct.unpack(">I", data[33:37])
    assert data[37:41] == b"IDAT"
    pixels = data[41 : 41 + length]
    body = b"".join(_chunk(kind, payload) for kind, payload in chunks)
    return (
        signature
        + ihdr
        + body
        + _chunk(b"IDAT", pixels if idat is None else idat)
        + _chunk(b"IEND", b"")
    )


def complaining_frames() -> dict[str, bytes]:
    """Frames each of which made libjpeg or libpng write a line to fd 2 (as of OpenCV 4.14's
    decoders), and bytes that are no image at all."""
    jpeg = (DATA / "single_face.jpg").read_bytes()
    dqt = jpeg.index(b"\xff\xdb")
    good_png = _png()
    pixels = good_png[41 : 41 + struct.unpack(">I", good_png[33:37])[0]]
    return {
        # "Corrupt JPEG data: 4 extraneous bytes before marker 0xdb"
        "jpeg with junk before a marker": jpeg[:dqt] + b"\x00\x00\x00\x00" + jpeg[dqt:],
        # "libpng error: IDAT: invalid block type"
        "png with a broken deflate stream": _png(idat=b"\x78\x9c" + b"\xff" * 20),
        # "libpng warning: IDAT: Extra compressed data"
        "png with data after its deflate stream": _png(idat=pixels + b"junkjunk"),
        # "libpng warning: iCCP: too short"
        "png with a short colour profile": _png((b"iCCP", b"ICC\x00\x00" + zlib.compress(b"x"))),
        # "libpng error: XXXX: CRC error" where a decoder does not check CRCs first
        "png with a damaged chunk": good_png[:-5] + b"\x00" + good_png[-4:],
        "not an image": b"these bytes are no image at all",
    }


# --- the real server --------------------------------------------------------------------------


async def push(port: int, frames: dict[str, bytes]) -> dict[str, dict[str, Any]]:
    """Push each frame (three times over: a decoder may warn only once) in a push session, one
    in flight: each frame's answer, by name (a close, if the server closed instead)."""
    answers: dict[str, dict[str, Any]] = {}
    async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
        assert (await recv_json(ws))["type"] == "connection"
        await ws.send_message(json.dumps({"type": "start_tracking", "source": "client"}))
        await recv_type(ws, "tracking_started")
        try:
            for _ in range(3):
                for name, data in frames.items():
                    await ws.send_message(data)
                    answers[name] = await recv_json(ws)
        except ConnectionClosed as closed:
            answers[name] = {"type": "close", "reason": str(closed.reason)}
    return answers


@capped
async def test_frames_that_make_decoders_write_to_stderr_leave_every_log_line_json() -> None:
    args = ("--source", "demo", "--log-format", "json", "--max-fps", "1000")
    async with logged_server(*args) as (port, log):
        answers = await push(port, complaining_frames())
    lines = log.lines()
    assert any('"listening on ws://' in line for line in lines)
    assert not not_json(lines), f"lines on stderr that are not JSON: {not_json(lines)}"
    assert all(a["type"] in ("error", "eye_data") for a in answers.values()), answers


# --- fd 2 itself, in a real process -------------------------------------------------------------


def run_python(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh Python, with ctypes' ``libc`` and ``fputs_stderr`` at hand: its
    exit status, stdout and stderr."""
    prelude = textwrap.dedent(
        """
        import ctypes, os, sys
        from trackerd.ops import logs
        libc = ctypes.CDLL(None)
        c_stderr = ctypes.c_void_p.in_dll(libc, "stderr")

        def fputs_stderr(text):  # what libjpeg and libpng do: C stdio's stderr
            libc.fputs(text.encode(), c_stderr)

        def write_fd2(data):  # a raw write(2) from C
            assert libc.write(2, data, len(data)) == len(data)
        """
    )
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
    )


def records(stderr: str) -> list[dict[str, Any]]:
    lines = stderr.splitlines()
    assert lines and not not_json(lines), f"not JSON: {not_json(lines)}"
    return [json.loads(line) for line in lines]


def test_what_c_code_writes_to_fd2_becomes_json_records() -> None:
    bad_png = complaining_frames()["png with a broken deflate stream"]
    done = run_python(
        f"""
        logs.configure("INFO", "json")
        import cv2, numpy as np
        fputs_stderr("Corrupt JPEG data: 4 extraneous bytes before marker 0xdb\\n")
        write_fd2(b"two lines\\nin one write\\n")
        write_fd2(b"\\xff\\xfe not UTF-8\\n")
        assert cv2.imdecode(np.frombuffer({bad_png!r}, np.uint8), 0) is None  # libpng itself
        import logging
        logging.getLogger("trackerd").info("a record of our own")
        write_fd2(b"a last line with no newline")
        """
    )
    assert done.returncode == 0, done.stderr
    entries = records(done.stderr)
    native = [e["message"] for e in entries if e["logger"] == "native"]
    assert native[:4] == [
        "Corrupt JPEG data: 4 extraneous bytes before marker 0xdb",
        "two lines",
        "in one write",
        "\\xff\\xfe not UTF-8",
    ]
    assert any(m.startswith("libpng error:") for m in native), native
    assert native[-1] == "a last line with no newline"  # flushed at exit
    assert all(e["level"] == "WARNING" for e in entries if e["logger"] == "native")
    assert {"logger": "trackerd", "message": "a record of our own"}.items() <= next(
        e for e in entries if e["logger"] == "trackerd"
    ).items()


def test_a_flood_of_native_lines_is_bounded_and_never_blocks_the_writer() -> None:
    """Far more than the pipe holds, as fast as C can write it: the writer is never held up
    for long, at most NATIVE_LINES_PER_WINDOW lines are logged, and one summary counts the rest.
    A line longer than NATIVE_LINE_BYTES is cut."""
    lines = 50_000  # ~600 KB
    done = run_python(
        f"""
        import time
        logs.configure("INFO", "json")
        write_fd2(b"x" * 100_000 + b"\\n")
        start = time.monotonic()
        for i in range({lines}):
            write_fd2(b"flood line %d\\n" % i)
        print(time.monotonic() - start)
        """
    )
    assert done.returncode == 0, done.stderr
    entries = records(done.stderr)
    logged = [e for e in entries if "suppressed" not in e]
    (summary,) = [e for e in entries if "suppressed" in e]
    assert len(logged) == logs.NATIVE_LINES_PER_WINDOW
    assert summary["suppressed"] + len(logged) == lines + 1
    cut = logged[0]["message"]
    assert cut.startswith("x" * logs.NATIVE_LINE_BYTES) and cut.endswith("bytes]")
    assert len(cut) < logs.NATIVE_LINE_BYTES + 40
    assert float(done.stdout) < 5.0  # measured ~0.15 s; a blocked writer would hang here


def test_text_logs_capture_native_lines_too_and_redact_them() -> None:
    """OpenCV quotes a stream URL it could not open whole; in text the line is kept, redacted."""
    done = run_python(
        """
        logs.configure("INFO", "text")
        fputs_stderr("CAP_IMAGES: error, got: rtsp://admin:Hunter2x@10.0.0.5/cam in function\\n")
        """
    )
    assert done.returncode == 0, done.stderr
    (line,) = done.stderr.splitlines()
    assert " WARNING native: CAP_IMAGES: error, got: rtsp://***@10.0.0.5/cam in function" in line
    assert "Hunter2x" not in done.stderr


def test_a_child_given_child_stderr_logs_json_of_its_own() -> None:
    """The ``--workers`` arrangement: a child that configures its own logs gets the real stderr
    (not the parent's pipe, where its JSON would become the message of a ``native`` record)."""
    child = (
        'from trackerd.ops import logs; logs.configure("INFO", "json"); '
        'import os; os.write(2, b"child native\\n")'
    )
    done = run_python(
        f"""
        import subprocess
        logs.configure("INFO", "json")
        subprocess.run([sys.executable, "-c", {child!r}], stderr=logs.child_stderr(), check=True)
        write_fd2(b"parent native\\n")
        """
    )
    assert done.returncode == 0, done.stderr
    messages = [e["message"] for e in records(done.stderr)]
    assert messages == ["child native", "parent native"]


def test_a_process_whose_stderr_is_not_fd2_is_left_alone() -> None:
    """A harness that redirected ``sys.stderr`` (as pytest does) keeps fd 2 and its handlers'
    stream: nothing is captured."""
    done = run_python(
        """
        import io
        sys.stderr = io.StringIO()
        logs.configure("INFO", "json")
        assert logs.child_stderr() is None
        write_fd2(b"raw\\n")
        """
    )
    assert done.returncode == 0 and done.stderr == "raw\n", done.stderr


# --- NativeLines: bytes to bounded records ------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def native(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="test.native")
    return caplog


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "test.native"]


def test_lines_are_whole_whatever_the_pieces_they_arrive_in(
    native: pytest.LogCaptureFixture,
) -> None:
    lines = logs.NativeLines(logging.getLogger("test.native"))
    for piece in (b"libpng war", b"ning: iCCP: too short\r\n\n  \nCorrupt", b" JPEG\n", b"end"):
        lines.feed(piece)
    assert messages(native) == ["libpng warning: iCCP: too short", "Corrupt JPEG"]
    lines.close()
    assert messages(native)[-1] == "end"


def test_a_line_is_cut_however_many_pieces_it_comes_in(native: pytest.LogCaptureFixture) -> None:
    lines = logs.NativeLines(logging.getLogger("test.native"), max_bytes=10)
    for _ in range(1000):
        lines.feed(b"0123456789" * 100)  # 1 MB without a newline: at most 10 bytes are kept
    lines.feed(b"\nshort\n")
    assert messages(native) == ["0123456789 [cut at 10 bytes]", "short"]


def test_over_the_limit_lines_are_counted_and_summed_up_once_per_window(
    native: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    lines = logs.NativeLines(logging.getLogger("test.native"), limit=3, window_s=10, clock=clock)
    lines.feed(b"".join(b"line %d\n" % i for i in range(10)))
    assert messages(native) == ["line 0", "line 1", "line 2"]
    assert lines.summary_due_in() == 10.0  # the reader thread wakes then to log the summary
    clock.now = 10.0
    lines.summarise()
    assert messages(native)[-1] == (
        "native output: 7 more lines suppressed (at most 3 are logged per 10 s)"
    )
    assert native.records[-1].suppressed == 7  # type: ignore[attr-defined]
    assert lines.summary_due_in() is None
    lines.feed(b"next window\n")  # a new window: logged again
    assert messages(native)[-1] == "next window"
    assert len(messages(native)) == 5


def test_the_summary_comes_before_the_next_window_when_the_reader_did_not_wake(
    native: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    lines = logs.NativeLines(logging.getLogger("test.native"), limit=1, window_s=1, clock=clock)
    lines.feed(b"a\nb\nc\n")
    clock.now = 5.0
    lines.feed(b"d\n")
    assert messages(native) == [
        "a",
        "native output: 2 more lines suppressed (at most 1 are logged per 1 s)",
        "d",
    ]
