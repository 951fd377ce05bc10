"""``trackerd [options]``: parse flags, build the settings, run the server until a signal."""

from __future__ import annotations

import argparse
import logging
import os
import resource
import signal
import sys
from collections.abc import Sequence

import trio

from trackerd import app, logs
from trackerd.cascades import CascadeError
from trackerd.settings import (
    DEFAULT_GRACEFUL_TIMEOUT_S,
    DEFAULT_HEARTBEAT_INTERVAL_S,
    DEFAULT_HEARTBEAT_TIMEOUT_S,
    DEFAULT_HOST,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_PORT,
    DEFAULT_RATE_LIMIT_BURST,
    DEFAULT_RATE_LIMIT_PER_S,
    DEFAULT_SEND_TIMEOUT_S,
    DEFAULT_SOURCE_TIMEOUT_S,
    DEFAULT_STATS_INTERVAL_S,
    LOG_FORMATS,
    LOG_LEVELS,
    Settings,
    SettingsError,
)

log = logging.getLogger("trackerd")

FDS_OF_OUR_OWN = 64
"""Descriptors beside the connections: the source, logs, trio's wakeup pipe, libraries."""

EPILOG = """\
Other commands: 'trackerd analyze PATH...' analyses files offline; 'trackerd health' checks
this installation (each has --help).

Every option can also come from the environment: HOST and PORT (as in the original server),
TRACKERD_SOURCE, TRACKERD_FPS, TRACKERD_HEARTBEAT_INTERVAL_S, TRACKERD_HEARTBEAT_TIMEOUT_S,
TRACKERD_MAX_MESSAGE_BYTES, TRACKERD_GRACEFUL_TIMEOUT_S, TRACKERD_HANDSHAKE_TIMEOUT_S,
TRACKERD_STATS_INTERVAL_S, TRACKERD_LOG_LEVEL, TRACKERD_LOG_FORMAT, TRACKERD_MAX_CONNECTIONS,
TRACKERD_RATE_LIMIT_PER_S, TRACKERD_RATE_LIMIT_BURST, TRACKERD_SEND_TIMEOUT_S,
TRACKERD_SOURCE_TIMEOUT_S, TRACKERD_ALLOWED_ORIGINS, TRACKERD_CERTFILE, TRACKERD_KEYFILE.
Flags win. The shared token is TRACKERD_TOKEN, from the environment only (a flag would show
in the process list).

HTTP on the same port: GET /healthz (200, or 503 while the source is failing) and
GET /metrics (Prometheus text format). 'trackerd health' checks an installation.
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trackerd",
        description="Real-time eye-tracking WebSocket server: streams eye_data to every client "
        "that sends start_tracking.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--host", help=f"interface to listen on (default {DEFAULT_HOST}; 0.0.0.0 for all)"
    )
    p.add_argument(
        "--port", type=int, help=f"TCP port (default {DEFAULT_PORT}; 0 picks a free one)"
    )
    p.add_argument(
        "--source",
        help="what to watch: auto (cameras 0, 1, 2; default), a camera index, a video file "
        "(played on a loop at its own speed), a folder of images, a stream URL "
        "(rtsp://, http://), or demo (the bundled real face clip)",
    )
    p.add_argument(
        "--fps", type=float, help="analyse at most this many frames a second (default: all)"
    )
    p.add_argument(
        "--heartbeat-interval",
        dest="heartbeat_interval_s",
        type=float,
        help="seconds between WebSocket pings to each client "
        f"(default {DEFAULT_HEARTBEAT_INTERVAL_S:g})",
    )
    p.add_argument(
        "--heartbeat-timeout",
        dest="heartbeat_timeout_s",
        type=float,
        help=f"drop a client that does not answer a ping within this many seconds "
        f"(default {DEFAULT_HEARTBEAT_TIMEOUT_S:g})",
    )
    p.add_argument(
        "--max-message-bytes",
        type=int,
        help=f"largest client message; larger ones close the connection with 1009 "
        f"(default {DEFAULT_MAX_MESSAGE_BYTES})",
    )
    p.add_argument(
        "--graceful-timeout",
        dest="graceful_timeout_s",
        type=float,
        help=f"on SIGTERM/SIGINT, seconds clients get to see their 1001 close "
        f"(default {DEFAULT_GRACEFUL_TIMEOUT_S:g})",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        help=f"WebSocket clients at once; more get 503 (default {DEFAULT_MAX_CONNECTIONS})",
    )
    p.add_argument(
        "--rate-limit",
        dest="rate_limit_per_s",
        type=float,
        help=f"commands per second a client may send; beyond it an error, and on a sustained "
        f"flood a 1008 close (default {DEFAULT_RATE_LIMIT_PER_S:g})",
    )
    p.add_argument(
        "--rate-limit-burst",
        type=int,
        help=f"commands a client may send at once (default {DEFAULT_RATE_LIMIT_BURST})",
    )
    p.add_argument(
        "--send-timeout",
        dest="send_timeout_s",
        type=float,
        help=f"drop a client whose socket takes nothing for this many seconds "
        f"(default {DEFAULT_SEND_TIMEOUT_S:g})",
    )
    p.add_argument(
        "--source-timeout",
        dest="source_timeout_s",
        type=float,
        help=f"a source that takes longer than this to open or to deliver a frame has failed "
        f"(default {DEFAULT_SOURCE_TIMEOUT_S:g})",
    )
    p.add_argument(
        "--allowed-origins",
        help="comma-separated origins whose web pages may connect (https://app.example.com), "
        "or * for any (default: localhost pages only when bound to localhost, any otherwise)",
    )
    p.add_argument("--certfile", help="PEM certificate chain: serve wss:// and https:// only")
    p.add_argument("--keyfile", help="PEM private key, if not in --certfile")
    p.add_argument("--log-level", choices=LOG_LEVELS, type=str.upper, help="default INFO")
    p.add_argument(
        "--log-format", choices=LOG_FORMATS, help="text (default) or json: one object per line"
    )
    p.add_argument(
        "--stats-interval",
        dest="stats_interval_s",
        type=float,
        help=f"seconds between stats lines in the log (default {DEFAULT_STATS_INTERVAL_S:g})",
    )
    return p


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(list(argv))
    try:
        settings = Settings.load(vars(args), os.environ)
    except SettingsError as exc:
        print(f"trackerd: invalid setting: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    _raise_fd_limit(settings.max_connections + app.SPARE_CONNECTIONS + FDS_OF_OUR_OWN)
    failure = ""
    try:
        trio.run(_serve, settings)
    except* SettingsError as group:
        failure = f"invalid setting: {group.exceptions[0]}"
    except* CascadeError as group:
        failure = str(group.exceptions[0])
    except* app.ListenError as group:  # only listening: a later OSError is a bug, and says so
        failure = str(group.exceptions[0])  # it names the host, the port and why
    if failure:
        print(f"trackerd: {failure}", file=sys.stderr)
        return 1
    return 0


def _raise_fd_limit(wanted: int) -> None:
    """Every client is a file descriptor, and many systems start a process with a soft limit of
    1024: raise it towards ``wanted`` as far as the hard limit allows, and say if that is short."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        log.warning(
            "the open-file limit is %d; max_connections needs about %d (raise ulimit -n)",
            target,
            wanted,
        )


async def _serve(settings: Settings) -> None:
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signal, stop)
        await app.run(settings, stop=stop)
        nursery.cancel_scope.cancel()


async def _stop_on_signal(stop: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("%s received", signal.Signals(signum).name)
            stop.set()
            return
