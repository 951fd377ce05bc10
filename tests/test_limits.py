"""Per-client limits over real connections: the command rate limit, the byte budget that makes a
ping flood wait on TCP, the send timeout that drops a client whose socket takes nothing, and a
bug in one client's handling. In each, a well-behaved client on the same server is served
throughout."""

from __future__ import annotations

import itertools
import json
import logging

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from tests.serverkit import (
    NO_RATE_LIMIT,
    RawClient,
    Sources,
    SyntheticSource,
    capped,
    client_frame,
    recv_json,
    recv_type,
    start,
    url,
    with_settings,
)
from trackerd import protocol
from trackerd.server import INBOUND_BYTES_PER_COMMAND

pytestmark = pytest.mark.usefixtures("no_unexpected_errors")

PING = b'{"type": "ping"}'


async def still_served(ws: WebSocketConnection) -> None:
    """The good client's check: a status reply comes back and eye_data keeps coming."""
    first = (await recv_type(ws, "eye_data"))["frame"]
    await ws.send_message('{"type": "status"}')
    assert (await recv_type(ws, "status"))["is_tracking"] is True
    assert (await recv_type(ws, "eye_data"))["frame"] > first


async def tracking(ws: WebSocketConnection) -> None:
    await recv_json(ws)
    await ws.send_message('{"type": "start_tracking"}')
    await recv_type(ws, "eye_data")


@capped
async def test_a_command_flood_gets_errors_then_a_1008_close(nursery: trio.Nursery) -> None:
    """Burst 10 at 5/s: the first ten commands are answered, the next ten get an ``error``
    each, and the eleventh refusal within FLOOD_WINDOW_S closes with 1008. The good client
    never notices."""
    running = await start(nursery, with_settings(rate_limit_per_s=5.0, rate_limit_burst=10))
    async with open_websocket_url(url(running)) as good:
        await tracking(good)
        flooder = await RawClient.connect(running.port)
        await flooder.send(b"".join(client_frame(0x1, PING) for _ in range(60)))
        kinds, code = [], None
        while (frame := await flooder.read_frame()) is not None:
            first, payload = frame
            if first == 0x88:
                code = int.from_bytes(payload[:2], "big")
                break
            kinds.append(json.loads(payload))
        assert code == 1008
        assert kinds[0]["type"] == "connection"
        pongs = [k for k in kinds if k["type"] == "pong"]
        errors = [k for k in kinds if k["type"] == "error"]
        # 10 from the burst, and at most a token or two refilled while the flood was read;
        # the 11th refusal within FLOOD_WINDOW_S closes.
        assert 10 <= len(pongs) <= 12
        assert len(errors) == 10
        assert errors[0]["message"] == "rate limit: at most 5 messages a second"
        await flooder.aclose()
        await still_served(good)
    assert running.server.statistics().rate_limited > 10


@capped
async def test_a_client_within_the_rate_is_never_refused(nursery: trio.Nursery) -> None:
    """40 commands a second against a limit of 50 (burst 5), for a second: every one answered."""
    running = await start(nursery, with_settings(rate_limit_per_s=50.0, rate_limit_burst=5))
    async with open_websocket_url(url(running)) as ws:
        await recv_json(ws)
        for _ in range(40):
            await ws.send_message(PING.decode())
            assert (await recv_json(ws))["type"] == "pong"
            await trio.sleep(1 / 40)  # pacing the workload, not waiting for a condition
    assert running.server.statistics().rate_limited == 0


