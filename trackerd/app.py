"""The nursery: the capture task and the WebSocket server, supervised together.

``run`` is what ``trackerd`` runs and what tests and benchmarks start with ``nursery.start``:
it reports the bound port once connections are accepted. Setting ``stop`` (SIGTERM) drains in
this order: ``/readyz`` answers 503 and new WebSocket upgrades get 503 at once, so that a load
balancer sends new clients elsewhere; after ``drain_delay_s`` every client is closed with 1001
within ``graceful_timeout_s``; then the listeners close and the source is released. The port
keeps answering until the clients are closed, so a balancer polling ``/readyz`` reads 503
rather than a refused connection, and a client that reconnects at once is refused cleanly.

Each TCP connection passes the gate (:mod:`trackerd.net.gate`: a slot, TLS, the request head,
who may come in), then goes to the WebSocket server or to the HTTP routes built here
(``/healthz``, ``/readyz``, ``/metrics``, ``/sessions/``, the page of :mod:`trackerd.net.page`).
"""

from __future__ import annotations

import functools
import json
import logging
import socket
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

import kernels
from trackerd import __version__
from trackerd.capture import Capture, OpenSource
from trackerd.errors import TrackerdError
from trackerd.hub import Hub
from trackerd.net import page, protocol, web
from trackerd.net.access import Access
from trackerd.net.gate import SESSIONS_PATH, Gate
from trackerd.net.server import CLOSE_GOING_AWAY, Server
from trackerd.net.sessions import Sessions
from trackerd.net.tls import tls_context
from trackerd.ops.metrics import CONTENT_TYPE, Metrics, Snapshot
from trackerd.ops.workers import CameraElsewhere, listen_shared, naming
from trackerd.platform.camera import CameraSession
from trackerd.platform.episodes import EpisodeSettings
from trackerd.platform.records import Records
from trackerd.platform.store import StoreError
from trackerd.redact import redact
from trackerd.settings import Settings
from trackerd.sources import NO_SOURCE, open_source
from trackerd.vision.observation import FrameAnalyzer
from trackerd.vision.tracker import Tracker, TrackerSettings, warm_up

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Running:
    """What ``run`` hands to whoever started it, once it accepts connections."""

    port: int
    server: Server
    hub: Hub
    capture: Capture
    metrics: Metrics
    gate: Gate


def tracker_settings(settings: Settings) -> TrackerSettings:
    """The tracker's defaults, with the limits the server's options set (the head's)."""
    return TrackerSettings(
        max_head_yaw_deg=settings.max_head_yaw_deg,
        max_head_pitch_deg=settings.max_head_pitch_deg,
        head_turn_s=settings.head_turn_s,
    )


serve_source: OpenSource = functools.partial(open_source, loop_files=True)
"""How the server opens ``--source``: like ``analyze``, but a served file plays on a loop."""


