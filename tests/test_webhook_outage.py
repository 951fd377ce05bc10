"""A webhook receiver's outage against a real trackerd (issue 21): the receiver answers 500,
then hangs (trackerd's 10 s timeout), then refuses connections for 60 s. Every event arrives
afterwards, in the order trackerd emitted it, each ``webhook-id`` once or more, none lost. The
receiver (:mod:`tests.receiver`) verifies each request with the ``standardwebhooks`` package.

Slow (about two minutes: the outage itself, then trackerd's backoff, up to 5 minutes between
attempts by design, ~1-2 minutes here): ``-m 'not slow'`` skips it."""

from __future__ import annotations

import json
import time

import pytest
import trio
from trio_websocket import open_websocket_url

from tests.receiver import receiver
from tests.test_platform import (
    SECRET,
    SHARED,
    bodies,
    leaves_and_comes_back,
    observe,
    push_clip,
    trackerd,
    ws_url,
)
from tests.test_tokens import claims, mint

OUTAGE_S = 60
CAP_S = 420


@pytest.mark.slow
async def test_every_event_arrives_in_order_after_500s_a_hang_and_a_minute_refused() -> None:
    clip, _, _ = leaves_and_comes_back()
    with trio.fail_after(CAP_S):
        async with (
            receiver(SECRET, plan=f"500,hang,refuse:{OUTAGE_S}s") as rx,
            trackerd("--webhook-url", rx.url()) as (_, port),
            trio.open_nursery() as nursery,
        ):
            watcher = await observe(nursery, port, SHARED, "interview-w1")
            emitted = []
            token = mint(claims(now=time.time(), sid="interview-w1"))
            async with open_websocket_url(ws_url(port, token)) as ws:
                await push_clip(ws, clip)
                await ws.send_message('{"type": "stop_tracking"}')
            while not emitted or emitted[-1]["event"] != "session.ended":
                message = await watcher.get_message()
                if '"type":"event"' in message:
                    emitted.append(json.loads(message))
            await rx.wait(lambda: bool(bodies(rx, "session.ended")))
            nursery.cancel_scope.cancel()
    assert rx.logged(r"answered 500 to msg_\S+") and rx.logged(r"hung on msg_\S+")
    assert rx.logged(rf"refusing connections for {OUTAGE_S} s")
    first_seen: dict[str, dict[str, object]] = {}
    for delivery in rx.deliveries:
        first_seen.setdefault(delivery["id"], delivery["body"])
    arrived = [(b["type"], b["data"]) for b in first_seen.values()]
    expected = [(e["event"], e["data"]) for e in emitted]
    print(f"\n{len(rx.deliveries)} deliveries of {len(expected)} events: {rx.log[-3:]}")
    assert arrived == expected, "every event, once or more, in the order it was emitted"
    assert len(expected) >= 5  # no_face and away, each started and ended, and the report
