"""Every ``error`` the server sends has a stable ``code`` (issue 22: a client told a busy server
from a regex on the message's words). The real server on 127.0.0.1, a real WebSocket client;
each kind of mistake a client can make, and the code it gets."""

from __future__ import annotations

import trio
from trio_websocket import open_websocket_url

from tests.serverkit import capped, recv_json, recv_type, start, url, with_settings


@capped
async def test_each_mistake_gets_its_code(nursery: trio.Nursery) -> None:
    running = await start(nursery, with_settings(rate_limit_per_s=1.0, rate_limit_burst=8))
    async with open_websocket_url(url(running)) as ws:
        await recv_type(ws, "connection")
        answers = []
        for message in (
            "not json",
            "[1, 2]",
            '{"type": "dance"}',
            '{"type": "start_tracking", "source": "elsewhere"}',
            '{"type": "observe", "sid": 42}',
        ):
            await ws.send_message(message)
            answers.append(await recv_type(ws, "error"))
        await ws.send_message(b"\xff\xd8 a frame without a session")
        answers.append(await recv_type(ws, "error"))
        assert [a["code"] for a in answers] == ["bad_message"] * 6, answers
        await ws.send_message('{"type": "start_tracking", "source": "client"}')
        await recv_type(ws, "tracking_started")
        await ws.send_message('{"type": "start_tracking"}')
        assert (await recv_type(ws, "error"))["code"] == "already_tracking"
        codes = set()
        while "rate_limited" not in codes:  # past the burst of 8
            await ws.send_message('{"type": "ping"}')
            message = await recv_json(ws)
            codes.add(message.get("code", message["type"]))
        assert codes <= {"pong", "rate_limited"}, codes