async def run(
    settings: Settings,
    *,
    open_source: OpenSource = serve_source,
    make_tracker: Callable[[], FrameAnalyzer] | None = None,
    stop: trio.Event | None = None,
    worker: int = 0,
    warmed: Callable[[], None] | None = None,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled or until ``stop`` is set. ``open_source`` and ``make_tracker``
    are where tests inject failing sources and the fan-out benchmark a synthetic analyzer;
    the :class:`Running` record gives them the port and the parts to inspect. ``worker`` is
    this process's index under ``--workers`` (see :mod:`trackerd.ops.workers`). ``warmed``
    waits for a warm-up already started (:func:`~trackerd.vision.tracker.warm_up_soon`)."""
    stop = stop if stop is not None else trio.Event()
    if make_tracker is None:
        make_tracker = functools.partial(Tracker, tracker_settings(settings))
    tls = tls_context(settings)
    hub = Hub(protocol.eye_data) if worker == 0 else CameraElsewhere(worker, settings.workers)
    metrics = Metrics(
        lambda: Snapshot(
            server.statistics(), hub.statistics(), capture.statistics(), gate.statistics()
        ),
        __version__,
    )
    capture = Capture(
        settings, hub, open_source, make_tracker(), on_frame=metrics.frame_seconds.observe
    )
    records = Records(settings, worker)
    metrics.count_records(records.statistics)
    server = Server(settings, hub, capture.statistics, Sessions(settings, make_tracker, records))
    access = Access(settings)
    checks = page.AccessChecks(access, server.has_room)
    metrics.count_access_checks(checks.statistics)
    routes = {**_routes(metrics, stop, server.sessions, records), **page.routes()}
    if settings.workers > 1:
        routes["/healthz"] = naming(routes["/healthz"], worker)
    gate = Gate(settings, server, access, routes, tls, stop, checks)
    await _warm_up(warmed)
    listeners = await _listen(settings)
    async with trio.open_nursery() as root:
        await root.start(records.run)
        await root.start(capture.run)
        root.start_soon(server.sessions.run)
        if worker == 0 and settings.source.strip() != NO_SOURCE:
            episodes = EpisodeSettings(closed_episode_s=settings.closed_episode_s)
            root.start_soon(CameraSession(hub, episodes).run, records)
        root.start_soon(_log_stats, metrics, settings.stats_interval_s)
        async with trio.open_nursery() as handlers:
            accepting = trio.CancelScope()

            await handlers.start(_accept, gate.connection, listeners, handlers, accepting)
            port = listeners[0].socket.getsockname()[1]
            scheme = "wss" if tls else "ws"
            of = f", worker {worker} of {settings.workers}" if settings.workers > 1 else ""
            log.info(
                "listening on %s://%s:%d (source: %s%s)",
                *(scheme, settings.host, port, redact(settings.source), of),
            )
            if gate.access.any_origin and not settings.token and not settings.signing_keys:
                log.warning(
                    "any web page can connect and read the tracking data (bound to %s with no "
                    "allowed origins and no token): set TRACKERD_ALLOWED_ORIGINS or TRACKERD_TOKEN",
                    settings.host,
                )
            task_status.started(Running(port, server, hub, capture, metrics, gate))
            await stop.wait()

            # /readyz and new upgrades read ``stop`` and answer 503 from here on.
            delay = settings.drain_delay_s
            log.info(
                "draining: /readyz answers 503; closing %d clients in %g s", server.connected, delay
            )
            await trio.sleep(delay)
            log.info("shutting down: closing %d clients", server.connected)
            with trio.move_on_after(settings.graceful_timeout_s):
                await server.close_all(CLOSE_GOING_AWAY, "server shutting down")
            accepting.cancel()
            for listener in listeners:
                await listener.aclose()
            handlers.cancel_scope.cancel()
        # The capture releases its source in a shielded finally as it is cancelled.
        root.cancel_scope.cancel()


async def _warm_up(warmed: Callable[[], None] | None) -> None:
    """Before listening: a candidate's first frame must not pay the process's one-time costs,
    nor the thread's that will analyse the camera's frames."""
    if warmed is not None:
        await trio.to_thread.run_sync(warmed)
    await trio.to_thread.run_sync(warm_up)
    if not kernels.COMPILED:
        log.warning(
            "the kernels were not compiled at install (no C compiler then): they run on numba's "
            "JIT, ~0.5 s more at every start and ~110 MiB more; install gcc and g++ and reinstall"
        )


async def _accept(
    handler: Callable[[trio.SocketStream], Awaitable[None]],
    listeners: list[trio.SocketListener],
    handler_nursery: trio.Nursery,
    scope: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    with scope:
        await trio.serve_listeners(
            handler, listeners, handler_nursery=handler_nursery, task_status=task_status
        )


def _routes(
    metrics: Metrics, stop: trio.Event, sessions: Sessions, records: Records
) -> dict[str, web.Route]:
    async def healthz(head: web.Head) -> web.Response:
        healthy, body = metrics.health()
        return web.Response(200 if healthy else 503, "application/json", body)

    async def readyz(head: web.Head) -> web.Response:
        """Ready to take new clients: listening, not draining, and with room for a push
        session. Not tied to the source (a push session needs none) nor to WebSocket
        connections (a full server refuses upgrades with 503 and Retry-After itself, before
        the 101). A push session is asked for after the 101, so its refusal cannot be a 503
        that a balancer retries elsewhere: ``full`` here is how the balancer learns that
        candidates sent to this replica would get ``server busy``."""
        problem = records.problem
        status = (
            "draining"
            if stop.is_set()
            else "store"
            if problem is not None
            else "full"
            if sessions.statistics().full
            else "ready"
        )
        answer = {"status": status, **({"problem": problem} if status == "store" else {})}
        body = json.dumps(answer) + "\n"
        return web.Response(200 if status == "ready" else 503, "application/json", body.encode())

    async def prometheus(head: web.Head) -> web.Response:
        return web.Response(200, CONTENT_TYPE, metrics.prometheus())

    async def session_report(head: web.Head) -> web.Response:
        """``GET /sessions/{sid}``: the session's report, so far while it is live (the admin
        key is checked before this runs, by the gate)."""
        sid = urllib.parse.unquote(head.path.removeprefix(SESSIONS_PATH))
        try:
            report = await records.report(sid)
        except StoreError as e:
            return _json(503, {"error": f"the database failed: {e}"})
        if report is None:
            return _json(404, {"error": "no such session"})
        return _json(200, report)

    return {
        "/healthz": healthz,
        "/readyz": readyz,
        "/metrics": prometheus,
        SESSIONS_PATH: session_report,
    }


def _json(status: int, body: object) -> web.Response:
    return web.Response(status, "application/json", (json.dumps(body) + "\n").encode())


async def _log_stats(metrics: Metrics, interval_s: float) -> None:
    while True:
        await trio.sleep(interval_s)
        log.info("stats", extra={"stats": metrics.stats_line()})


class ListenError(TrackerdError, OSError):
    """The server cannot listen: the port is taken, or the host is not this machine's."""


async def _listen(settings: Settings) -> list[trio.SocketListener]:
    try:
        if settings.workers > 1:
            listeners = await listen_shared(settings.host, settings.port)
        else:
            listeners = await trio.open_tcp_listeners(settings.port, host=settings.host)
    except OSError as exc:  # only here: an OSError later is not about listening
        raise ListenError(f"cannot listen on {settings.host}:{settings.port}: {exc}") from exc
    if settings.port == 0 and len(listeners) > 1:
        # "localhost" may resolve to both 127.0.0.1 and ::1, and port 0 would then give each
        # its own port. Keep one (IPv4 first), so that there is one port to report.
        listeners.sort(key=lambda li: li.socket.family != socket.AF_INET)
        for extra in listeners[1:]:
            await extra.aclose()
        listeners = listeners[:1]
    return listeners
