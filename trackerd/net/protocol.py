"""The WebSocket protocol, sans-IO: parse what clients send, encode what the server sends.

The contract is the original server's (see docs/protocol.md). Every message is a JSON text
frame; timestamps are UTC ISO 8601 with milliseconds and ``Z``. Parsing never raises anything but
:class:`ProtocolError`, whose message is fit to send back to the client in an ``error``.
"""

from __future__ import annotations

import enum
import json
import reprlib
import time
from typing import Any, Final

from trackerd.errors import TrackerdError
from trackerd.vision.observation import Observation, eye_fields

CONNECTED_MESSAGE: Final = "Eye tracking connected"


class Command(enum.Enum):
    START_TRACKING = "start_tracking"
    STOP_TRACKING = "stop_tracking"
    PING = "ping"
    STATUS = "status"
    START_SESSION = "start_tracking, source client"
    """``{"type": "start_tracking", "source": "client"}``: the client pushes its own frames."""
    OBSERVE = "observe"
    """``{"type": "observe"}`` (``"sid"`` optional with a session token, which names its own):
    a session's events, live (a proctor's dashboard)."""


_COMMANDS: Final = {c.value: c for c in Command if c is not Command.START_SESSION}
SOURCES: Final = {"server": Command.START_TRACKING, "client": Command.START_SESSION}
"""What ``start_tracking``'s optional ``source`` may say; without it, the server's capture."""


class ProtocolError(TrackerdError, ValueError):
    """A client message the server cannot act on; ``str(err)`` is the reply's message."""


def parse_client_message(data: str | bytes) -> Command:
    """The command in one client message, or :class:`ProtocolError` saying what is wrong."""
    if isinstance(data, bytes | bytearray):
        raise ProtocolError(
            'binary messages are frames for a push session: send {"type": "start_tracking", '
            '"source": "client"} first'
        )
    try:
        message = json.loads(data)
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError and an integer of over 4300 digits (Python's limit
        # on int() from text, sys.get_int_max_str_digits), which the decoder raises as a plain
        # ValueError; RecursionError, deeply nested arrays ("[[[[…") exhausting its stack.
        raise ProtocolError("message is not valid JSON") from exc
    if not isinstance(message, dict):
        raise ProtocolError(f"message must be a JSON object, got {type(message).__name__}")
    kind = message.get("type")
    if kind is None:
        raise ProtocolError('message has no "type"')
    if not isinstance(kind, str) or kind not in _COMMANDS:
        known = ", ".join(_COMMANDS)
        raise ProtocolError(f"unknown message type {_clip(kind)}; expected one of: {known}")
    command = _COMMANDS[kind]
    if command is Command.START_TRACKING and "source" in message:
        source = message["source"]
        if not isinstance(source, str) or source not in SOURCES:
            raise ProtocolError(
                f'unknown source {_clip(source)}: "client" to push your own frames, or no '
                "source for the server's camera"
            )
        return SOURCES[source]
    return command


MAX_SID_CHARS: Final = 128


def observed_sid(data: str | bytes) -> str | None:
    """``observe``'s ``sid``, or None when it names none (``data`` is a valid ``observe``)."""
    sid = json.loads(data).get("sid")
    if sid is None:
        return None
    if not isinstance(sid, str) or not 0 < len(sid) <= MAX_SID_CHARS:
        raise ProtocolError(f'"sid" must be a string of 1-{MAX_SID_CHARS} characters')
    return sid


def observing(sid: str, report: dict[str, Any] | None) -> str:
    """The answer to ``observe``: whose events follow, and the session's report so far (null
    when it is neither live nor recorded yet)."""
    return _dump({"type": "observing", "sid": sid, "report": report, "timestamp": timestamp()})


def timestamp(unix_s: float | None = None) -> str:
    """``2024-01-01T12:00:00.000Z`` for ``unix_s`` (default: now)."""
    t = time.time() if unix_s is None else unix_s
    whole = int(t)
    millis = int((t - whole) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


def _dump(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), allow_nan=False)


def connection(unix_s: float | None = None) -> str:
    return _dump(
        {"type": "connection", "message": CONNECTED_MESSAGE, "timestamp": timestamp(unix_s)}
    )


def pong(unix_s: float | None = None) -> str:
    return _dump({"type": "pong", "timestamp": timestamp(unix_s)})


def error(message: str, unix_s: float | None = None, *, code: str) -> str:
    """``code`` names the kind of error for programs, and is stable (``bad_message``,
    ``frame_over_budget``...; docs/protocol.md lists them); ``message`` is for people, and
    may change. Every error has one: a client never parses the text."""
    return _dump(
        {"type": "error", "message": message, "code": code, "timestamp": timestamp(unix_s)}
    )


def status(is_tracking: bool, connected_clients: int, **extra: Any) -> str:
    """The documented keys first, then ``extra`` (more keys are allowed by the contract)."""
    return _dump(
        {
            "type": "status",
            "is_tracking": is_tracking,
            "connected_clients": connected_clients,
            "timestamp": timestamp(),
            **extra,
        }
    )


def tracking_started(session: str, max_frame_bytes: int, max_fps: float) -> str:
    """The answer to ``start_tracking`` with ``"source": "client"``: the session and its limits."""
    return _dump(
        {
            "type": "tracking_started",
            "source": "client",
            "session": session,
            "max_frame_bytes": max_frame_bytes,
            "max_fps": max_fps,
            "timestamp": timestamp(),
        }
    )


def eye_data(
    observation: Observation, captured_at: float, frame: int, session: str | None = None
) -> str:
    """One observation. ``timestamp`` is when the frame was captured (for a pushed frame: when
    the server received it); the documented keys come first, then ``face_count``, ``frame``
    (the capture's sequence number, or the pushed frame's number on its connection),
    ``captured_at`` (the same instant as ``timestamp``, in Unix seconds with microseconds, for
    latency), ``face`` (``[x, y, w, h]`` in the frame's pixels, or null), ``faces`` (every face
    counted in ``face_count``, ``face`` first; the others' boxes as of the last recount) and
    ``eyes`` (lists of such boxes), then the eye stage's ``pupils``, ``eyes_closed``, ``blinks``
    and ``gaze``, and for a pushed frame its ``session``: frame numbers start again at 1 in each
    session."""
    return _dump(
        {
            "type": "eye_data",
            "timestamp": timestamp(captured_at),
            "face_detected": observation.face_detected,
            "eye_count": observation.eye_count,
            "looking_away": observation.looking_away,
            "confidence": round(observation.confidence, 4),
            "face_count": observation.face_count,
            "frame": frame,
            "captured_at": round(captured_at, 6),
            "face": _box(observation.face) if observation.face is not None else None,
            "faces": [_box(face) for face in observation.faces],
            "eyes": [_box(eye) for eye in observation.eyes],
            **eye_fields(observation),
            **({"session": session} if session is not None else {}),
        }
    )


def _box(box: tuple[int, int, int, int]) -> list[int]:
    return [int(v) for v in box]  # the tracker's may be numpy integers, which json refuses


def _clip(value: object) -> str:
    """A short, safe rendering of whatever the client sent (reprlib bounds size and depth)."""
    return reprlib.repr(value)
