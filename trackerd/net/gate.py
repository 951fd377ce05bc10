"""The connection gate: every TCP connection's way in, before the WebSocket server or HTTP.

A connection takes a slot (:mod:`~trackerd.net.peers`: ``max_connections`` and per address),
TLS (:mod:`~trackerd.net.tls`), its request head within ``handshake_timeout_s``, then either
plain HTTP (the routes it is given: probes, ``/metrics``, the page, ``/sessions/``) or a
WebSocket upgrade, which is refused before the handshake if its Origin or token is not right
(403, 401, :mod:`~trackerd.net.access`), if the server is full or while draining (503).

What it turns away it counts in its own :class:`GateStatistics`, which ``/metrics`` reports as
``trackerd_connections_refused`` and ``trackerd_connections_dropped``.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

import trio

from trackerd.net import page, web
from trackerd.net.access import Access, Refusal
from trackerd.net.framing import CLOSE_TIMEOUT_S
from trackerd.net.handshake import HandshakeStream, handshake_refusal
from trackerd.net.peers import Peers, Slot
from trackerd.net.server import Server
from trackerd.platform.tokens import Grant
from trackerd.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GateStatistics:
    """What the gate turned away so far."""

    refused: Mapping[tuple[int, str], int]
    """Connections answered with an HTTP error instead of a WebSocket, by (status, cause)."""
    dropped: Mapping[str, int]
    """Connections closed with no answer at all (a failed TLS handshake, nothing sent, an idle
    connection making room, a limit on connections), by cause."""


class Gate:
    """Every TCP connection passes here first: a slot, TLS, the request head, who may come in."""

    def __init__(
        self,
        settings: Settings,
        server: Server,
        access: Access,
        routes: dict[str, web.Route],
        tls: ssl.SSLContext | None,
        stop: trio.Event,
        checks: page.AccessChecks,
    ) -> None:
        self.settings = settings
        self.checks = checks
        self.stop = stop
        self.server = server
        self.access = access
        self.routes = routes
        self.tls = tls
        self.peers = Peers(settings)
        self._refused: collections.Counter[tuple[int, str]] = collections.Counter()
        self._dropped: collections.Counter[str] = collections.Counter()

    def statistics(self) -> GateStatistics:
        return GateStatistics(refused=dict(self._refused), dropped=dict(self._dropped))

    async def connection(self, tcp: trio.SocketStream) -> None:
        address = _address(tcp)
        slot = self.peers.arrive(address)
        if isinstance(slot, str):
            self._dropped[slot] += 1
            await tcp.aclose()
            return
        stream: trio.abc.Stream = tcp
        if self.tls is not None:
            # https_compatible: browsers often close without TLS's close_notify.
            stream = trio.SSLStream(tcp, self.tls, server_side=True, https_compatible=True)
        try:
            await self._serve(stream, slot)
        finally:
            self.peers.leave(slot)
            # A TLS close sends close_notify, which waits for room in a full socket buffer.
            with trio.move_on_after(CLOSE_TIMEOUT_S):
                await stream.aclose()
            await tcp.aclose()

    async def _serve(self, stream: trio.abc.Stream, slot: Slot) -> None:
        """One connection: a WebSocket upgrade goes to the server, anything else is HTTP."""
        head = await self._read_head(stream, slot)
        if head is None:
            return
        if not self.peers.headed(slot, head.header(b"x-forwarded-for")):
            body = b"too many connections from this address\n"
            await self._refuse(stream, Refusal(429, body.decode().strip(), "per-address"))
            return
        peer = _peer_label(stream, slot)
        refusal = self.access.host_refusal(head)
        if refusal is not None:
            level = logging.INFO if head.upgrade else logging.DEBUG  # a page that cannot connect
            log.log(level, "%s: %s %s refused: %s", peer, head.method, head.path, refusal.reason)
            await self._refuse(stream, refusal)
        elif not head.upgrade:
            try:
                # /access is throttled per client: its route knows whose request it answers.
                routes = {**self.routes, page.ACCESS_PATH: self.checks.route(slot.client)}
                await web.serve_http(stream, head, routes, self._refuse_http)
                await web.linger(stream)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                log.debug("HTTP client left before its response")
        elif isinstance(verdict := self._upgrade_verdict(head), Refusal):
            # INFO, as above: why a page cannot connect is the first thing its owner asks the log.
            origin = b", ".join(head.header(b"origin")).decode("latin-1") or "none"
            log.info("%s: WebSocket upgrade refused (Origin: %s): %s", peer, origin, verdict.reason)
            await self._refuse(stream, verdict)
        else:
            replay = HandshakeStream(stream, head)
            await self.server.serve_stream(
                replay, skip=head.size, peer=peer, address=slot.client, grant=verdict
            )

    async def _read_head(self, stream: trio.abc.Stream, slot: Slot) -> web.Head | None:
        """The request head, or None when the connection is over before one: evicted to make
        room (its slot is gone already), TLS failed, nothing sent, or a refusal was written."""
        dropped = self._dropped
        tls_done = not isinstance(stream, trio.SSLStream)
        with slot.scope:
            try:
                with trio.fail_after(self.settings.handshake_timeout_s):
                    if isinstance(stream, trio.SSLStream):
                        try:
                            await stream.do_handshake()
                        except trio.BrokenResourceError:
                            dropped["tls"] += 1
                            return None
                        tls_done = True
                    return await web.read_head(stream)
            except web.Vanished:
                dropped["closed-early"] += 1
            except trio.BrokenResourceError:
                dropped["reset"] += 1
            except trio.TooSlowError:
                if not tls_done:
                    dropped["tls-timeout"] += 1
                else:
                    await self._refuse(stream, Refusal(408, "request timeout", "timeout"))
            except web.BadRequest as exc:
                cause = "head-too-large" if exc.status == 431 else "request"
                await self._refuse(stream, Refusal(exc.status, str(exc), cause))
        if slot.evicted:
            dropped["evicted"] += 1
        return None

    def _upgrade_verdict(self, head: web.Head) -> Refusal | Grant:
        """Why this upgrade is refused, or what the connection may do (its token's grant)."""
        verdict = handshake_refusal(head) or self.access.upgrade_verdict(head)
        if isinstance(verdict, Refusal):
            return verdict
        if self.stop.is_set():
            # A balancer retries another replica on this 503 (nginx: proxy_next_upstream).
            return Refusal(503, "server shutting down", "draining", (("Retry-After", "1"),))
        if not self.server.has_room():
            return Refusal(503, "too many connections", "capacity", (("Retry-After", "5"),))
        return verdict

    def _refuse_http(self, path: str, head: web.Head) -> web.Response | None:
        """/metrics needs the token when one is set; the probes and the page never do; a
        session's report needs the admin key (and only it)."""
        if path == SESSIONS_PATH:
            refusal = self.access.admin_refusal(head)
        elif path in _OPEN_PATHS:
            return None
        else:
            refusal = self.access.token_refusal(head)
        return None if refusal is None else _response(refusal)

    async def _refuse(self, stream: trio.abc.Stream, refusal: Refusal) -> None:
        """Answer with ``refusal`` and close gently, so that the answer is read, not reset."""
        self._refused[refusal.status, refusal.cause] += 1
        with trio.move_on_after(CLOSE_TIMEOUT_S):
            # Best effort: the peer may be gone or may not be reading.
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await web.respond(stream, _response(refusal), head_only=False)
        await web.linger(stream)


def _response(refusal: Refusal) -> web.Response:
    return web.Response(refusal.status, TEXT, f"{refusal.reason}\n".encode(), refusal.headers)


def _address(tcp: trio.SocketStream) -> str:
    """The peer's IP address; "?" if it reset before we asked."""
    try:
        return str(tcp.socket.getpeername()[0])
    except OSError:
        return "?"


def _peer_label(stream: trio.abc.Stream, slot: Slot) -> str:
    """``host:port`` for the logs, over TLS too; behind a proxy, the client's address too."""
    tcp = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    assert isinstance(tcp, trio.SocketStream)
    try:
        port = tcp.socket.getpeername()[1]
    except OSError:
        port = "?"
    label = f"{slot.address}:{port}"
    return f"{slot.client} (via {label})" if slot.client != slot.address else label


TEXT = "text/plain; charset=utf-8"
SESSIONS_PATH = "/sessions/"
"""``GET /sessions/{sid}``, the admin key's route (:meth:`Access.admin_refusal`)."""
_OPEN_PATHS = frozenset({"/healthz", "/readyz", *page.OPEN_PATHS})
