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
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Final

from trackerd.access import Access
from trackerd.web import Head, Response, Route

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

OPEN_PATHS: Final = frozenset({*FILES, "/access"})
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


def routes(access: Access, has_room: Callable[[], bool]) -> dict[str, Route]:
    """The page's routes. ``has_room`` says whether the server would take one more client."""
    files = {path: StaticFile.load(name, kind) for path, (name, kind) in FILES.items()}

    def serve(file: StaticFile) -> Route:
        async def route(head: Head) -> Response:
            return file.response(head)

        return route

    async def verdict(head: Head) -> Response:
        refusal = access.upgrade_refusal(head)
        if refusal is None and not has_room():
            status, reason = 503, "too many connections: the server is full, try again soon"
        elif refusal is None:
            status, reason = 101, "admitted"
        else:
            status, reason = refusal.status, refusal.reason
        body = json.dumps({"admitted": status == 101, "status": status, "reason": reason})
        cors = (("Access-Control-Allow-Origin", "*"),)
        return Response(200, "application/json", body.encode() + b"\n", cors)

    return {**{path: serve(file) for path, file in files.items()}, "/access": verdict}
