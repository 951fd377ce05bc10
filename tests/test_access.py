"""Who may connect, over real connections: the Origin allow-list (403), the shared token (401),
TLS (``wss://``), the connection cap (503) and the handshake timeout (408).

Each refusal is checked from the client's side (trio-websocket's ``ConnectionRejected`` carries
the status, headers and body) and for what it must not change: a refused client never counts as
connected, and a client that is let in gets the protocol as usual.
"""

from __future__ import annotations

import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import trio
import trio.testing
import trustme
from trio_websocket import ConnectionRejected, open_websocket_url

from tests.serverkit import (
    RawClient,
    capped,
    recv_json,
    recv_type,
    run_trackerd,
    start,
    upgrade_request,
    url,
    with_settings,
)
from trackerd.app import Running
from trackerd.net.access import Access
from trackerd.net.peers import SPARE_CONNECTIONS
from trackerd.net.tls import tls_context
from trackerd.net.web import Head
from trackerd.settings import Settings, SettingsError

pytestmark = pytest.mark.usefixtures("no_unexpected_errors")

TOKEN = "s3cret-t0ken/with+symbols"


async def handshake_status(
    running: Running, headers: list[tuple[bytes, bytes]], path: str = "/"
) -> int:
    """101 if the upgrade is accepted (the client gets its welcome), else the refusal status."""
    try:
        async with open_websocket_url(url(running) + path.lstrip("/"), extra_headers=headers) as ws:
            assert (await recv_json(ws))["type"] == "connection"
            return 101
    except ConnectionRejected as rejected:
        return int(rejected.status_code)


def origin(value: str) -> list[tuple[bytes, bytes]]:
    return [(b"Origin", value.encode())]


# --- Origin ---------------------------------------------------------------------------------------


@capped
async def test_bound_to_localhost_only_local_pages_and_non_browsers_get_in(
    nursery: trio.Nursery,
) -> None:
    running = await start(nursery)  # 127.0.0.1, no allow-list: the default policy
    assert await handshake_status(running, []) == 101  # no Origin: not a browser page
    for allowed in (
        "http://localhost:3000",
        "http://127.0.0.1:8080",
        "https://[::1]",
        "HTTP://LOCALHOST",
    ):
        assert await handshake_status(running, origin(allowed)) == 101, allowed
    for refused in (
        "https://evil.example",
        "null",  # a sandboxed iframe or a file:// page
        "http://localhost.evil.example",
        "http://127.0.0.1.evil.example",
        "http://evil.example/http://localhost",
    ):
        assert await handshake_status(running, origin(refused)) == 403, refused
    assert (
        running.gate.statistics().refused[403, "origin"] == 5
        and running.server.connections_total == 5
    )

    def metrics() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{running.port}/metrics", timeout=10) as r:
            return str(r.read().decode())

    assert 'trackerd_connections_refused_total{cause="origin",status="403"} 5.0' in (
        await trio.to_thread.run_sync(metrics)
    )


@capped
async def test_an_allow_list_admits_exactly_its_origins(nursery: trio.Nursery) -> None:
    running = await start(nursery, with_settings(allowed_origins="https://app.example.com"))
    assert await handshake_status(running, origin("https://app.example.com")) == 101
    assert await handshake_status(running, origin("https://App.Example.com/")) == 101
    for refused in (
        "https://app.example.com:8443",
        "http://app.example.com",
        "https://app.example.com.evil.net",
        "http://localhost:3000",  # a list replaces the localhost default
    ):
        assert await handshake_status(running, origin(refused)) == 403, refused
    two = [*origin("https://app.example.com"), *origin("https://evil.example")]
    assert await handshake_status(running, two) == 403


@capped
async def test_a_star_admits_any_origin(nursery: trio.Nursery) -> None:
    running = await start(nursery, with_settings(allowed_origins="*"))
    assert await handshake_status(running, origin("https://anywhere.example")) == 101


