"""A camera's credentials never leave the process: not in the log (text or JSON, start-up line,
source errors, OpenCV's own lines), not in ``status``, ``/healthz``, ``/metrics``, nor in what
``trackerd health`` prints, whatever the password holds (``@``, ``:``, ``/``).

Real processes on 127.0.0.1, with a stream URL on a closed port (9, discard: nothing listens in
a test machine), which FFmpeg fails to open at once; and :func:`trackerd.redact.redact` itself.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import quote

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from trio_websocket import open_websocket_url

from tests.serverkit import capped, recv_json, recv_type, run_trackerd
from tests.test_json_logs import logged_server
from tests.test_ops import http_get
from trackerd.ops.logs import JsonFormatter, TextFormatter

PASSWORD = "Kz9vQ@pLqX:W7rT/xY2m"
"""``@``, ``:`` and ``/`` in one password; its pieces are long enough that none turns up in a
log by chance."""
TOKEN = "Tq4Lm8ZrB6"
SECRETS = (
    PASSWORD,
    *PASSWORD.replace("@", " ").replace(":", " ").replace("/", " ").split(),
    "Kz9vQ@pLqX",
    "pLqX:W7rT",
    "W7rT/xY2m",
    "W7rT%2FxY2m",
    "%2FxY2m",
    TOKEN,
)
URL = f"rtsp://admin:{quote(PASSWORD, safe='@:')}@127.0.0.1:9/cam?token={TOKEN}&channel=1"
"""The form a camera can use: ``@`` and ``:`` as they are (FFmpeg and Python both take the last
``@`` of the authority), ``/`` percent-encoded (a raw one would end the authority)."""
SHOWN = "rtsp://***@127.0.0.1:9/cam?token=***&channel=1"
RAW_URL = f"rtsp://admin:{PASSWORD}@127.0.0.1:9/cam"
"""A raw ``/`` in the password: refused at start-up (its "port" is ``W7rT``)."""


def leaks(text: str) -> list[str]:
    """The lines of ``text`` that hold a secret."""
    return [line for line in text.splitlines() if any(secret in line for secret in SECRETS)]


# --- a running server -------------------------------------------------------------------------


async def client_view(port: int) -> tuple[list[dict[str, Any]], str]:
    """What a WebSocket client and an HTTP client see: ``status`` before and after the source
    failed to open, the ``error`` in between; then ``/healthz`` and ``/metrics``."""
    replies = []
    async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
        await recv_json(ws)
        await ws.send_message('{"type": "status"}')
        replies.append(await recv_type(ws, "status"))
        await ws.send_message('{"type": "start_tracking"}')
        replies.append(await recv_type(ws, "error"))  # FFmpeg: connection refused
        await ws.send_message('{"type": "status"}')
        replies.append(await recv_type(ws, "status"))
    bodies = [
        await trio.to_thread.run_sync(http_get, port, path) for path in ("/healthz", "/metrics")
    ]
    return replies, "\n".join(body for _, _, body in bodies)


@pytest.mark.parametrize("fmt", ["text", "json"])
@capped
async def test_a_password_with_at_colon_and_slash_leaves_the_server_nowhere(fmt: str) -> None:
    async with logged_server("--source", URL, "--log-format", fmt) as (port, log):
        replies, http = await client_view(port)
    stderr = log.data.decode(errors="replace")
    assert not leaks(stderr)
    assert not leaks(json.dumps(replies))
    assert not leaks(http)
    assert "rtsp" not in http  # no metric carries the source as a label
    # What is left is what a person needs: the host, the port, the path, the harmless parameter.
    assert [r["type"] for r in replies] == ["status", "error", "status"]
    assert replies[0]["source"] == replies[2]["source"] == f"stream {SHOWN}"
    assert replies[1]["message"] == f"cannot open stream {SHOWN}"
    assert f"(source: {SHOWN})" in stderr


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_url_refused_at_start_up_is_refused_without_its_password(fmt: str) -> None:
    done = run_trackerd("--port", "0", "--source", RAW_URL, "--log-format", fmt)
    assert not leaks(done.stderr + done.stdout)
    assert done.returncode == 2
    assert "invalid setting: source: stream URL rtsp://***: its host and port" in done.stderr
    assert "must be percent-encoded" in done.stderr


@pytest.mark.parametrize(
    ("source", "settings"),
    [(URL, f"source {SHOWN};"), (RAW_URL, "SourceError: stream URL rtsp://***: its host and")],
)
def test_health_reports_on_a_source_without_its_password(source: str, settings: str) -> None:
    done = run_trackerd("health", "--source", source)
    assert not leaks(done.stdout + done.stderr)
    assert done.returncode == 1  # nothing listens on port 9
    (line,) = [line for line in done.stdout.splitlines() if line.split()[1] == "settings"]
    assert settings in line


# --- redact -------------------------------------------------------------------------------------


def redact(text: str) -> str:
    """:func:`trackerd.redact.redact`, imported when called: so that the tests of real
    processes above also run, and fail on their own assertions, on a tree that leaks (an older
    one, without this module)."""
    from trackerd.redact import redact

    return redact(text)


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("rtsp://admin:p@ss@host/cam", "rtsp://***@host/cam"),  # stops at the LAST @
        ("rtsp://admin:p%40ss@host:554/cam", "rtsp://***@host:554/cam"),
        ("rtsp://admin@host/cam", "rtsp://***@host/cam"),
        ("rtsp://admin:p@ss:w/rd@host/cam", "rtsp://***"),  # the @ might be in the path
        ("http://host/snap?email=a@b.example", "http://***"),  # or in a query value
        ("rtsp:/admin:pw@host/cam", "rtsp:/***@host/cam"),  # a typo still carries a password
        ("http://host/x?channel=1&token=abc&x=2", "http://host/x?channel=1&token=***&x=2"),
        ("http://host/x?a=1?api_key=k#f", "http://host/x?a=1?api_key=***#f"),
        (
            "http://h/x?X-Amz-Signature=s&X-Amz-Credential=c",
            "http://h/x?X-Amz-Signature=***&X-Amz-Credential=***",
        ),
        ("rtsp://h/user=admin&password=pw&channel=1", "rtsp://h/user=***&password=***&channel=1"),
        ("http://h/x?password=a/b=c&n=1", "http://h/x?password=***&n=1"),
        (
            "listening on ws://127.0.0.1:8765 (source: rtsp://a:b@cam.local/live)",
            "listening on ws://127.0.0.1:8765 (source: rtsp://***@cam.local/live)",
        ),
        (
            "got: rtsp://a:b@c@10.0.0.5/cam in function 'icvExtractPattern'",
            "got: rtsp://***@10.0.0.5/cam in function 'icvExtractPattern'",
        ),
        ("[tcp @ 0x55] Connection to tcp://127.0.0.1:9?timeout=0 failed", None),
        ("VIDEOIO(V4L2:/dev/video7): can't open camera by index", None),
        ("demo", None),
        ("/videos/clip@2x.mp4", None),
        ("", None),
    ],
)
def test_redact(text: str, redacted: str | None) -> None:
    assert redact(text) == (text if redacted is None else redacted)


URL_CHARS = st.text(
    st.sampled_from(
        "abcXYZ019-._~"  # unreserved
        ":/?#[]@"  # gen-delims
        "!$&'()*+,;="  # sub-delims
        "%"
    ),
    min_size=1,
)
CREDENTIAL_NAMES = st.sampled_from(
    ["password", "pass", "pwd", "passwd", "token", "key", "secret", "auth", "sig", "signature",
     "user", "username", "apikey", "api_key", "access_token", "X-Amz-Signature"]
)  # fmt: skip


@given(user=URL_CHARS, password=URL_CHARS)
def test_no_userinfo_survives_whatever_it_holds(user: str, password: str) -> None:
    redacted = redact(f"rtsp://{user}:{password}@192.168.1.20:554/cam")
    assert redacted in ("rtsp://***@192.168.1.20:554/cam", "rtsp://***")


@given(name=CREDENTIAL_NAMES, value=URL_CHARS.filter(lambda v: not set(v) & set("&;#")))
def test_no_credential_parameter_survives_whatever_it_holds(name: str, value: str) -> None:
    redacted = redact(f"http://cam.local/snap?channel=1&{name}={value}&size=2")
    assert redacted in (f"http://cam.local/snap?channel=1&{name}=***&size=2", "http://***")


WORDS = st.text(st.characters(blacklist_characters=":"))
"""Text with no URL in it."""


@given(password=URL_CHARS, before=WORDS, after=WORDS)
def test_a_url_inside_a_line_is_redacted_as_on_its_own(
    password: str, before: str, after: str
) -> None:
    url = f"rtsp://admin:{password}@cam.local/live"
    assert redact(f"{before} {url} {after}") == f"{before} {redact(url)} {after}"


@given(st.text() | st.text(st.sampled_from("ab1:/@?#&;=%.* \n")))
def test_redacting_twice_is_redacting_once(text: str) -> None:
    assert redact(redact(text)) == redact(text)


# --- the log formatters: the net under every call site ----------------------------------------


def record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord(
        "trackerd.capture", logging.WARNING, __file__, 1, message, args, exc_info
    )


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
def test_formatters_redact_messages_and_tracebacks(formatter: logging.Formatter) -> None:
    try:
        raise OSError(f"cannot open {URL}")
    except OSError as exc:
        line = formatter.format(record("opening %s failed", URL, exc=exc))
    assert not leaks(line)
    assert line.count(SHOWN) == 2
    if isinstance(formatter, JsonFormatter):
        assert json.loads(line)["message"] == f"opening {SHOWN} failed"
