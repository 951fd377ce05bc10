"""Who may connect: the Origin allow-list and the shared token, checked on the request head.

A WebSocket is not covered by the browser's same-origin policy: any page the user visits could
open ``ws://localhost:5000`` and read the camera's data. Browsers always send ``Origin`` with a
WebSocket handshake, so the server refuses (403) origins that are not allowed:

- ``allowed_origins`` empty and bound to a loopback host (the default): pages served from
  localhost, 127.x or [::1] (any port, http or https);
- ``allowed_origins`` empty and bound to any other host: any origin (``serve`` warns at start-up);
- otherwise exactly the listed origins, or any if the list holds ``*``;
- in every case, the server's own origin: the page trackerd serves at ``/`` connects back to the
  host and port it was loaded from, so its Origin names the same host and port as the request's
  Host header (see :meth:`Access.own_origin` for when that is trusted).

A client that sends no Origin is not a browser page (a native app, a script, a proxy); the
Origin check cannot stop those, the token can. With ``token`` set, every WebSocket upgrade and
``/metrics`` must carry it, as ``Authorization: Bearer <token>`` or ``?token=<token>`` (browsers
cannot set headers on a WebSocket), compared in constant time; 401 otherwise. ``/healthz`` stays
open: platforms probe it without credentials and it says nothing about anyone's face.

With ``signing_keys`` set, a WebSocket upgrade may present a session token instead, in the same
two places (:mod:`trackerd.platform.tokens`); without the shared token set too, it must. Each way a
session token fails is its own 401 reason and ``cause`` (``token-expired``, ``token-kid``...),
which ``/access`` reports and ``/metrics`` counts. A session token opens the WebSocket only, never
``/metrics``: that stays the operator's, behind the shared token. An upgrade that is let in
carries a :class:`~trackerd.platform.tokens.Grant`: the token's claims, or everything for the
shared token or when no token is asked.
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qs, urlsplit

from trackerd.net.web import Head
from trackerd.platform import tokens
from trackerd.platform.tokens import EVERYTHING, Grant
from trackerd.settings import Settings

LOCAL_ORIGIN: Final = re.compile(rb"^https?://(localhost|127(\.\d{1,3}){3}|\[::1\])(:\d{1,5})?$")


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    reason: str
    """For the log and the response body; never echoes what the client sent as a token."""
    cause: str
    """A short name for /metrics (``origin``, ``token``, ``host``, ``handshake``, ...)."""
    headers: tuple[tuple[str, str], ...] = ()


ORIGIN_REFUSED: Final = Refusal(403, "origin not allowed", "origin")
BEARER: Final = (("WWW-Authenticate", "Bearer"),)
TOKEN_MISSING: Final = Refusal(401, "token required", "token", BEARER)
TOKEN_WRONG: Final = Refusal(401, "wrong token", "token", BEARER)
ADMIN_OFF: Final = Refusal(404, "no TRACKERD_ADMIN_KEY is set: the sessions API is off", "admin")
ADMIN_MISSING: Final = Refusal(401, "admin key required, as Authorization: Bearer", "admin", BEARER)
ADMIN_WRONG: Final = Refusal(401, "wrong admin key", "admin", BEARER)
HOST_REFUSED: Final = Refusal(421, "host not served here", "host")
"""421 Misdirected Request: this server does not answer for that name."""
LOCAL_HOST: Final = re.compile(rb"^(localhost|127(\.\d{1,3}){3}|\[::1\])(:\d{1,5})?$")
PROBE_PATHS: Final = frozenset({"/healthz", "/readyz"})
"""Answered whatever host the request names (plain requests, not upgrades): kubelet and cloud
load balancers probe a pod or instance by its address (``Host: 10.1.2.3:5000``), which
``--allowed-hosts tracker.example.com`` would refuse with 421, failing every probe. Safe to
exempt: they are open without the token already, so anyone who reaches the port reads them with
whatever Host it likes; the Host check only keeps a browser page (DNS rebinding) from reading
what the port serves, and here that is the server's state (ok or failing, and why the source
fails; ready, full or draining), its version, and how many clients and frames a second: no
client's data, no token, no session."""


