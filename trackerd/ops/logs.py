"""Logging: one line per event, as text for people or as JSON (``--log-format json``) for
log pipelines. A record may carry a ``stats`` dict (the periodic stats line): text shows it as
``key=value`` pairs, JSON merges it into the object. Every record, in either format, goes
through :func:`trackerd.redact.redact` on its way out: no stream URL leaves with its password.

Native loggers. OpenCV (``[ WARN:0@0.5] global cap_v4l.cpp:914 open VIDEOIO(V4L2:/dev/video7):
can't open camera by index``) and the FFmpeg inside it (``[mov,mp4,... @ 0x...] moov atom not
found``) write to stderr from C++, past Python's logging. With ``json`` a log pipeline must get
nothing but JSON, so :func:`configure` silences both, and trackerd's own records say what failed
instead (``capture: cannot open camera 7``, at WARNING). With ``text`` they are left on: a person
reading the log gets the reason OpenCV alone knows (a refused stream, an unsupported codec).
An operator who sets ``OPENCV_LOG_LEVEL`` or ``OPENCV_FFMPEG_LOGLEVEL`` keeps what they set,
JSON or not. FFmpeg reads its level once, when OpenCV first opens a file or stream: so
:func:`configure` must run before any source is opened (the server does so at start-up).
Python's own ``warnings`` become records of the ``py.warnings`` logger, in either format.

Native output on fd 2. Silencing loggers is not enough: libjpeg (``Corrupt JPEG data: 4
extraneous bytes before marker 0xdb``) and libpng write to the process's stderr descriptor
themselves, a line per bad pushed frame, and OpenCV at its default level quotes a stream URL it
could not open whole, password included (``CAP_IMAGES: ... got: rtsp://admin:...``). So, in a
process whose ``sys.stderr`` is fd 2 (a real ``trackerd``, not a test harness that redirected
it), :func:`configure` captures fd 2 itself, in BOTH formats: the real stderr is duplicated to a
new descriptor, which the logging handler, ``sys.stderr`` and faulthandler (if enabled) write
to; a pipe takes fd 2's place, and a daemon thread turns each line written to it into a record
of the ``native`` logger at WARNING: JSON in ``json``, a text line in ``text``, redacted in both.
Bounded: a line is cut at :data:`NATIVE_LINE_BYTES`; at most :data:`NATIVE_LINES_PER_WINDOW`
lines are logged per :data:`NATIVE_WINDOW_S`, and the rest are counted, with one summary record
per window (``"suppressed": n``). The thread reads whatever comes, logged or not, so a native
writer never waits on it for long. Text is captured too, rather than left as it is: the URL above
must be redacted there as well, and a flood of libjpeg lines is as useless to a person.

- Child processes inherit fd 2, the pipe: what a child writes reaches the log through this
  process's reader, as ``native`` lines. A child that is a trackerd of its own (a ``--workers``
  worker) is started with :func:`child_stderr`, the real stderr, and captures its own fd 2.
- At exit, fd 2 is given back to the real stderr (which ends the pipe) and the reader logs what
  is left, within :data:`NATIVE_FLUSH_S`. What native code writes after that (during the
  interpreter's finalisation) goes to stderr as it is.
- A crash: what native code wrote just before the process aborts can be lost with the pipe.
  faulthandler's traceback is not: it writes to the real stderr.
"""

from __future__ import annotations

import atexit
import contextlib
import faulthandler
import fcntl
import io
import json
import logging
import math
import os
import select
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TextIO

from trackerd.redact import redact

FFMPEG_LOG_PANIC = "0"
"""FFmpeg's ``AV_LOG_PANIC``: only what it prints just before the process aborts."""

NATIVE_LINE_BYTES: Final = 2048
"""A native line is cut here: libjpeg's and OpenCV's lines are under 300 bytes; a longer one is
a dump, and a record is meant to be read."""
NATIVE_LINES_PER_WINDOW: Final = 20
NATIVE_WINDOW_S: Final = 10.0
"""At most 20 native lines per 10 s: a burst (OpenCV's 6-line exception report) passes whole,
and a flood (a libjpeg warning per bad frame, at ``max_fps`` per session: hundreds a second)
costs the log about 2 lines a second, the summary included."""
NATIVE_FLUSH_S: Final = 1.0
"""How long exit waits for the reader to log what is left in the pipe."""
PIPE_BYTES: Final = 1 << 20
"""The pipe's buffer (Linux's default ceiling for an unprivileged process): room for a burst
while the reader waits its turn for the GIL behind the analysis threads."""

