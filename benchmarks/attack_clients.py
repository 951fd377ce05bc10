"""Client processes for the attack benchmark: the good clients, or one family of attack.

``python -m benchmarks.attack_clients good --port P [--frames N]``: a push session (real face
JPEGs, 640x480, 15 fps, one frame in flight: the next when the last is answered or on the frame
clock, whichever is later, as ``sessions_clients`` does) and a stream subscriber on the server's
own camera (``start_tracking``), each on its own connection.

``python -m benchmarks.attack_clients attack --port P --family NAME``: one family of
:data:`FAMILIES`, with the frames of ``benchmarks.hostile``.

Either prints ``READY`` once connected (and its frames made), then waits for a line ``T0 T1``
(Unix seconds) on stdin. The good clients record from then until T1; an attack runs from T0 to
T1. Then one JSON line: the good clients' raw events (every frame's send and answer times, every
``eye_data`` receipt of the subscriber), or the attack's tally. Every wait is bounded; end of
stdin means the benchmark is gone, and the process exits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks import hostile
from benchmarks.sessions_clients import HANDSHAKE_TIMEOUT_S, START, open_session, stdin_lines

FPS = 15.0
ANSWER_TIMEOUT_S = 5.0
"""A good frame unanswered for this long is lost, and the next one goes."""
ATTACK_ANSWER_TIMEOUT_S = 60.0
"""An attack frame is waited for this long (a many-scan frame costs seconds): strictly one in
flight, as the issue's attack sent them."""
HOARD_ADDRESSES = tuple(f"127.0.0.{k}" for k in range(2, 8))
"""Six loopback addresses, as the issue's hoarding attack used (Linux routes all of 127/8)."""
HOARD_SESSIONS = 40
"""The default ``--max-sessions`` on 2 CPUs (20 per analysis thread)."""
PROBE_EVERY_S = 2.0
"""While hoarding, a new honest candidate tries for a session this often."""
UPGRADE_CONNECTIONS = 40
FRAGMENT = b"a" * 1024
"""Each continuation frame of the endless message: 1 KiB of valid UTF-8."""
PINGS_PER_ROUND = 20
ROUND_PAUSE_S = 0.01
"""Between rounds of (one fragment + ``PINGS_PER_ROUND`` pings) on each connection: ~2,000
pings a second a connection offered, the server's answers (pongs) counted."""


def _connect(port: int, **kwargs: Any) -> Any:
    from websockets.asyncio.client import connect

    return connect(
        f"ws://127.0.0.1:{port}/",
        compression=None,
        ping_interval=None,
        max_size=2**20,
        open_timeout=HANDSHAKE_TIMEOUT_S,
        **kwargs,
    )


