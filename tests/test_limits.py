"""Per-client limits over real connections: the command rate limit, the byte budget that makes a
ping flood wait on TCP, the send timeout that drops a client whose socket takes nothing, and a
bug in one client's handling. In each, a well-behaved client on the same server is served
throughout.

The rate limit, the byte budget and the send timeout run on trio's clock, so their tests run on
a MockClock (conftest's ``clock``): the counts and times are exact, and the seconds they cover
cost no real time. Their good client is checked by its replies, not by eye_data: the capture
reads and analyses in worker threads, on real time, so it stays idle on the mock clock."""

from __future__ import annotations

import itertools
import logging

import pytest
import trio
from trio.testing import MockClock
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from tests.serverkit import (
    NO_RATE_LIMIT,
    Gone,
    RawClient,
    capped,
    client_frame,
    recv_json,
    recv_type,
    start,
    url,
    with_settings,
)
from trackerd.net import protocol
from trackerd.net.inbound import FRAME_COST_BYTES
from trackerd.net.limits import INBOUND_BYTES_PER_COMMAND

pytestmark = pytest.mark.usefixtures("no_unexpected_errors")

PING = b'{"type": "ping"}'


async def still_served(ws: WebSocketConnection) -> None:
    """The good client's check: a status reply comes back and eye_data keeps coming."""
    first = (await recv_type(ws, "eye_data"))["frame"]
    await ws.send_message('{"type": "status"}')
    assert (await recv_type(ws, "status"))["is_tracking"] is True
    assert (await recv_type(ws, "eye_data"))["frame"] > first


async def answered(ws: WebSocketConnection) -> None:
    """The good client's check on the mock clock: a ping and a status, each answered."""
    await ws.send_message(PING.decode())
    assert (await recv_json(ws))["type"] == "pong"
    await ws.send_message('{"type": "status"}')
    assert (await recv_json(ws))["type"] == "status"


async def tracking(ws: WebSocketConnection) -> None:
    await recv_json(ws)
    await ws.send_message('{"type": "start_tracking"}')
    await recv_type(ws, "eye_data")


@capped
async def test_a_command_flood_gets_errors_then_a_1008_close(
    nursery: trio.Nursery, clock: MockClock
) -> None:
    """Burst 10 at 5/s: the first ten commands are answered, the next ten get an ``error``
    each, and the eleventh refusal within FLOOD_WINDOW_S closes with 1008; exactly, as no time
    passes on the mock clock while the flood is read. The good client never notices."""
    running = await start(nursery, with_settings(rate_limit_per_s=5.0, rate_limit_burst=10))
    async with open_websocket_url(url(running)) as good:
        await recv_json(good)
        flooder = await RawClient.connect(running.port)
        await flooder.send(b"".join(client_frame(0x1, PING) for _ in range(60)))
        kinds = []
        with pytest.raises(Gone, match="close frame 1008"):
            while True:
                kinds.append((await flooder.recv())["type"])
        assert kinds == ["connection"] + ["pong"] * 10 + ["error"] * 10
        await flooder.aclose()
        await answered(good)
    assert running.server.statistics().clients.rate_limited == 11


@capped
async def test_a_client_within_the_rate_is_never_refused(
    nursery: trio.Nursery, clock: MockClock
) -> None:
    """40 commands a second against a limit of 50 (burst 5), for a second: every one answered."""
    running = await start(nursery, with_settings(rate_limit_per_s=50.0, rate_limit_burst=5))
    async with open_websocket_url(url(running)) as ws:
        await recv_json(ws)
        for _ in range(40):
            await ws.send_message(PING.decode())
            assert (await recv_json(ws))["type"] == "pong"
            await trio.sleep(1 / 40)  # pacing the workload, not waiting for a condition
    assert running.server.statistics().clients.rate_limited == 0


READ_BYTES = 4096
"""What trio-websocket asks its stream for at a time (its RECEIVE_BYTES): the byte budget is
charged per read, so a read may overdraw it by up to this much."""


@capped
async def test_a_ping_flood_is_read_no_faster_than_the_byte_budget(
    nursery: trio.Nursery, clock: MockClock
) -> None:
    """WebSocket pings are answered inside trio-websocket, before any rate limit on commands
    could see them. The byte budget bounds them instead: at 10 commands/s a client may send
    10 x 256 B/s after a burst of 8 KiB (2 x max_message_bytes), and each frame costs 128 B more
    than its bytes (inbound.py), so ten seconds of flooding with 106-byte ping frames get
    (8192 + 10 x 2560) / (106 + 128) ≈ 144 pongs, give or take one read (READ_BYTES), not
    hundreds of thousands. Ten seconds on the mock clock take a fraction of one."""
    settings = with_settings(rate_limit_per_s=10.0, rate_limit_burst=10)
    running = await start(nursery, settings)
    budget = max(10 * INBOUND_BYTES_PER_COMMAND, 2 * settings.max_message_bytes)
    flood_s = 10.0
    async with open_websocket_url(url(running)) as good:
        await recv_json(good)
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
            with trio.move_on_after(flood_s):
                while True:  # the good client is answered throughout
                    await answered(good)
                    await trio.sleep(0.5)  # pacing the workload, not waiting for a condition
            flooding.cancel_scope.cancel()
        await answered(good)
        allowed = budget + flood_s * 10 * INBOUND_BYTES_PER_COMMAND
        cost = len(ping) + FRAME_COST_BYTES
        per_read = READ_BYTES / len(ping)
        low, high = allowed / cost - per_read - 1, allowed / cost + per_read + 1
        assert low <= pongs <= high, (pongs, sent, low, high)
        assert sent > 3 * pongs  # the rest waited on TCP
        flooder.reset()


@capped
async def test_a_client_whose_socket_takes_nothing_is_dropped_after_the_send_timeout(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, clock: MockClock
) -> None:
    """A raw client with a 2 KiB receive buffer sends pings and never reads the pongs: once
    its socket is full, the server's next write waits, and exactly send_timeout_s (0.5 s; the
    heartbeat is a minute away) later it is dropped, while the good client is answered
    throughout."""
    settings = with_settings(send_timeout_s=0.5, **NO_RATE_LIMIT)
    running = await start(nursery, settings)
    async with open_websocket_url(url(running)) as good:
        await recv_json(good)
        stuck = await RawClient.connect(running.port, rcvbuf=2048)
        began = trio.current_time()
        stop = trio.Event()

        async def pinging() -> None:
            while not stop.is_set():  # ends between two exchanges: no reply left unread
                await answered(good)
                await trio.sleep(0.1)  # pacing the workload, not waiting for a condition

        async with trio.open_nursery() as both:
            both.start_soon(pinging)
            with pytest.raises(trio.BrokenResourceError):  # the server closed on it
                while True:
                    await stuck.send(client_frame(0x1, PING) * 100)
            dropped_after = trio.current_time() - began
            stop.set()
        assert dropped_after == pytest.approx(0.5, abs=1e-3)
        await good.send_message('{"type": "status"}')
        assert (await recv_json(good))["connected_clients"] == 1
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