_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

native_log = logging.getLogger("native")


class TextFormatter(logging.Formatter):
    def __init__(self, worker: int | None = None) -> None:
        # A worker's lines and its siblings' share one stderr: each says whose it is.
        who = "%(name)s" if worker is None else f"%(name)s[worker {worker}]"
        super().__init__(f"%(asctime)s %(levelname)s {who}: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        stats = getattr(record, "stats", None)
        if isinstance(stats, dict):
            line += " " + " ".join(f"{k}={v}" for k, v in stats.items())
        return redact(line)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        stats = getattr(record, "stats", None)
        if isinstance(stats, dict):
            entry.update(stats)
        extra = {k: v for k, v in record.__dict__.items() if k not in _STANDARD and k != "stats"}
        entry.update(extra)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # Before encoding: redacting JSON text could swallow a closing quote.
        redacted = {k: redact(v) if isinstance(v, str) else v for k, v in entry.items()}
        return json.dumps(redacted, default=str)


class _Worker(logging.Filter):
    """Gives every record ``worker``, which JSON shows as a field like any other extra."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self._index = index

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self._index
        return True


def configure(
    level: str, fmt: str, *, worker: int | None = None, quiet_native: bool = False
) -> None:
    """Route every logger to stderr in the chosen format (replacing earlier handlers), and
    capture native output on fd 2 (see the module docstring; once per process). ``worker``,
    a ``--workers`` worker's index, is named in every record. ``quiet_native`` silences
    OpenCV's and FFmpeg's loggers in text too, as ``json`` does: for a command whose output
    is a report (``trackerd health``, ``trackerd analyze``) that says itself what failed."""
    _capture_fd2()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(worker))
    if worker is not None:
        handler.addFilter(_Worker(worker))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs each request at INFO: a line per webhook delivery. trackerd logs what matters
    # of them itself (an outage, once; the recovery).
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("httpcore").setLevel(max(logging.WARNING, root.level))
    logging.captureWarnings(True)
    if fmt == "json" or quiet_native:
        _silence_native_loggers()


def child_stderr() -> int | None:
    """What a child process that logs on its own should get as stderr: the real stderr while
    fd 2 is captured, else None (it inherits this process's)."""
    return _captured.real_fd if _captured is not None else None


def _silence_native_loggers() -> None:
    """Stop OpenCV's and FFmpeg's lines on stderr, unless the environment chose a level."""
    import cv2  # here, not at the top: a formatter need not load OpenCV, the server has it

    if "OPENCV_LOG_LEVEL" not in os.environ:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    # Read by OpenCV when its FFmpeg backend first starts, hence the environment.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", FFMPEG_LOG_PANIC)


class NativeLines:
    """Bytes that native code wrote, in any pieces, to log records: a line each, cut at
    ``max_bytes``, at most ``limit`` per ``window_s``, the rest counted and summed up in one
    record per window. Plain and single-threaded: the reader thread feeds it."""

    def __init__(
        self,
        log: logging.Logger = native_log,
        *,
        limit: int = NATIVE_LINES_PER_WINDOW,
        window_s: float = NATIVE_WINDOW_S,
        max_bytes: int = NATIVE_LINE_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log, self._limit, self._window_s = log, limit, window_s
        self._max_bytes, self._clock = max_bytes, clock
        self._line = bytearray()  # never over max_bytes
        self._cut = False
        self._window_end = -math.inf
        self._logged = 0
        self._suppressed = 0

    def feed(self, data: bytes) -> None:
        *ended, rest = data.split(b"\n")
        for piece in ended:
            self._append(piece)
            self._end_line()
        self._append(rest)

    def summary_due_in(self) -> float | None:
        """Seconds until the summary of suppressed lines is due; None when none is pending."""
        return max(0.0, self._window_end - self._clock()) if self._suppressed else None

    def summarise(self) -> None:
        """Log how many lines were suppressed since the last summary, if any were."""
        if self._suppressed:
            self._log.warning(
                "native output: %d more lines suppressed (at most %d are logged per %g s)",
                *(self._suppressed, self._limit, self._window_s),
                extra={"suppressed": self._suppressed},
            )
            self._suppressed = 0

    def close(self) -> None:
        """The writers are gone: log the unfinished last line and the pending summary."""
        if self._line:
            self._end_line()
        self.summarise()

    def _append(self, piece: bytes) -> None:
        room = self._max_bytes - len(self._line)
        if len(piece) > room:
            self._cut = True
        self._line += piece[:room]

    def _end_line(self) -> None:
        text = self._line.decode("utf-8", "backslashreplace").rstrip()
        if self._cut:
            text += f" [cut at {self._max_bytes} bytes]"
        self._line.clear()
        self._cut = False
        if not text.strip():
            return  # OpenCV separates its reports with empty lines
        now = self._clock()
        if now >= self._window_end:
            self.summarise()
            self._window_end, self._logged = now + self._window_s, 0
        if self._logged < self._limit:
            self._logged += 1
            self._log.warning("%s", text)
        else:
            self._suppressed += 1


@dataclass(frozen=True, slots=True)
class _Captured:
    real_fd: int
    """The real stderr, duplicated: where the log and ``sys.stderr`` write."""
    reader: threading.Thread


_captured: _Captured | None = None


def _capture_fd2() -> None:
    """Put a pipe on fd 2, read by a daemon thread (see the module docstring). Nothing to do
    if it is done already, or if ``sys.stderr`` is not fd 2 (someone else redirected it)."""
    global _captured
    if _captured is not None or not _writes_to_fd2(sys.stderr):
        return
    sys.stderr.flush()
    real_fd = os.dup(2)  # not inheritable: a child gets it only when given it
    read_fd, write_fd = os.pipe()
    # Best effort: without it, the 64 KiB default still works, with less room for a burst.
    with contextlib.suppress(OSError):
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    os.dup2(write_fd, 2)  # fd 2 stays inheritable: children write to the pipe, as to stderr
    os.close(write_fd)
    encoding = sys.stderr.encoding
    sys.stderr = open(  # noqa: SIM115 - stderr for the life of the process
        real_fd, "w", buffering=1, encoding=encoding, errors="backslashreplace", closefd=False
    )
    if faulthandler.is_enabled():
        faulthandler.enable(sys.stderr, all_threads=True)
    reader = threading.Thread(
        target=_read_native, args=(read_fd, real_fd), name="trackerd-native-log", daemon=True
    )
    _captured = _Captured(real_fd, reader)
    reader.start()
    atexit.register(_release, _captured)


def _writes_to_fd2(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.fileno() == 2
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return False  # a StringIO, a closed stream, pytest's capture


def _read_native(read_fd: int, real_fd: int) -> None:
    """The reader thread: drain the pipe into :class:`NativeLines` until every writer is gone.
    Should it fail, fd 2 goes back to the real stderr, so that no writer blocks on a pipe that
    nobody reads any more."""
    lines = NativeLines()
    poller = select.poll()
    poller.register(read_fd, select.POLLIN)
    try:
        while True:
            due = lines.summary_due_in()
            if not poller.poll(None if due is None else math.ceil(due * 1000)):
                lines.summarise()
                continue
            data = os.read(read_fd, 65536)
            if not data:
                break
            lines.feed(data)
        lines.close()
    finally:
        os.dup2(real_fd, 2)
        os.close(read_fd)


def _release(captured: _Captured) -> None:
    """At exit: fd 2 back to the real stderr, which closes the pipe's last write end here; the
    reader then logs what is left and stops (a child still holding the pipe is not waited for
    beyond ``NATIVE_FLUSH_S``)."""
    os.dup2(captured.real_fd, 2)
    captured.reader.join(NATIVE_FLUSH_S)