class Access:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        """``clock``: Unix seconds, what a session token's ``exp`` and ``nbf`` are read against."""
        origins = settings.origins
        self.any_origin = "*" in origins or (not origins and not settings.loopback)
        self._local_only = not origins and settings.loopback
        self._origins = frozenset(o.encode() for o in origins)
        self._token = settings.token.encode()
        self._admin_key = settings.admin_key.encode()
        self._keys = settings.keys
        if self._keys:
            tokens.load()
        self._clock = clock
        hosts = settings.hosts
        self._any_host = "*" in hosts or (not hosts and not settings.loopback)
        self._local_hosts_only = not hosts and settings.loopback
        self._hosts = frozenset(h.encode() for h in hosts)
        self._tls = settings.tls

    def host_refusal(self, head: Head) -> Refusal | None:
        """None when the request names a host this server answers for. Every request is
        checked, HTTP and WebSocket alike: a page on a name that an attacker's DNS points at
        127.0.0.1 (DNS rebinding) carries that name here, and its own origin, so neither the
        Origin check nor the browser stops it from reading /metrics. The probes'
        :data:`PROBE_PATHS` are the exception."""
        hosts = head.header(b"host")
        if not hosts:
            return None  # HTTP/1.0 without one: not a browser (h11 requires it in HTTP/1.1)
        if len(hosts) > 1:
            return HOST_REFUSED
        if self._any_host or (not head.upgrade and head.path in PROBE_PATHS):
            return None
        host = hosts[0].strip().lower()
        if self._local_hosts_only:
            return None if LOCAL_HOST.match(host) else HOST_REFUSED
        name = host.rsplit(b":", 1)[0] if not host.endswith(b"]") else host
        return None if name in self._hosts or host in self._hosts else HOST_REFUSED

    def origin_allowed(self, origin: bytes | None) -> bool:
        if origin is None or self.any_origin:
            return True
        origin = origin.strip().lower().rstrip(b"/")
        if self._local_only:
            return LOCAL_ORIGIN.match(origin) is not None
        return origin in self._origins

    def own_origin(self, origin: bytes, head: Head) -> bool:
        """Whether ``origin`` is this server's own: the page at ``/``, loaded from the host and
        port this request names in its Host header.

        Trusted only when the Host header is one this server vouches for (the loopback names by
        default, or ``--allowed-hosts`` without ``*``). With any host allowed, a page on an
        attacker's name that DNS points at this server (DNS rebinding) would carry that name in
        both headers and pass; there the page must be listed in ``--allowed-origins`` instead.
        The scheme may be http or https (a TLS-terminating proxy in front makes them differ),
        but only https when this server speaks TLS itself: no plain page is served here then.
        """
        if self._any_host or self.host_refusal(head) is not None:
            return False
        hosts = head.header(b"host")
        scheme, sep, authority = origin.strip().lower().rstrip(b"/").partition(b"://")
        if not hosts or not sep or scheme not in ((b"https",) if self._tls else _WEB_SCHEMES):
            return False
        return _without_default_port(authority) == _without_default_port(hosts[0].strip().lower())

    def token_refusal(self, head: Head) -> Refusal | None:
        """None when no shared token is asked for or the right one was presented (what
        ``/metrics`` asks; an upgrade asks :meth:`upgrade_verdict`, which knows session tokens)."""
        if not self._token:
            return None
        given = _presented_token(head)
        if given is None:
            return TOKEN_MISSING
        # Constant time in the token's content; the length is not a secret worth hiding.
        return None if hmac.compare_digest(given, self._token) else TOKEN_WRONG

    def admin_refusal(self, head: Head) -> Refusal | None:
        """None when ``TRACKERD_ADMIN_KEY`` was presented, as ``Authorization: Bearer`` only: a
        key in a URL ends up in proxies' and browsers' logs. What ``/sessions/{sid}`` asks (a
        session's report is the platform's, not the operator's: a different key)."""
        if not self._admin_key:
            return ADMIN_OFF
        for value in head.header(b"authorization"):
            scheme, _, given = value.strip().partition(b" ")
            if scheme.lower() == b"bearer":
                return None if hmac.compare_digest(given.strip(), self._admin_key) else ADMIN_WRONG
        return ADMIN_MISSING

    def upgrade_refusal(self, head: Head) -> Refusal | None:
        """Why this WebSocket upgrade is refused, or None to let it in."""
        verdict = self.upgrade_verdict(head)
        return verdict if isinstance(verdict, Refusal) else None

    def upgrade_verdict(self, head: Head) -> Refusal | Grant:
        """Why this WebSocket upgrade is refused, or what the connection may do."""
        origins = head.header(b"origin")
        if len(origins) > 1:
            return ORIGIN_REFUSED
        origin = origins[0] if origins else None
        if not self.origin_allowed(origin) and not (origin and self.own_origin(origin, head)):
            return ORIGIN_REFUSED
        if not self._keys:
            return self.token_refusal(head) or EVERYTHING
        given = _presented_token(head)
        if given is None:
            return TOKEN_MISSING
        if self._token and hmac.compare_digest(given, self._token):
            return EVERYTHING
        verdict = tokens.verify(given, self._keys, self._clock())
        if isinstance(verdict, tokens.Rejected):
            return Refusal(401, verdict.reason, verdict.cause, BEARER)
        return verdict


_WEB_SCHEMES: Final = (b"http", b"https")


def _without_default_port(authority: bytes) -> bytes:
    """``host:80`` and ``host:443`` are ``host``: browsers leave default ports out of Origin and
    Host alike, but a proxy or a hand-written client may not."""
    for default in (b":80", b":443"):
        if authority.endswith(default):
            return authority[: -len(default)]
    return authority


def _presented_token(head: Head) -> bytes | None:
    for value in head.header(b"authorization"):
        scheme, _, credentials = value.strip().partition(b" ")
        if scheme.lower() == b"bearer":
            return credentials.strip()
    query = parse_qs(urlsplit(head.target).query).get("token")
    return query[0].encode() if query else None
