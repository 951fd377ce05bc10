"""The nursery: the capture task and the WebSocket server, supervised together.

``run`` is what ``trackerd`` runs and what tests and benchmarks start with ``nursery.start``:
it reports the bound port once connections are accepted. Setting ``stop`` shuts down in order:
stop accepting, close every client with 1001 within ``graceful_timeout_s``, release the source.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from trackerd import __version__, http
from trackerd.capture import Capture, FrameAnalyzer, OpenSource
from trackerd.hub import Hub
from trackerd.metrics import CONTENT_TYPE, Metrics
from trackerd.server import CLOSE_GOING_AWAY, Server
from trackerd.settings import Settings
from trackerd.sources import open_source
from trackerd.tracker import Tracker

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Running:
    """What ``run`` hands to whoever started it, once it accepts connections."""

    port: int
    server: Server
    hub: Hub
    capture: Capture
    metrics: Metrics


serve_source: OpenSource = functools.partial(open_source, loop_files=True)
"""How the server opens ``--source``: like ``analyze``, but a served file plays on a loop."""


async def run(
    settings: Settings,
    *,
    open_source: OpenSource = serve_source,
    make_tracker: Callable[[], FrameAnalyzer] = Tracker,
    stop: trio.Event | None = None,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled or until ``stop`` is set. ``open_source`` and ``make_tracker``
    are where tests inject failing sources and the fan-out benchmark a synthetic analyzer;
    the :class:`Running` record gives them the port and the parts to inspect."""
    stop = stop if stop is not None else trio.Event()
    hub = Hub()
    server = Server(settings, hub)
    capture = Capture(settings, hub, open_source, make_tracker())
    metrics = Metrics(server, hub, capture, __version__)
    routes = _routes(metrics)
    listeners = await _listen(settings)
    async with trio.open_nursery() as root:
        await root.start(capture.run)
        root.start_soon(_log_stats, metrics, settings.stats_interval_s)
        async with trio.open_nursery() as handlers:
            accepting = trio.CancelScope()

            async def connection(stream: trio.SocketStream) -> None:
                await _connection(stream, settings, server, routes)

            await handlers.start(_accept, connection, listeners, handlers, accepting)
            port = listeners[0].socket.getsockname()[1]
            log.info("listening on ws://%s:%d (source: %s)", settings.host, port, settings.source)
            task_status.started(Running(port, server, hub, capture, metrics))
            await stop.wait()

            log.info("shutting down: closing %d clients", server.connected)
            accepting.cancel()
            for listener in listeners:
                await listener.aclose()
            with trio.move_on_after(settings.graceful_timeout_s):
                await server.close_all(CLOSE_GOING_AWAY, "server shutting down")
            handlers.cancel_scope.cancel()
        # The capture releases its source in a shielded finally as it is cancelled.
        root.cancel_scope.cancel()


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


async def _connection(
    stream: trio.SocketStream, settings: Settings, server: Server, routes: dict[str, http.Route]
) -> None:
    """One TCP connection: a WebSocket upgrade goes to the server, anything else is HTTP."""
    try:
        with trio.fail_after(settings.handshake_timeout_s):
            head = await http.read_head(stream)
    except (http.BadRequest, trio.TooSlowError, trio.BrokenResourceError) as exc:
        status = exc.status if isinstance(exc, http.BadRequest) else 408
        with trio.move_on_after(1.0):
            # Best effort: the peer may be gone or may not be reading.
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await http.respond(stream, http.Response(status, "text/plain", b""), head_only=True)
        await stream.aclose()
        return
    if not head.upgrade:
        try:
            await http.serve_http(stream, head, routes)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            log.debug("HTTP client left before its response")
        finally:
            await stream.aclose()
        return
    try:
        await server.serve_stream(http.ReplayStream(stream, head.raw))
    finally:
        await stream.aclose()


def _routes(metrics: Metrics) -> dict[str, http.Route]:
    async def healthz() -> http.Response:
        healthy, body = metrics.health()
        return http.Response(200 if healthy else 503, "application/json", body)

    async def prometheus() -> http.Response:
        return http.Response(200, CONTENT_TYPE, metrics.prometheus())

    return {"/healthz": healthz, "/metrics": prometheus}


async def _log_stats(metrics: Metrics, interval_s: float) -> None:
    while True:
        await trio.sleep(interval_s)
        log.info("stats", extra={"stats": metrics.stats_line()})


async def _listen(settings: Settings) -> list[trio.SocketListener]:
    listeners = await trio.open_tcp_listeners(settings.port, host=settings.host)
    if settings.port == 0 and len(listeners) > 1:
        # "localhost" may resolve to both 127.0.0.1 and ::1, and port 0 would then give each
        # its own port. Keep one (IPv4 first), so that there is one port to report.
        listeners.sort(key=lambda li: li.socket.family != socket.AF_INET)
        for extra in listeners[1:]:
            await extra.aclose()
        listeners = listeners[:1]
    return listeners