@capped
async def test_a_ping_flood_is_read_no_faster_than_the_byte_budget(nursery: trio.Nursery) -> None:
    """WebSocket pings are answered inside trio-websocket, before any rate limit on commands
    could see them. The byte budget bounds them instead: at 10 commands/s a client may send
    10 x 256 B/s after a burst of 8 KiB (2 x max_message_bytes), so one second of flooding
    with 100-byte pings gets at most ~(8192 + 2560) / 106 ≈ 101 pongs, not tens of thousands."""
    settings = with_settings(rate_limit_per_s=10.0, rate_limit_burst=10)
    running = await start(nursery, settings)
    budget = max(10 * INBOUND_BYTES_PER_COMMAND, 2 * settings.max_message_bytes)
    async with open_websocket_url(url(running)) as good:
        await tracking(good)
        flooder = await RawClient.connect(running.port)
        assert (await flooder.read_frame()) is not None  # the welcome
        ping = client_frame(0x9, b"p" * 100)
        pongs = 0
        sent = 0

        async def flood() -> None:
            nonlocal sent
            while True:
                await flooder.send(ping * 10)
                sent += 10

        async def count_pongs() -> None:
            nonlocal pongs
            while (frame := await flooder.read_frame()) is not None:
                pongs += frame[0] == 0x8A

        async with trio.open_nursery() as flooding:
            flooding.start_soon(flood)
            flooding.start_soon(count_pongs)
            with trio.move_on_after(1.0):
                while True:
                    await recv_type(good, "eye_data")  # the good client reads throughout
            flooding.cancel_scope.cancel()
        await still_served(good)
        most = (budget + 1.0 * 10 * INBOUND_BYTES_PER_COMMAND) / len(ping)
        assert 0.5 * most <= pongs <= most * 1.5 + 10, (pongs, sent, most)
        assert sent > 3 * pongs  # the rest waited on TCP
        flooder.reset()


@capped
async def test_a_client_whose_socket_takes_nothing_is_dropped_after_the_send_timeout(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """A raw client with a 2 KiB receive buffer tracks a 1000 Hz stream and never reads: once
    its socket is full, the next write waits, and after send_timeout_s (0.5 s; the heartbeat
    is a minute away) it is dropped, while the good client goes on."""
    fast = Sources(lambda: SyntheticSource(fps=1000.0))
    settings = with_settings(send_timeout_s=0.5, **NO_RATE_LIMIT)
    running = await start(nursery, settings, open_source=fast)
    stuck = await RawClient.connect(running.port, rcvbuf=2048)
    await stuck.send(client_frame(0x1, b'{"type": "start_tracking"}'))
    async with open_websocket_url(url(running)) as good:
        await tracking(good)
        while True:  # until the server counts one client: the stuck one has been dropped
            await good.send_message('{"type": "status"}')
            if (await recv_type(good, "status"))["connected_clients"] == 1:
                break
        await still_served(good)
    dropped = [r for r in caplog.records if "took nothing for 0.5 s: dropping it" in r.getMessage()]
    assert len(dropped) == 1 and dropped[0].levelno == logging.WARNING
    stuck.reset()


@capped
async def test_a_bug_in_one_clients_handling_closes_only_that_client_with_1011(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault injected into the server's own code: the first ``pong`` it builds raises. The
    client whose ping hit it is closed with 1011 and the traceback logged at ERROR; the client
    tracking beside it is not touched, and the next ping (the fault gone) is answered."""
    running = await start(nursery)
    real_pong = protocol.pong
    calls = itertools.count()

    def pong_that_fails_once() -> str:
        if next(calls) == 0:
            raise RuntimeError("injected bug")
        return real_pong()

    monkeypatch.setattr(protocol, "pong", pong_that_fails_once)
    async with open_websocket_url(url(running)) as good, open_websocket_url(url(running)) as hit:
        await tracking(good)
        await recv_json(hit)
        await hit.send_message(PING.decode())
        with pytest.raises(ConnectionClosed) as info:
            await hit.get_message()
        assert info.value.reason.code == 1011
        await still_served(good)
        await good.send_message(PING.decode())
        assert (await recv_type(good, "pong"))["type"] == "pong"
    bugs = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(bugs) == 1 and "unexpected error; closing with 1011" in bugs[0].getMessage()
    assert bugs[0].exc_info is not None
    assert "RuntimeError: injected bug" in logging.Formatter().formatException(bugs[0].exc_info)
    caplog.records.remove(bugs[0])  # expected: the no_unexpected_errors check looks for others
