"""The browser side, served by trackerd itself: the live page at ``/``, the client module at
``/trackerd.js``, and ``/access``, which tells a page why its WebSocket would be refused.

The files live in ``trackerd/static/`` and are read once, when the routes are made. Caching:
every file is sent with a strong ``ETag`` (a hash of its bytes) and ``Cache-Control: no-cache``,
so a browser keeps its copy but asks each time whether it is still current (a 304 costs a few
bytes): after an upgrade of the server, pages get the new client at once, never a stale one that
no longer speaks the server's protocol.

``/access`` exists because a browser hides why a WebSocket handshake failed: a 401, a 403 and a
server that is down all look like a close with code 1006. The client module asks ``/access``
with the same Origin and token after a failed handshake, and shows the reason. It answers what
an upgrade would get, and nothing an upgrade would not tell (``Access-Control-Allow-Origin: *``
so that a page on another origin can read its own verdict).

It is also a cheap way to test tokens: it answered ~2,200 guesses a second, with no log line or
metric. So each client address (behind ``--trusted-proxies``, the forwarded one) may ask
:data:`ACCESS_CHECKS_PER_S` times a second with a burst of :data:`ACCESS_CHECKS_BURST`, and gets
429 with ``Retry-After`` beyond that (still JSON with a ``status``, which the client module
reports and retries like a lost connection). Every answer is counted by result
(:class:`AccessStatistics`, ``trackerd_access_checks_total{result}``); throttling is logged at
most once per :data:`THROTTLE_LOG_INTERVAL_S`, with how many were throttled meanwhile.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Final

import trio

from trackerd.net.access import Access
from trackerd.net.limits import AddressLimit
from trackerd.net.web import Head, Response, Route

log = logging.getLogger(__name__)

JS: Final = "text/javascript; charset=utf-8"
HTML: Final = "text/html; charset=utf-8"
CSS: Final = "text/css; charset=utf-8"

FILES: Final = {
    "/": ("index.html", HTML),
    "/trackerd.js": ("trackerd.js", JS),
    "/page.js": ("page.js", JS),
    "/page.css": ("page.css", CSS),
}
"""Path → (file in trackerd/static/, content type)."""

ACCESS_PATH: Final = "/access"
OPEN_PATHS: Final = frozenset({*FILES, ACCESS_PATH})
"""Served without the token: the files are public, and ``/access`` is how a page learns that
its token is wrong. ``?token=`` on the page's address is passed on to the WebSocket."""

PAGE_POLICY: Final = (
    # Everything from this server only: no CDN, no inline script; the camera's frames go to
    # canvas and blob: URLs. 'self' covers ws:// and wss:// to the same host (CSP level 3).
    "default-src 'self'; connect-src 'self'; img-src 'self' blob: data:; "
    "media-src 'self' blob: mediastream:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'none'"
)


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str

    @classmethod
    def load(cls, name: str, content_type: str) -> StaticFile:
        body = resources.files("trackerd").joinpath("static", name).read_bytes()
        return cls(body, content_type, f'"{hashlib.sha256(body).hexdigest()[:32]}"')

    def response(self, head: Head) -> Response:
        headers: tuple[tuple[str, str], ...] = (
            ("ETag", self.etag),
            ("Cache-Control", "no-cache"),
            ("X-Content-Type-Options", "nosniff"),
        )
        if self.content_type == JS:
            # Another site embeds the client with import "https://tracker…/trackerd.js": a
            # module script from another origin loads only with CORS. The code is public.
            headers += (("Access-Control-Allow-Origin", "*"),)
        if self.content_type == HTML:
            # The page's address may carry ?token=: never send it on as a Referer.
            headers += (
                ("Content-Security-Policy", PAGE_POLICY),
                ("Referrer-Policy", "no-referrer"),
            )
        if _matches(head.header(b"if-none-match"), self.etag):
            return Response(304, self.content_type, b"", headers)
        return Response(200, self.content_type, self.body, headers)


def _matches(if_none_match: list[bytes], etag: str) -> bool:
    """RFC 9110 §13.1.2: a weak comparison against each listed tag, or ``*``."""
    tags = {t.strip().removeprefix(b"W/") for value in if_none_match for t in value.split(b",")}
    return b"*" in tags or etag.encode() in tags