async def _reply(ws: Any, number: int, timeout_s: float) -> str | None:
    """What frame ``number`` got, ``"eye_data"`` or ``"error"``; None after ``timeout_s``."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                message = json.loads(await ws.recv())
                if message["type"] == "eye_data" and message["frame"] == number:
                    return "eye_data"
                if message["type"] == "error" and f"frame {number}:" in message["message"]:
                    return "error"
    except TimeoutError:
        return None


async def one_in_flight(
    ws: Any,
    frame: Callable[[int], bytes],
    period_s: float,
    until: float,
    answer_timeout_s: float,
) -> dict[str, Any]:
    """Send ``frame(n)`` for n = 1, 2, ... until ``until``: the next when the last is answered
    or on the clock, whichever is later. Every frame as ``[sent, answered or None, reply]``."""
    from websockets.exceptions import ConnectionClosed

    loop = asyncio.get_running_loop()
    due = loop.time()
    records: list[list[Any]] = []
    closed = None
    try:
        while time.time() < until:
            await asyncio.sleep(max(0.0, due - loop.time()))
            sent = time.time()
            await ws.send(frame(len(records) + 1))
            # Cut at ``until``: an attack's frame may take seconds, and the attack stops then.
            left = max(0.0, until - time.time())
            reply = await _reply(ws, len(records) + 1, min(answer_timeout_s, left + 0.1))
            records.append([sent, None if reply is None else time.time(), reply])
            due = max(due + period_s, loop.time())
    except ConnectionClosed as exc:
        closed = str(exc)
    return {"frames": records, "closed": closed}


async def watch(ws: Any, until: float) -> dict[str, Any]:
    """The Unix time of every ``eye_data`` the subscriber gets until ``until``."""
    from websockets.exceptions import ConnectionClosed

    received: list[float] = []
    closed = None
    try:
        while (left := until - time.time()) > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    if json.loads(await ws.recv())["type"] == "eye_data":
                        received.append(time.time())
    except ConnectionClosed as exc:
        closed = str(exc)
    return {"eye_data_at": received, "closed": closed}


async def good(port: int, frames: int) -> None:
    jpegs = hostile.real_face_jpegs(frames)
    session = await asyncio.wait_for(open_session(port), HANDSHAKE_TIMEOUT_S)
    stream = await _connect(port)
    await stream.recv()  # the connection message
    await stream.send('{"type":"start_tracking"}')
    lines = stdin_lines()
    print("READY", flush=True)
    _, until = (float(v) for v in (await lines.get()).split())
    push, subscriber = await asyncio.gather(
        one_in_flight(session, lambda n: jpegs[n % len(jpegs)], 1 / FPS, until, ANSWER_TIMEOUT_S),
        watch(stream, until),
    )
    print(json.dumps({"push": push, "stream": subscriber}), flush=True)


# --- the attacks -----------------------------------------------------------------------------


async def _sessions(port: int, count: int) -> list[Any]:
    return [await asyncio.wait_for(open_session(port), HANDSHAKE_TIMEOUT_S) for _ in range(count)]


async def _one_in_flight_each(
    port: int, frame: bytes, period_s: float, start: float, until: float
) -> dict[str, Any]:
    """Two sessions, each sending ``frame`` one in flight, no faster than ``period_s``."""
    conns = await _sessions(port, 2)
    await asyncio.sleep(max(0.0, start - time.time()))
    runs = await asyncio.gather(
        *(
            one_in_flight(ws, lambda _: frame, period_s, until, ATTACK_ANSWER_TIMEOUT_S)
            for ws in conns
        )
    )
    replies = Counter(r[2] or "unanswered" for run in runs for r in run["frames"])
    return {
        "frame_bytes": len(frame),
        "frames_sent": sum(len(run["frames"]) for run in runs),
        "replies": dict(replies),
        "closed": [run["closed"] for run in runs],
    }


async def _drain(ws: Any, replies: Counter[str]) -> None:
    from websockets.exceptions import ConnectionClosed

    with contextlib.suppress(ConnectionClosed):
        while True:
            replies[json.loads(await ws.recv())["type"]] += 1


async def _flood(ws: Any, frame: bytes, until: float) -> dict[str, Any]:
    """Send ``frame`` back to back until ``until``, as fast as the server reads them (TCP's
    backpressure), the replies read and counted meanwhile."""
    from websockets.exceptions import ConnectionClosed

    replies: Counter[str] = Counter()
    reader = asyncio.create_task(_drain(ws, replies))
    sent, closed = 0, None
    try:
        while time.time() < until:
            await asyncio.wait_for(ws.send(frame), max(0.01, until - time.time()))
            sent += 1
    except TimeoutError:
        pass
    except ConnectionClosed as exc:
        closed = str(exc)
    reader.cancel()
    return {
        "frame_bytes": len(frame),
        "frames_sent": sent,
        "replies": dict(replies),
        "closed": closed,
    }


async def fill(port: int, start: float, until: float) -> dict[str, Any]:
    """Item 3: one session floods 512 KiB of JPEG fill bytes, another PNGs of empty chunks."""
    jpeg, png = hostile.jpeg_fill_bytes(), hostile.png_empty_chunks()
    conns = await _sessions(port, 2)
    await asyncio.sleep(max(0.0, start - time.time()))
    a, b = await asyncio.gather(_flood(conns[0], jpeg, until), _flood(conns[1], png, until))
    return {"jpeg_fill_bytes": a, "png_empty_chunks": b}


async def hoard(port: int, start: float, until: float) -> dict[str, Any]:
    """Item 5: at ``start``, ``HOARD_SESSIONS`` idle push sessions from six loopback addresses
    (then nothing); a new honest candidate tries for a session every ``PROBE_EVERY_S``."""
    from websockets.exceptions import WebSocketException

    await asyncio.sleep(max(0.0, start - time.time()))
    held, refusals = [], Counter[str]()
    opened_at = time.time()
    for k in range(HOARD_SESSIONS):
        address = HOARD_ADDRESSES[k % len(HOARD_ADDRESSES)]
        try:
            ws = await _connect(port, local_addr=(address, 0))
            await ws.recv()
            await ws.send(START)
            reply = json.loads(await asyncio.wait_for(ws.recv(), HANDSHAKE_TIMEOUT_S))
        except (OSError, TimeoutError, WebSocketException) as exc:  # a refusal, counted
            refusals[type(exc).__name__] += 1
            continue
        if reply["type"] == "tracking_started":
            held.append(ws)
        else:
            refusals[reply.get("message", reply["type"])[:60]] += 1
            await ws.close()
    opened_s = time.time() - opened_at
    probes = []
    while time.time() < until:
        probes.append(await _probe(port))
        await asyncio.sleep(min(PROBE_EVERY_S, max(0.0, until - time.time())))
    open_at_end = sum(ws.state.name == "OPEN" for ws in held)
    for ws in held:
        ws.transport.abort()
    return {
        "sessions_held": len(held),
        "opened_in_s": opened_s,
        "refused": dict(refusals),
        "still_open_at_end": open_at_end,
        "probe_outcomes": dict(Counter(f"{p['session']} (readyz {p['readyz']})" for p in probes)),
        "probes": probes,
    }


async def _probe(port: int) -> dict[str, Any]:
    """A new candidate's try for a session, and what ``/readyz`` says meanwhile."""
    from websockets.exceptions import WebSocketException

    at = time.time()
    try:
        async with _connect(port) as ws:
            await ws.recv()
            await ws.send(START)
            reply = json.loads(await asyncio.wait_for(ws.recv(), HANDSHAKE_TIMEOUT_S))
        outcome = reply["type"] if reply["type"] != "error" else reply["message"][:60]
    except (OSError, TimeoutError, WebSocketException) as exc:  # a refusal is an outcome
        outcome = f"{type(exc).__name__}: {str(exc)[:60]}"
    return {"at": at, "session": outcome, "readyz": await _readyz(port)}