def test_bound_beyond_localhost_with_no_list_any_origin_is_admitted() -> None:
    """No test binds beyond 127.0.0.1, so the policy for 0.0.0.0 is checked on its own
    (``app.run`` logs a warning for it, naming TRACKERD_ALLOWED_ORIGINS and TRACKERD_TOKEN)."""
    access = Access(Settings(host="0.0.0.0"))
    assert access.any_origin and access.origin_allowed(b"https://anywhere.example")
    assert not Access(Settings(host="0.0.0.0", allowed_origins="https://a.example")).any_origin


# --- token ----------------------------------------------------------------------------------------


@capped
async def test_with_a_token_only_clients_presenting_it_get_in(nursery: trio.Nursery) -> None:
    running = await start(nursery, with_settings(token=TOKEN))
    assert await handshake_status(running, [(b"Authorization", f"Bearer {TOKEN}".encode())]) == 101
    assert await handshake_status(running, [(b"Authorization", f"bearer  {TOKEN}".encode())]) == 101
    quoted = urllib.parse.quote(TOKEN, safe="")
    assert await handshake_status(running, [], f"/?token={quoted}") == 101
    for headers, path in (
        ([], "/"),
        ([(b"Authorization", b"Bearer wrong")], "/"),
        ([(b"Authorization", f"Bearer {TOKEN}x".encode())], "/"),
        ([(b"Authorization", f"Basic {TOKEN}".encode())], "/"),
        ([], "/?token=wrong"),
        ([], "/?tok=" + quoted),
    ):
        try:
            async with open_websocket_url(url(running) + path.lstrip("/"), extra_headers=headers):
                raise AssertionError(f"let in with {headers} {path}")
        except ConnectionRejected as rejected:
            assert rejected.status_code == 401
            assert (b"www-authenticate", b"Bearer") in [(k.lower(), v) for k, v in rejected.headers]
            assert TOKEN.encode() not in (rejected.body or b"")
    assert running.server.connected == 0 and running.gate.statistics().refused[401, "token"] == 6


@capped
async def test_the_token_guards_metrics_but_not_healthz(nursery: trio.Nursery) -> None:
    running = await start(nursery, with_settings(token=TOKEN))
    base = f"http://127.0.0.1:{running.port}"

    def get(path: str, token: str | None = None) -> int:
        request = urllib.request.Request(base + path)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return error.code

    assert await trio.to_thread.run_sync(get, "/metrics") == 401
    assert await trio.to_thread.run_sync(get, "/metrics", "wrong") == 401
    assert await trio.to_thread.run_sync(get, "/metrics", TOKEN) == 200
    assert await trio.to_thread.run_sync(get, "/healthz") == 200


def test_origin_is_checked_before_the_token() -> None:
    access = Access(Settings(host="127.0.0.1", token=TOKEN))
    evil = Head("GET", f"/?token={TOKEN}", True, b"", ((b"origin", b"https://evil.example"),))
    refusal = access.upgrade_refusal(evil)
    assert refusal is not None and refusal.status == 403  # a right token does not excuse it


# --- TLS ------------------------------------------------------------------------------------------


@capped
async def test_tls_serves_wss_and_https_and_refuses_what_is_not_tls(
    nursery: trio.Nursery, ca: trustme.CA, tls_files: tuple[Path, Path]
) -> None:
    certfile, keyfile = tls_files
    running = await start(nursery, with_settings(certfile=str(certfile), keyfile=str(keyfile)))
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    wss = f"wss://127.0.0.1:{running.port}/"
    async with open_websocket_url(wss, trusting) as ws:
        assert (await recv_json(ws))["type"] == "connection"
        await ws.send_message('{"type": "start_tracking"}')
        first = await recv_type(ws, "eye_data")
        assert (await recv_type(ws, "eye_data"))["frame"] > first["frame"]

        # Meanwhile: a client that does not trust the certificate, a plain ws:// client and a
        # peer sending junk instead of a TLS hello are all turned away...
        # (Raw streams: trio-websocket's client reports all of these only after its timeout.)
        tcp = await trio.open_tcp_stream("127.0.0.1", running.port)
        untrusting = trio.SSLStream(tcp, ssl.create_default_context(), server_hostname="127.0.0.1")
        with pytest.raises(trio.BrokenResourceError) as info:
            await untrusting.do_handshake()
        assert "CERTIFICATE_VERIFY_FAILED" in str(info.value.__cause__)
        await tcp.aclose()
        for junk in (upgrade_request(running.port), os.urandom(300)):
            plain = await RawClient.connect(running.port, handshake=False)
            await plain.send(junk)
            assert await plain.read_frame() is None  # closed without a word in plaintext
            await plain.aclose()
        # ... and the client that is in keeps getting data.
        later = await recv_type(ws, "eye_data")
        assert later["frame"] > first["frame"] + 1

    def healthz() -> int:
        with urllib.request.urlopen(
            f"https://127.0.0.1:{running.port}/healthz", context=trusting, timeout=10
        ) as response:
            return int(response.status)

    assert await trio.to_thread.run_sync(healthz) == 200