def routes() -> dict[str, Route]:
    """The routes of the page's files; ``/access`` is :meth:`AccessChecks.route`, per client."""
    files = {path: StaticFile.load(name, kind) for path, (name, kind) in FILES.items()}

    def serve(file: StaticFile) -> Route:
        async def route(head: Head) -> Response:
            return file.response(head)

        return route

    return {path: serve(file) for path, file in files.items()}


ACCESS_CHECKS_PER_S: Final = 5.0
"""/access requests a client address may make a second. A page asks once after each failed
handshake, and reconnects back off from 0.5 s: even a NATed office of candidates whose
handshakes all fail stays far below it; a token guesser is cut from ~2,200 guesses a second."""
ACCESS_CHECKS_BURST: Final = 20
"""And at once: a room of pages behind one address that all lose the server together."""
ACCESS_ADDRESSES: Final = 1024
"""Addresses whose /access budget is remembered (~300 B each): a replica serves tens of
sessions, and an address idle for 4 s (a full burst's refill) loses nothing when forgotten."""
THROTTLE_LOG_INTERVAL_S: Final = 10.0
"""At most one log line per this long about throttled /access requests, however many there are."""
ACCESS_RESULTS: Final = ("admitted", "refused", "full", "throttled")


@dataclass(frozen=True, slots=True)
class AccessStatistics:
    """/access answers by result: what an upgrade would get (admitted; refused by origin or
    token; full), or throttled before the verdict was worked out."""

    admitted: int
    refused: int
    full: int
    throttled: int


class AccessChecks:
    """``/access``, throttled per client address and counted by result."""

    def __init__(self, access: Access, has_room: Callable[[], bool]) -> None:
        """``has_room`` says whether the server would take one more client."""
        self._access = access
        self._has_room = has_room
        self._limit = AddressLimit(ACCESS_CHECKS_PER_S, ACCESS_CHECKS_BURST, ACCESS_ADDRESSES)
        self._results: Counter[str] = Counter()
        self._unlogged = 0
        """Throttled answers since the last log line about them."""
        self._logged_at = -THROTTLE_LOG_INTERVAL_S

    def route(self, client: str) -> Route:
        """``/access`` for one connection from ``client`` (its address, or the forwarded one)."""

        async def verdict(head: Head) -> Response:
            return self.answer(head, client, trio.current_time())

        return verdict

    def answer(self, head: Head, client: str, now: float) -> Response:
        """The verdict an upgrade with this head would get, unless ``client`` asks too often."""
        if not self._limit.take(client, now):
            self._throttled(client, now)
            wait = self._limit.retry_after_s
            reason = f"too many /access requests from this address: try again in {wait} s"
            return _verdict(429, reason, (("Retry-After", str(wait)),))
        refusal = self._access.upgrade_refusal(head)
        if refusal is None and not self._has_room():
            self._results["full"] += 1
            return _verdict(503, "too many connections: the server is full, try again soon")
        if refusal is None:
            self._results["admitted"] += 1
            return _verdict(101, "admitted")
        self._results["refused"] += 1
        return _verdict(refusal.status, refusal.reason, cause=refusal.cause)

    def _throttled(self, client: str, now: float) -> None:
        self._results["throttled"] += 1
        self._unlogged += 1
        if now - self._logged_at < THROTTLE_LOG_INTERVAL_S:
            return
        log.warning(
            "/access throttled for %s (over %g a second); %d throttled since the last such line",
            *(client, ACCESS_CHECKS_PER_S, self._unlogged),
        )
        self._logged_at, self._unlogged = now, 0

    def statistics(self) -> AccessStatistics:
        return AccessStatistics(**{result: self._results[result] for result in ACCESS_RESULTS})


def _verdict(
    status: int, reason: str, headers: tuple[tuple[str, str], ...] = (), *, cause: str = ""
) -> Response:
    """The JSON a page reads (whatever the HTTP status: the client module reads ``status``).
    A refused upgrade's ``cause`` is the name /metrics counts it by (``token-expired``...), for
    a program to act on; the ``reason`` is for people."""
    verdict = {"admitted": status == 101, "status": status, "reason": reason}
    body = json.dumps({**verdict, "cause": cause} if cause else verdict)
    cors = (("Access-Control-Allow-Origin", "*"),)
    http_status = 429 if status == 429 else 200
    return Response(http_status, "application/json", body.encode() + b"\n", cors + headers)
