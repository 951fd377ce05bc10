"""Logging: one line per event, as text for people or as JSON (``--log-format json``) for
log pipelines. A record may carry a ``stats`` dict (the periodic stats line): text shows it as
``key=value`` pairs, JSON merges it into the object.

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
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

FFMPEG_LOG_PANIC = "0"
"""FFmpeg's ``AV_LOG_PANIC``: only what it prints just before the process aborts."""

_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        stats = getattr(record, "stats", None)
        if isinstance(stats, dict):
            line += " " + " ".join(f"{k}={v}" for k, v in stats.items())
        return line


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
        return json.dumps(entry, default=str)


def configure(level: str, fmt: str) -> None:
    """Route every logger to stderr in the chosen format (replacing earlier handlers)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)
    if fmt == "json":
        _silence_native_loggers()


def _silence_native_loggers() -> None:
    """Stop OpenCV's and FFmpeg's lines on stderr, unless the environment chose a level."""
    import cv2  # here, not at the top: a formatter need not load OpenCV, the server has it

    if "OPENCV_LOG_LEVEL" not in os.environ:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    # Read by OpenCV when its FFmpeg backend first starts, hence the environment.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", FFMPEG_LOG_PANIC)
