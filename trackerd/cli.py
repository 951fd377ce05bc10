"""The ``trackerd`` command: serve by default, or run a subcommand.

``trackerd [options]`` starts the server; ``trackerd analyze PATH...`` analyses files offline;
``trackerd health`` checks the installation; ``trackerd report SID`` prints a session's report.
Each subcommand owns its own argument parser (``trackerd analyze --help``).

Only the standard library and the settings are imported at the top: the server's dependencies
are imported when serving, so that ``trackerd health`` still runs, and names the culprit, when
one of them does not import.

Exit status: 0 after a signal; 2 for a setting refused at start-up (a bad value, a source file
that does not exist); 1 when the server cannot start (the port is taken, a certificate or the
cascades do not load). Anything else that escapes is a bug, and surfaces as its traceback.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import resource
import signal
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from trackerd import options
from trackerd.settings import Settings, SettingsError

if TYPE_CHECKING:
    import trio

log = logging.getLogger("trackerd")

FDS_OF_OUR_OWN = 64
"""Descriptors beside the connections: the source, logs, trio's wakeup pipe, libraries."""

EPILOG_COMMANDS = """\
Other commands: 'trackerd analyze PATH...' analyses files offline; 'trackerd health' checks
this installation; 'trackerd report SID' prints a session's report (each has --help)."""

EPILOG_HTTP = """\
HTTP on the same port: GET /healthz (liveness: 200, or 503 while the source is failing),
GET /readyz (readiness: 200, or 503 from SIGTERM on) and GET /metrics (Prometheus text)."""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("analyze", "health"):
        from trackerd.ops import logs

        # OpenCV's and FFmpeg's own lines ("moov atom not found") would land in the middle of
        # the report, which names what failed itself: silenced, and what other native code
        # writes to fd 2 (libjpeg) is captured as log records, redacted (OpenCV quotes a
        # stream URL it cannot open whole, password included). Before any source is opened:
        # FFmpeg reads its level once.
        logs.configure("WARNING", "text", quiet_native=True)
    if args and args[0] == "analyze":
        from trackerd.analyze import main as analyze_main

        return analyze_main(args[1:])
    if args and args[0] == "report":
        from trackerd.platform.records import report_main

        return report_main(args[1:])
    if args and args[0] == "health":
        from trackerd.ops.health import main as health_main

        return health_main(args[1:])
    return serve(args)


def parser() -> argparse.ArgumentParser:
    p = options.Parser(
        prog="trackerd",
        description="Real-time eye-tracking WebSocket server: streams eye_data to every client "
        "that sends start_tracking.",
        epilog="\n\n".join((EPILOG_COMMANDS, options.environment_help(), EPILOG_HTTP)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    options.add_arguments(p)
    return p


def serve(argv: Sequence[str]) -> int:
    """``trackerd [options]``: check the settings, then serve until SIGTERM or SIGINT."""
    args = parser().parse_args(list(argv))
    import trio

    from trackerd.ops import logs
    from trackerd.ops.workers import supervise, this_worker
    from trackerd.sources import SourceError, check_source

    # Asked for before the settings are known to be valid: a failure to start must be a JSON
    # line too when JSON was asked for, or a log pipeline loses the one line that matters.
    json_wanted = (args.log_format or os.environ.get("TRACKERD_LOG_FORMAT", "")).lower() == "json"
    worker = this_worker()
    flags = vars(args)
    if worker is not None:
        # The supervisor's port, which is the one it reserved when asked for port 0: given in
        # the environment, so that a worker's command line is the supervisor's own.
        flags["port"] = worker.port
    try:
        settings = Settings.load(flags, os.environ)
        check_source(settings.source)
    except SettingsError as exc:
        _report(f"invalid setting: {exc}", json_wanted)
        return 2
    except SourceError as exc:
        _report(f"invalid setting: source: {exc}", json_wanted)
        return 2
    index = None if worker is None else worker.index
    logs.configure(settings.log_level, settings.log_format, worker=index)
    if settings.workers > 1 and worker is None:
        try:
            return supervise(settings, argv)
        except OSError as exc:  # the port is taken
            _report(f"cannot listen on {settings.host}:{settings.port}: {exc}", json_wanted)
            return 1
    # Not before: a --workers supervisor never serves, and these bring in the tracker (numba,
    # OpenCV): ~120 MiB it would hold for nothing. The analysis side's warm-up starts first, to
    # run beside the network side's imports.
    from trackerd.vision.tracker import warm_up_soon

    warmed = warm_up_soon()
    from trackerd import app
    from trackerd.net.peers import SPARE_CONNECTIONS
    from trackerd.vision.cascades import CascadeError

    _raise_fd_limit(settings.max_connections + SPARE_CONNECTIONS + FDS_OF_OUR_OWN)
    failure = ""
    try:
        trio.run(_serve, settings, index or 0, warmed)
    except* SettingsError as group:  # a certificate that does not load
        failure = f"invalid setting: {_first(group)}"
    except* CascadeError as group:
        failure = str(_first(group))
    except* app.ListenError as group:  # the message says host, port and why
        failure = str(_first(group))
    if failure:
        _report(failure, settings.log_format == "json")
        return 1
    return 0


def _first(group: BaseExceptionGroup[Exception]) -> Exception:
    """The first exception in ``group``, however deep: nurseries nest their groups."""
    first: Exception | BaseExceptionGroup[Exception] = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


def _report(failure: str, json_wanted: bool) -> None:
    """Why the server could not start: one plain ``trackerd: ...`` line, or a JSON log line."""
    if json_wanted:
        from trackerd.ops import logs

        logs.configure("ERROR", "json")
        log.error("trackerd: %s", failure)
    else:
        print(f"trackerd: {failure}", file=sys.stderr)


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


async def _serve(settings: Settings, worker: int, warmed: Callable[[], None]) -> None:
    import trio

    from trackerd import app

    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signal, stop)
        async with trio.open_nursery() as serving:  # until app.run returns
            running = await serving.start(
                functools.partial(app.run, stop=stop, worker=worker, warmed=warmed), settings
            )
            if worker == 0:  # every worker serves the page: one line says where
                log.info("%s", page_line(settings.host, running.port, tls=settings.tls))
        nursery.cancel_scope.cancel()


EVERY_ADDRESS = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}
"""A host that binds every address, and the one a browser on this machine reaches it by."""


def page_line(host: str, port: int, *, tls: bool) -> str:
    """The start-up line that says where the page is, with a host a browser can open: a
    browser cannot go to 0.0.0.0 (bound to every address), so the line gives the loopback
    address, and says what to use from another machine."""
    scheme = "https" if tls else "http"
    bare = host.strip().strip("[]")
    local = EVERY_ADDRESS.get(bare)
    if local is not None:
        return (
            f"page: {scheme}://{local}:{port}/ (bound to every address: from another machine, "
            f"this machine's name or address in place of {local})"
        )
    shown = f"[{bare}]" if ":" in bare else bare
    return f"page: {scheme}://{shown}:{port}/"


async def _stop_on_signal(stop: trio.Event) -> None:
    """The first SIGTERM or SIGINT sets ``stop``, which starts the drain (see
    :func:`trackerd.app.run`). The receiver stays open until the process ends, so that a second
    signal (Ctrl-C twice, a supervisor forwarding one the terminal also sent) is logged and
    changes nothing, rather than raising KeyboardInterrupt in the middle of the drain."""
    import trio

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            log.info("%s received%s", name, ": already draining" if stop.is_set() else "")
            stop.set()
