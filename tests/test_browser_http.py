"""The browser side over plain HTTP and real handshakes: the page and the client module are
served with their content types and cache headers, ``/access`` says why an upgrade would be
refused, the page's own origin is admitted (and only where the Host can be trusted), and a
refused upgrade is logged at INFO with its reason."""

from __future__ import annotations

import http.client
import json
import logging
from dataclasses import replace
from typing import Any

import pytest
import trio

from tests.serverkit import capped, start, with_settings
from tests.test_access import TOKEN, handshake_status, origin
from trackerd.net.access import Access
from trackerd.net.web import Head
from trackerd.settings import Settings

pytestmark = pytest.mark.usefixtures("no_unexpected_errors")


async def get(
    port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    def fetch() -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request(method, path, headers=headers or {})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    return await trio.to_thread.run_sync(fetch)


@capped
async def test_the_page_and_the_client_module_are_served(nursery: trio.Nursery) -> None:
    running = await start(nursery, with_settings(token=TOKEN))  # files need no token
    status, headers, body = await get(running.port, "/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert b'<script type="module" src="/page.js">' in body
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert headers["Referrer-Policy"] == "no-referrer"  # the address may carry ?token=
    for path, needle in (("/trackerd.js", b"export class TrackerClient"), ("/page.js", b"import")):
        status, headers, body = await get(running.port, path)
        assert status == 200 and headers["Content-Type"] == "text/javascript; charset=utf-8"
        assert headers["X-Content-Type-Options"] == "nosniff" and needle in body, path
    status, headers, _ = await get(running.port, "/page.css")
    assert headers["Content-Type"] == "text/css; charset=utf-8"
    status, _, _ = await get(running.port, "/metrics")
    assert status == 401, "the token still guards /metrics"


@capped
async def test_files_are_revalidated_with_their_etag(nursery: trio.Nursery) -> None:
    running = await start(nursery)
    status, headers, body = await get(running.port, "/trackerd.js")
    etag = headers["ETag"]
    assert headers["Cache-Control"] == "no-cache", "kept, but asked about each time"
    assert etag.startswith('"') and len(body) == int(headers["Content-Length"])
    for given in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        status, headers, body = await get(running.port, "/trackerd.js", {"If-None-Match": given})
        assert (status, body) == (304, b""), given
        assert "Content-Length" not in headers and headers["ETag"] == etag
    status, _, body = await get(running.port, "/trackerd.js", {"If-None-Match": '"stale"'})
    assert status == 200 and body
    status, headers, body = await get(running.port, "/", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 1000
    _, others, _ = await get(running.port, "/")
    assert others["ETag"] != etag, "each file has its own tag"


async def verdict(port: int, path: str = "/access", **headers: str) -> dict[str, Any]:
    status, response_headers, body = await get(port, path, headers)
    assert status == 200 and response_headers["Access-Control-Allow-Origin"] == "*"
    decoded: dict[str, Any] = json.loads(body)
    return decoded


@capped
async def test_access_says_what_an_upgrade_would_get(nursery: trio.Nursery) -> None:
    settings = with_settings(token=TOKEN, allowed_origins="https://app.example.com")
    running = await start(nursery, settings)
    port, app = running.port, "https://app.example.com"
    token = f"/access?token={TOKEN.replace('+', '%2B').replace('/', '%2F')}"
    assert await verdict(port, token, Origin=app) == {
        "admitted": True,
        "status": 101,
        "reason": "admitted",
    }
    assert (await verdict(port, "/access", Origin=app))["status"] == 401
    assert (await verdict(port, "/access?token=nope", Origin=app))["reason"] == "wrong token"
    refused = await verdict(port, token, Origin="https://evil.example")
    assert (refused["admitted"], refused["status"]) == (False, 403)
    # The verdict is the upgrade's: the same headers really get these statuses.
    assert await handshake_status(running, [(b"Origin", app.encode())], token) == 101
    assert await handshake_status(running, origin("https://evil.example"), token) == 403


@capped
async def test_access_says_when_the_server_is_full(nursery: trio.Nursery) -> None:
    running = await start(nursery, with_settings(max_connections=1))
    assert (await verdict(running.port))["status"] == 101
    async with trio.open_nursery() as inner:
        entered, leave = trio.Event(), trio.Event()

        async def occupy() -> None:
            from trio_websocket import open_websocket_url

            async with open_websocket_url(f"ws://127.0.0.1:{running.port}/") as ws:
                await ws.get_message()
                entered.set()
                await leave.wait()

        inner.start_soon(occupy)
        await entered.wait()
        busy = await verdict(running.port)
        assert (busy["admitted"], busy["status"]) == (False, 503)
        leave.set()


def own(host: str, origin_value: str) -> Head:
    headers = ((b"host", host.encode()), (b"origin", origin_value.encode()))
    return Head("GET", "/", True, b"", headers)


def test_the_servers_own_origin_is_admitted_where_the_host_is_vouched_for() -> None:
    listed = Access(Settings(host="127.0.0.1", allowed_origins="https://app.example.com"))
    for host, page in (
        ("127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("localhost:5000", "http://LOCALHOST:5000/"),
        ("[::1]:5000", "https://[::1]:5000"),
        ("localhost", "http://localhost:80"),  # a default port written out
    ):
        assert listed.upgrade_refusal(own(host, page)) is None, (host, page)
    for host, page in (
        ("127.0.0.1:5000", "http://127.0.0.1:5001"),  # another port: another site
        ("127.0.0.1:5000", "http://localhost:5000"),  # another name
        ("127.0.0.1:5000", "null"),
        ("127.0.0.1:5000", "ftp://127.0.0.1:5000"),
        ("evil.example:5000", "http://evil.example:5000"),  # DNS rebinding: the Host is refused
    ):
        assert listed.upgrade_refusal(own(host, page)) is not None, (host, page)

    public = Settings(host="0.0.0.0", allowed_origins="https://app.example.com")
    # Any Host allowed: a rebinding name would match itself, so the own-origin rule is off...
    assert Access(public).upgrade_refusal(own("tracker.example", "https://tracker.example"))
    # ...unless the host is named: then its own page is in.
    named = replace(public, allowed_hosts="tracker.example")
    assert Access(named).upgrade_refusal(own("tracker.example", "https://tracker.example")) is None
    tls = replace(named, certfile="cert.pem")
    assert Access(tls).upgrade_refusal(own("tracker.example", "http://tracker.example"))
    assert Access(tls).upgrade_refusal(own("tracker.example", "https://tracker.example")) is None


@capped
async def test_the_page_is_admitted_and_a_refusal_is_logged_at_info(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    running = await start(nursery, with_settings(allowed_origins="https://app.example.com"))
    caplog.set_level(logging.INFO, logger="trackerd")
    page = f"http://127.0.0.1:{running.port}"
    assert await handshake_status(running, origin(page)) == 101
    assert await handshake_status(running, origin("http://localhost:3000")) == 403
    refusals = [r for r in caplog.records if "upgrade refused" in r.getMessage()]
    assert [r.levelno for r in refusals] == [logging.INFO]
    message = refusals[0].getMessage()
    assert "Origin: http://localhost:3000" in message and "origin not allowed" in message
