"""The smaller findings of the same attack, over real connections to a real server on 127.0.0.1:
how requests are read and answered, the Host check, per-address limits behind and without a
proxy, and what the log and /metrics say about connections that end early."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import pytest
import trio
import trio.testing
import trustme
from trio_websocket import ConnectionRejected, open_websocket_url

from tests.serverkit import (
    RawClient,
    capped,
    client_frame,
    recv_json,
    start,
    upgrade_request,
    url,
    with_settings,
)
from trackerd.app import Running
from trackerd.net.peers import Peers
from trackerd.net.web import MAX_HEAD_BYTES
from trackerd.settings import Settings

pytestmark = pytest.mark.usefixtures("no_unexpected_errors")


async def raw_request(port: int, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection; everything the server sends until it closes.
    A reset instead of a close fails the test (the answer could have been lost)."""
    client = await RawClient.connect(port, handshake=False)
    try:
        await client.send(data)
        return await client.read_until_closed()
    finally:
        await client.aclose()


def get(path: str, host: str = "127.0.0.1") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


# --- requests ------------------------------------------------------------------------------------


@capped
async def test_an_absolute_form_target_is_routed(nursery: trio.Nursery) -> None:
    running = await start(nursery)
    answer = await raw_request(running.port, get(f"http://127.0.0.1:{running.port}/healthz"))
    assert answer.startswith(b"HTTP/1.1 200"), answer[:80]


@capped
async def test_the_head_limit_is_exact_even_when_the_head_comes_in_one_write(
    nursery: trio.Nursery,
) -> None:
    running = await start(nursery)
    head = get("/healthz")[:-2]  # without the final blank line

    def padded(size: int) -> bytes:
        filler = size - len(head) - len(b"X-Pad: \r\n\r\n")
        return head + b"X-Pad: " + b"a" * filler + b"\r\n\r\n"

    assert len(padded(MAX_HEAD_BYTES)) == MAX_HEAD_BYTES
    assert (await raw_request(running.port, padded(MAX_HEAD_BYTES))).startswith(b"HTTP/1.1 200")
    too_big = await raw_request(running.port, padded(MAX_HEAD_BYTES + 1))
    assert too_big.startswith(b"HTTP/1.1 431"), too_big[:80]
    assert running.gate.statistics().refused[431, "head-too-large"] == 1


@capped
async def test_a_refusal_is_read_whole_though_the_client_sent_more_than_was_read(
    nursery: trio.Nursery,
) -> None:
    """An 18 KB head and a body after it: the server answers 431 without reading it all. Closing
    a socket with unread data sends a reset, which can destroy the answer in flight; the server
    must end with a FIN, after the whole answer."""
    running = await start(nursery)
    request = get("/healthz")[:-2] + b"X-Pad: " + b"a" * 18000 + b"\r\n\r\n" + b"b" * 100_000
    answer = await raw_request(running.port, request)  # raises on a reset
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431")
    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    assert len(body) == length > 0


# --- Host ----------------------------------------------------------------------------------------


@capped
async def test_bound_to_localhost_only_local_host_names_are_served(nursery: trio.Nursery) -> None:
    """DNS rebinding: a page on attacker.example, whose name now points at 127.0.0.1, sends
    Host: attacker.example. It must not read /metrics (no token: the default) nor connect."""
    running = await start(nursery)
    port = running.port
    for host in ("127.0.0.1", f"localhost:{port}", "[::1]", f"127.0.0.1:{port}"):
        assert (await raw_request(port, get("/metrics", host))).startswith(b"HTTP/1.1 200"), host
    for host in ("attacker.example", f"attacker.example:{port}", "127.0.0.1.nip.io"):
        answer = await raw_request(port, get("/metrics", host))
        assert answer.startswith(b"HTTP/1.1 421"), (host, answer[:80])
    upgrade = upgrade_request(port).replace(f"Host: 127.0.0.1:{port}".encode(), b"Host: evil")
    assert (await raw_request(port, upgrade)).startswith(b"HTTP/1.1 421")
    assert running.gate.statistics().refused[421, "host"] == 4
    assert running.server.connections_total == 0


@capped
async def test_an_allowed_hosts_list_admits_exactly_its_names(nursery: trio.Nursery) -> None:
    """(The probes' /healthz and /readyz answer any Host: test_small_holes.py.)"""
    running = await start(nursery, with_settings(allowed_hosts="tracker.example.com"))
    port = running.port
    ok = await raw_request(port, get("/metrics", f"tracker.example.com:{port}"))
    assert ok.startswith(b"HTTP/1.1 200")
    for host in ("127.0.0.1", "example.com"):
        assert (await raw_request(port, get("/metrics", host))).startswith(b"HTTP/1.1 421")


def test_bound_beyond_localhost_any_host_is_served() -> None:
    from trackerd.net.access import Access
    from trackerd.net.web import Head

    access = Access(Settings(host="0.0.0.0"))
    head = Head("GET", "/", False, b"", ((b"host", b"anything.example"),))
    assert access.host_refusal(head) is None


# --- per-address limits --------------------------------------------------------------------------


@capped
async def test_one_address_may_hold_at_most_its_share_of_connections(
    nursery: trio.Nursery,
) -> None:
    running = await start(nursery, with_settings(max_connections_per_ip=2))
    async with (
        open_websocket_url(url(running)) as a,
        open_websocket_url(url(running)) as b,
    ):
        for ws in (a, b):
            await recv_json(ws)
        extra = await RawClient.connect(running.port, handshake=False)
        assert await extra.read_frame() is None  # closed at once, not a byte read
        await extra.aclose()
        assert running.gate.statistics().dropped["per-address"] == 1
    # Once they leave, the address has room again.
    async with open_websocket_url(url(running)) as c:
        assert (await recv_json(c))["type"] == "connection"


