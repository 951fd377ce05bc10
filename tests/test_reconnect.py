"""A candidate who comes back (issue 21): a session token's ``sid`` that reconnects within
``--reconnect-grace`` continues its push session (its tracker, its frame numbers, its episodes)
instead of starting a new one. Real ``python -m trackerd --source demo`` processes, real
WebSocket clients, tokens minted with PyJWT as a platform would."""

from __future__ import annotations

import contextlib
import functools
import time
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from benchmarks import hostile
from tests.serverkit import capped, recv_json, recv_type, serving
from tests.test_tokens import KEY_1, PUSH, claims, mint


@functools.cache
def face() -> bytes:
    return hostile.real_face_jpegs(1, (320, 240))[0]


def keyed(*args: str) -> contextlib.AbstractAsyncContextManager[tuple[trio.Process, int]]:
    return serving("--source", "demo", *args, env={"TRACKERD_SIGNING_KEYS": f"k1={KEY_1}"})


async def push_once(port: int, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """On a new connection let in with ``token``: a push session, one real face frame; the
    ``tracking_started`` and the frame's ``eye_data``. The connection then closes (not with
    ``stop_tracking``: as a reload or a lost network would)."""
    async with open_websocket_url(f"ws://127.0.0.1:{port}/?token={token}") as ws:
        assert (await recv_json(ws))["type"] == "connection"
        await ws.send_message(PUSH)
        started = await recv_type(ws, "tracking_started")
        await ws.send_message(face())
        return started, await recv_type(ws, "eye_data")


@capped
async def test_a_reconnect_within_the_grace_period_continues_the_session() -> None:
    async with keyed() as (_, port):
        token = mint(claims(now=time.time(), sid="interview-r1"))
        first, answer = await push_once(port, token)
        assert (first["session"], answer["frame"]) == ("interview-r1", 1)
        again, answer = await push_once(port, token)
        assert again["session"] == "interview-r1"
        assert answer["frame"] == 2, "the same session goes on: its frames are numbered on"


@capped
async def test_without_a_grace_period_or_a_sid_a_lost_connection_ends_the_session() -> None:
    async with keyed("--reconnect-grace", "0") as (_, port):
        token = mint(claims(now=time.time(), sid="interview-r2"))
        for _ in range(2):
            started, answer = await push_once(port, token)
            assert (started["session"], answer["frame"]) == ("interview-r2", 1)
    async with serving("--source", "demo") as (_, port):  # no token: no sid to come back with
        sessions = set()
        for _ in range(2):
            started, answer = await push_once(port, "")
            assert answer["frame"] == 1
            sessions.add(started["session"])
        assert len(sessions) == 2


@capped
async def test_a_connection_ends_when_its_session_token_expires() -> None:
    """At the token's ``exp`` the session ends and the connection is closed, 1008
    ``token_expired``: a candidate cannot stay on past what the platform granted."""
    async with keyed() as (_, port):
        now = time.time()
        token = mint(claims(now=now, sid="interview-r3", exp=int(now) + 2))
        async with open_websocket_url(f"ws://127.0.0.1:{port}/?token={token}") as ws:
            assert (await recv_json(ws))["type"] == "connection"
            await ws.send_message(PUSH)
            await recv_type(ws, "tracking_started")
            await ws.send_message(face())
            assert (await recv_type(ws, "eye_data"))["frame"] == 1
            with trio.fail_after(10):
                expired = await recv_type(ws, "error")
                assert expired["code"] == "token_expired", expired
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
            assert closed.value.reason.code == 1008
            assert closed.value.reason.reason == "token_expired"
        assert time.time() >= int(now) + 2
