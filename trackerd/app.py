"""The nursery: the capture task and the WebSocket server, supervised together.

``run`` is what ``trackerd`` runs and what tests and benchmarks start with ``nursery.start``:
it reports the bound port once connections are accepted. Setting ``stop`` shuts down in order:
stop accepting, close every client with 1001 within ``graceful_timeout_s``, release the source.

Each TCP connection goes: TLS (with ``certfile``), the request head within
``handshake_timeout_s``, then either plain HTTP (``/healthz``, ``/metrics``) or a WebSocket
upgrade, which is refused before the handshake if its Origin or token is not right (403, 401,
see :mod:`trackerd.access`) or if ``max_connections`` clients are already in (503).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from trackerd import __version__, http
from trackerd.access import Access
from trackerd.capture import Capture, FrameAnalyzer, OpenSource
from trackerd.errors import TrackerdError
from trackerd.hub import Hub
from trackerd.metrics import CONTENT_TYPE, Metrics
from trackerd.server import CLOSE_GOING_AWAY, CLOSE_TIMEOUT_S, Server
from trackerd.settings import Settings, SettingsError
from trackerd.sources import open_source
from trackerd.tracker import Tracker

log = logging.getLogger(__name__)

SPARE_CONNECTIONS = 64
"""TCP connections allowed beyond ``max_connections``: HTTP probes and handshakes under way.
Beyond that a new connection is closed at once, so idle connections that never send a request
cannot use up the process's file descriptors while they wait for the handshake timeout."""


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
    tls = tls_context(settings)
    hub = Hub()
    server = Server(settings, hub)
    capture = Capture(settings, hub, open_source, make_tracker())
    metrics = Metrics(server, hub, capture, __version__)
    gate = _Gate(settings, server, Access(settings), _routes(metrics), tls)
    listeners = await _listen(settings)
    async with trio.open_nursery() as root:
        await root.start(capture.run)
        root.start_soon(_log_stats, metrics, settings.stats_interval_s)
        async with trio.open_nursery() as handlers:
            accepting = trio.CancelScope()

            await handlers.start(_accept, gate.connection, listeners, handlers, accepting)
            port = listeners[0].socket.getsockname()[1]
            scheme = "wss" if tls else "ws"
            log.info(
                "listening on %s://%s:%d (source: %s)", scheme, settings.host, port, settings.source
            )
            if gate.access.any_origin and not settings.token:
                log.warning(
                    "any web page can connect and read the tracking data (bound to %s with no "
                    "allowed origins and no token): set TRACKERD_ALLOWED_ORIGINS or TRACKERD_TOKEN",
                    settings.host,
                )
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


class _Gate:
    """Every TCP connection passes here first: TLS, the request head, who may come in."""

    def __init__(
        self,
        settings: Settings,
        server: Server,
        access: Access,
        routes: dict[str, http.Route],
        tls: ssl.SSLContext | None,
    ) -> None:
        self.settings = settings
        self.server = server
        self.access = access
        self.routes = routes
        self.tls = tls
        self.open = 0
        self._max_open = settings.max_connections + SPARE_CONNECTIONS

    async def connection(self, tcp: trio.SocketStream) -> None:
        if self.open >= self._max_open:
            self.server.refused[503] += 1
            await tcp.aclose()
            return
        self.open += 1
        stream: trio.abc.Stream = tcp
        if self.tls is not None:
            # https_compatible: browsers often close without TLS's close_notify.
            stream = trio.SSLStream(tcp, self.tls, server_side=True, https_compatible=True)
        try:
            await self._serve(stream)
        finally:
            self.open -= 1
            # A TLS close sends close_notify, which waits for room in a full socket buffer.
            with trio.move_on_after(CLOSE_TIMEOUT_S):
                await stream.aclose()
            await tcp.aclose()

    async def _serve(self, stream: trio.abc.Stream) -> None:
        """One connection: a WebSocket upgrade goes to the server, anything else is HTTP."""
        try:
            with trio.fail_after(self.settings.handshake_timeout_s):
                head = await http.read_head(stream)  # the TLS handshake happens in here too
        except (http.BadRequest, trio.TooSlowError, trio.BrokenResourceError) as exc:
            status = exc.status if isinstance(exc, http.BadRequest) else 408
            await self._refuse(stream, http.Response(status, "text/plain", b""))
            return
        if not head.upgrade:
            try:
                await http.serve_http(stream, head, self.routes, self._refuse_http)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                log.debug("HTTP client left before its response")
            return
        refusal = self.access.upgrade_refusal(head)
        if refusal is not None:
            log.debug("WebSocket upgrade refused: %s", refusal.reason)
            headers = (("WWW-Authenticate", "Bearer"),) if refusal.status == 401 else ()
            body = f"{refusal.reason}\n".encode()
            await self._refuse(stream, http.Response(refusal.status, TEXT, body, headers))
        elif not self.server.has_room():
            log.debug("WebSocket upgrade refused: %d clients", self.server.admitted)
            body = b"too many connections\n"
            await self._refuse(stream, http.Response(503, TEXT, body, (("Retry-After", "5"),)))
        else:
            await self.server.serve_stream(http.ReplayStream(stream, head.raw))

    def _refuse_http(self, path: str, head: http.Head) -> http.Response | None:
        """/metrics needs the token when one is set; /healthz never does."""
        if path == "/healthz" or self.access.token_refusal(head) is None:
            return None
        return http.Response(401, TEXT, b"token required\n", (("WWW-Authenticate", "Bearer"),))

    async def _refuse(self, stream: trio.abc.Stream, response: http.Response) -> None:
        self.server.refused[response.status] += 1
        with trio.move_on_after(CLOSE_TIMEOUT_S):
            # Best effort: the peer may be gone or may not be reading.
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await http.respond(stream, response, head_only=False)


TEXT = "text/plain; charset=utf-8"


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server's TLS context, or None without ``certfile``. A file that will not load is a
    :class:`SettingsError` at start-up, not a failure at the first client."""
    if not settings.tls:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)  # TLS 1.2 and up
    context.set_alpn_protocols(["http/1.1"])  # WebSocket upgrades are HTTP/1.1
    try:
        context.load_cert_chain(settings.certfile, settings.keyfile or None)
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"certfile/keyfile: cannot load {settings.certfile}: {exc}") from None
    return context


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


class ListenError(TrackerdError, OSError):
    """The server cannot listen: the port is taken, or the host is not this machine's."""


async def _listen(settings: Settings) -> list[trio.SocketListener]:
    try:
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