async def _readyz(port: int) -> int | str:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        writer.write(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        status = (await asyncio.wait_for(reader.readline(), 5)).split()
        writer.close()
        return int(status[1])
    except (OSError, TimeoutError, IndexError, ValueError) as exc:
        return type(exc).__name__


def _frame(opcode: int, payload: bytes, fin: bool) -> bytes:
    """A client's WebSocket frame (masked, with the all-zero key: the payload as it is)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    if len(payload) < 126:
        head += bytes([0x80 | len(payload)])
    else:
        head += bytes([0x80 | 126]) + len(payload).to_bytes(2, "big")
    return head + b"\0\0\0\0" + payload


async def upgrade_body(port: int, start: float, until: float) -> dict[str, Any]:
    """Item 6: ``UPGRADE_CONNECTIONS`` upgrades carrying a body (``Content-Length: 5``,
    ``hello``), then on each an endless fragmented text message and a ping flood."""
    tally: Counter[str] = Counter()
    await asyncio.sleep(max(0.0, start - time.time()))
    await asyncio.gather(
        *(_upgrade_and_flood(port, until, tally) for _ in range(UPGRADE_CONNECTIONS))
    )
    return {**tally, "pongs_per_s": tally["pongs"] / (until - start)}


async def _upgrade_and_flood(port: int, until: float, tally: Counter[str]) -> None:
    request = (
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\nContent-Length: 5\r\n\r\nhello"
    ).encode()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        tally[f"failed: {type(exc).__name__}"] += 1
        return
    status = head.split()[1].decode()
    tally[f"status {status}"] += 1
    if status != "101":
        writer.close()
        return
    pongs = asyncio.create_task(_count_pongs(reader, tally))
    ping = _frame(0x9, b"ping", fin=True)
    writer.write(_frame(0x1, FRAGMENT, fin=False))
    try:
        while time.time() < until and not pongs.done():
            writer.write(_frame(0x0, FRAGMENT, fin=False) + ping * PINGS_PER_ROUND)
            await asyncio.wait_for(writer.drain(), max(0.01, until - time.time()))
            tally["fragments_sent"] += 1
            tally["pings_sent"] += PINGS_PER_ROUND
            await asyncio.sleep(ROUND_PAUSE_S)
    except (OSError, TimeoutError):
        pass
    tally["open_at_end" if not pongs.done() else "closed_by_server"] += 1
    pongs.cancel()
    writer.transport.abort()


async def _count_pongs(reader: asyncio.StreamReader, tally: Counter[str]) -> None:
    """Read the server's frames (unmasked) until it closes: pongs and close frames counted."""
    with contextlib.suppress(asyncio.IncompleteReadError, OSError):
        while True:
            first, second = await reader.readexactly(2)
            length = second & 0x7F
            if length >= 126:
                length = int.from_bytes(await reader.readexactly(2 if length == 126 else 8), "big")
            await reader.readexactly(length)
            opcode = first & 0x0F
            tally["pongs" if opcode == 0xA else "close_frames" if opcode == 0x8 else "other"] += 1
            if opcode == 0x8:
                return


def _frames_attack(
    frame: bytes, period_s: float
) -> Callable[[int, float, float], Awaitable[dict[str, Any]]]:
    async def run(port: int, start: float, until: float) -> dict[str, Any]:
        return await _one_in_flight_each(port, frame, period_s, start, until)

    return run


FAMILIES: dict[str, str] = {
    "hidden_sof": "item 1: 2 sessions, a 6000x6000 JPEG hidden behind FF 00, 1 a second each",
    "many_scans": "item 2: 2 sessions, progressive 1920x1080 JPEGs of ~43k scans, back to back",
    "fill": "item 3: 1 session of 512 KiB JPEG fill bytes, 1 of PNGs of 43k empty chunks, flat out",
    "block_noise": "item 4: 2 sessions, 1279x1621 block-noise JPEGs (~510 KiB), back to back",
    "hoard": "item 5: 40 idle sessions from 6 loopback addresses; a new candidate every 2 s",
    "upgrade_body": "item 6: 40 upgrades with a body, endless fragmented messages, ping floods",
}


async def attack(port: int, family: str) -> None:
    runs: dict[str, Callable[[int, float, float], Awaitable[dict[str, Any]]]] = {
        "fill": fill,
        "hoard": hoard,
        "upgrade_body": upgrade_body,
    }
    frames: dict[str, tuple[Callable[[], bytes], float]] = {
        "hidden_sof": (hostile.jpeg_hidden_sof, 1.0),
        "many_scans": (hostile.jpeg_many_scans, 0.0),
        # 6-pixel blocks: the issue's ~502 KiB and ~3.5 s a search (8-pixel ones, aligned with
        # JPEG's blocks, compress to ~86 KiB and cost 1.6-3.3 s by seed).
        "block_noise": (lambda: hostile.jpeg_block_noise(block=6), 0.0),
    }
    if family in frames:
        make, period_s = frames[family]
        runs[family] = _frames_attack(make(), period_s)
    lines = stdin_lines()
    print("READY", flush=True)
    start, until = (float(v) for v in (await lines.get()).split())
    result = await runs[family](port, start, until)
    print(json.dumps({"family": family, "ran_s": until - start, **result}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=("good", "attack"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--frames", type=int, default=472, help="good: distinct face frames")
    parser.add_argument("--family", choices=list(FAMILIES), help="attack: which one")
    args = parser.parse_args()
    if args.role == "good":
        asyncio.run(good(args.port, args.frames))
    else:
        asyncio.run(attack(args.port, args.family))


if __name__ == "__main__":
    main()
