"""The nursery: the capture task and the WebSocket server, supervised together.

``run`` is what ``trackerd`` runs and what tests and benchmarks start with ``nursery.start``:
it reports the bound port once connections are accepted. Setting ``stop`` shuts down in order:
stop accepting, close every client with 1001 within ``graceful_timeout_s``, release the source.
"""

from __future__ import annotations

import functools
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

import trio
from trio_websocket import WebSocketServer

from trackerd.capture import Capture, FrameAnalyzer, OpenSource
from trackerd.hub import Hub
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
    listeners = await _listen(settings)
    async with trio.open_nursery() as root:
        await root.start(capture.run)
        async with trio.open_nursery() as handlers:
            websocket = WebSocketServer(
                server.handle,
                listeners,
                handler_nursery=handlers,
                max_message_size=settings.max_message_bytes,
                # Messages are handled as they come; a client that floods waits on TCP.
                message_queue_size=1,
                disconnect_timeout=settings.graceful_timeout_s,
            )
            accepting = trio.CancelScope()
            await handlers.start(_accept, websocket, accepting)
            port = listeners[0].socket.getsockname()[1]
            log.info("listening on ws://%s:%d (source: %s)", settings.host, port, settings.source)
            task_status.started(Running(port, server, hub, capture))
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
    websocket: WebSocketServer,
    scope: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[WebSocketServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    with scope:
        await websocket.run(task_status=task_status)


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