@capped
async def test_an_address_with_too_many_idle_connections_loses_its_oldest(
    nursery: trio.Nursery,
) -> None:
    running = await start(nursery, with_settings(max_handshakes_per_ip=3))
    idle = [await RawClient.connect(running.port, handshake=False) for _ in range(3)]
    await trio.testing.wait_all_tasks_blocked()
    async with open_websocket_url(url(running)) as ws:  # the 4th waiting one, for a moment
        assert (await recv_json(ws))["type"] == "connection"
    assert await idle[0].read_frame() is None
    assert running.gate.statistics().dropped["evicted"] == 1
    for client in idle:
        await client.aclose()


def forwarded(address: str) -> list[tuple[bytes, bytes]]:
    return [(b"X-Forwarded-For", f"198.51.100.7, {address}".encode())]


@capped
async def test_behind_a_trusted_proxy_limits_and_logs_use_the_forwarded_address(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    settings = with_settings(trusted_proxies="127.0.0.1", max_connections_per_ip=1)
    running = await start(nursery, settings)
    async with (
        open_websocket_url(url(running), extra_headers=forwarded("203.0.113.9")) as a,
        open_websocket_url(url(running), extra_headers=forwarded("203.0.113.10")) as b,
    ):
        for ws in (a, b):  # two clients through one proxy address: each within its own limit
            await recv_json(ws)
        with pytest.raises(ConnectionRejected) as refused:
            async with open_websocket_url(url(running), extra_headers=forwarded("203.0.113.9")):
                pass
        assert refused.value.status_code == 429
    assert "203.0.113.9 (via 127.0.0.1:" in caplog.text
    assert "198.51.100.7" not in caplog.text  # what the client wrote itself is not believed


@capped
async def test_from_anyone_else_x_forwarded_for_is_ignored(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    running = await start(nursery, with_settings(max_connections_per_ip=1))
    async with open_websocket_url(url(running), extra_headers=forwarded("203.0.113.9")) as ws:
        await recv_json(ws)
        extra = await RawClient.connect(running.port, handshake=False)
        assert await extra.read_frame() is None  # 127.0.0.1 is at its limit, whatever it says
        await extra.aclose()
    assert "203.0.113.9" not in caplog.text


def test_the_forwarded_client_is_the_rightmost_untrusted_entry() -> None:
    peers = Peers(Settings(trusted_proxies="10.0.0.0/8"))
    slot = peers.arrive("10.1.2.3")
    assert not isinstance(slot, str) and slot.trusted
    assert peers.headed(slot, [b"6.6.6.6, 203.0.113.9", b"10.9.9.9"])
    assert slot.client == "203.0.113.9"
    peers.leave(slot)
    assert peers.open == 0


# --- what the log and /metrics say ---------------------------------------------------------------


@capped
async def test_the_log_names_the_close_code_the_server_sent(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trackerd")
    stop = trio.Event()
    running = await start(nursery, with_settings(rate_limit_burst=2), stop=stop)
    flooder = await RawClient.connect(running.port)
    await flooder.send(b"".join(client_frame(0x1, b'{"type": "ping"}') for _ in range(20)))
    assert await flooder.close_code() == 1008
    await flooder.aclose()
    oversized = await RawClient.connect(running.port)
    await oversized.send(client_frame(0x1, b"x" * 5000))
    assert await oversized.close_code() == 1009
    await oversized.aclose()
    async with open_websocket_url(url(running)) as ws:
        await recv_json(ws)
        stop.set()
        await trio.testing.wait_all_tasks_blocked()
    assert "disconnected: closed by the server (1008)" in caplog.text
    assert "disconnected: closed by the server (1009: message over 4096 bytes)" in caplog.text
    assert "disconnected: closed by the server (1001)" in caplog.text
    assert "1000 NORMAL_CLOSURE" not in caplog.text


@capped
async def test_over_tls_the_log_names_the_peer_and_failures_are_counted_as_such(
    nursery: trio.Nursery,
    ca: trustme.CA,
    tls_files: tuple[Path, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    certfile, keyfile = tls_files
    running = await start(nursery, with_settings(certfile=str(certfile), keyfile=str(keyfile)))
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    async with open_websocket_url(f"wss://127.0.0.1:{running.port}/", trusting) as ws:
        await recv_json(ws)
    junk = await RawClient.connect(running.port, handshake=False)
    await junk.send(b"GET / HTTP/1.1\r\n\r\n")  # plaintext: not a TLS hello
    assert await junk.read_frame() is None
    await junk.aclose()
    await _closed_without_a_word(running)
    assert "FrameStream object" not in caplog.text
    assert "127.0.0.1:" in caplog.text.split("connected (1 clients)")[0].splitlines()[-1]
    gate = running.gate.statistics()
    assert gate.dropped["tls"] == 2  # the plaintext request, and the silent one
    assert "closed-early" not in gate.dropped  # over TLS, silence is a TLS failure
    assert not gate.refused


async def _closed_without_a_word(running: Running) -> None:
    silent = await RawClient.connect(running.port, handshake=False)
    await silent.aclose()
    await trio.testing.wait_all_tasks_blocked()


@capped
async def test_a_connection_that_closes_before_sending_anything_is_not_a_bad_request(
    nursery: trio.Nursery,
) -> None:
    running = await start(nursery)
    await _closed_without_a_word(running)
    assert running.gate.statistics().dropped["closed-early"] == 1
    assert not running.gate.statistics().refused