def test_a_certificate_that_does_not_load_is_refused_at_start_up(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(SettingsError, match="cannot load"):
        tls_context(Settings(certfile=str(missing)))
    not_pem = tmp_path / "cert.pem"
    not_pem.write_text("not a certificate\n")
    with pytest.raises(SettingsError, match="cannot load"):
        tls_context(Settings(certfile=str(not_pem)))
    done = run_trackerd("--port", "0", "--certfile", str(not_pem))
    assert done.returncode != 0 and "invalid setting: certfile/keyfile" in done.stderr


# --- limits on connections ------------------------------------------------------------------------


@capped
async def test_beyond_max_connections_an_upgrade_gets_503_until_a_client_leaves(
    nursery: trio.Nursery,
) -> None:
    running = await start(nursery, with_settings(max_connections=2))
    async with open_websocket_url(url(running)) as first:
        await recv_json(first)
        async with open_websocket_url(url(running)) as second:
            await recv_json(second)
            with pytest.raises(ConnectionRejected) as info:
                async with open_websocket_url(url(running)):
                    pass
            assert info.value.status_code == 503
            assert (b"retry-after", b"5") in [(k.lower(), v) for k, v in info.value.headers]
            # The two inside are served as usual.
            await second.send_message('{"type": "status"}')
            assert (await recv_type(second, "status"))["connected_clients"] == 2
        # Once the server has let the second go (every task idle: nothing is tracking) ...
        await trio.testing.wait_all_tasks_blocked()
        async with open_websocket_url(url(running)) as third:
            assert (await recv_json(third))["type"] == "connection"


@capped
async def test_idle_connections_beyond_the_spare_room_make_room_for_a_newcomer(
    nursery: trio.Nursery,
) -> None:
    """Connections that never send a request each hold a descriptor until the handshake
    timeout: beyond max_connections + SPARE_CONNECTIONS of them, the oldest is closed, so a
    newcomer (a /healthz probe) is still answered."""
    running = await start(
        nursery,
        with_settings(max_connections=1, handshake_timeout_s=15.0, max_handshakes_per_ip=1000),
    )
    idle = [
        await RawClient.connect(running.port, handshake=False) for _ in range(1 + SPARE_CONNECTIONS)
    ]
    await trio.testing.wait_all_tasks_blocked()
    probe = await RawClient.connect(running.port, handshake=False)
    await probe.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert (await probe.read_until(b"\r\n")).startswith(b"HTTP/1.1 200")
    assert await idle[0].read_frame() is None  # the oldest, closed without a byte from us
    assert running.gate.statistics().dropped["evicted"] == 1
    for client in [*idle, probe]:
        await client.aclose()


@capped
async def test_a_connection_that_sends_no_request_in_time_gets_408(nursery: trio.Nursery) -> None:
    running = await start(nursery, with_settings(handshake_timeout_s=0.3))
    silent = await RawClient.connect(running.port, handshake=False)
    half = await RawClient.connect(running.port, handshake=False)
    await half.send(upgrade_request(running.port)[:40])  # a request head that never ends
    for client in (silent, half):
        assert (await client.read_until(b"\r\n\r\n")).startswith(b"HTTP/1.1 408")
        await client.read_until(b"request timeout\n")
        assert await client.read_frame() is None  # then the connection ends
        await client.aclose()
    async with open_websocket_url(url(running)) as ws:  # and the server serves on
        assert (await recv_json(ws))["type"] == "connection"
