"""Many WebSocket clients in one process, for the fan-out benchmark.

``python -m benchmarks.fanout_clients --port P --clients N [--impl raw|websockets]`` connects N
clients to 127.0.0.1:P one after another (a paced ramp: the server's accept backlog never holds
more than one of ours), sends ``start_tracking`` on each, prints ``READY`` and waits for a line
``T0 T1`` on stdin: the measurement window in Unix seconds. When the window has passed it prints
one JSON line and exits: each client's count of ``eye_data`` received in the window, every
latency ``time.time() - captured_at`` in microseconds (same machine, same clock), the mean
``eye_data`` size, and how many connections were closed on us. End of stdin means the benchmark
is gone: the process exits at once, whatever it was doing.

``raw`` (the default) is a minimal WebSocket client written on ``asyncio.Protocol``: it reads the
server's unmasked frames, takes ``captured_at`` out of each text frame with a regex, and answers
pings. The ``websockets`` library's client (``--impl websockets``) is the independent check that
the raw one counts and times the same; at 1000 clients x 30 Hz, though, its per-message cost
(decoding, a queue and a task wake-up per message) adds milliseconds of queueing in the client
process, which shares the 2 cores with the server, and that would be measured as server latency.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import re
import sys
import threading
import time
from typing import Any, Protocol

from benchmarks.fanout_baseline import raise_file_limit

CAPTURED_AT = re.compile(rb'"captured_at":([0-9.]+)')
CAPTURED_AT_STR = re.compile(r'"captured_at":([0-9.]+)')
RAMP_BATCH = 20
RAMP_PER_S = 400.0
"""Connections opened per second per client process, at most: 1000 clients take ~1.3 s over two
processes, and each handshake completes before the next connection opens."""
HANDSHAKE_TIMEOUT_S = 30.0
START = '{"type":"start_tracking"}'


class Tally:
    """What the clients of this process received inside the window."""

    def __init__(self, clients: int) -> None:
        self.t0, self.t1 = math.inf, -math.inf  # nothing counts until the window is known
        self.counts = [0] * clients
        self.latencies: list[float] = []
        self.bytes = 0

    def eye_data(self, client: int, captured_at: float, size: int, now: float) -> None:
        if self.t0 <= now <= self.t1:
            self.counts[client] += 1
            self.latencies.append(now - captured_at)
            self.bytes += size

    def report(self, closed: int) -> dict[str, Any]:
        received = sum(self.counts)
        return {
            "counts": self.counts,
            "latencies_us": [round(1e6 * x) for x in self.latencies],
            "eye_data_bytes": self.bytes / received if received else None,
            "closed": closed,
        }


class Connection(Protocol):
    def closed(self) -> bool: ...

    def abort(self) -> None: ...


# --- raw: asyncio.Protocol ------------------------------------------------------------------


class RawClient(asyncio.Protocol):
    def __init__(self, index: int, tally: Tally) -> None:
        self.index = index
        self.tally = tally
        self.buffer = b""
        self.handshaken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        now = time.time()  # first thing: the receipt time, before any parsing
        buf = self.buffer + data if self.buffer else data
        if not self.handshaken.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                head = buf[:80].decode(errors="replace")
                self.handshaken.set_exception(RuntimeError(f"handshake refused: {head!r}"))
                return
            buf = buf[end + 4 :]
            self.handshaken.set_result(None)
        self.buffer = self._frames(buf, now)

    def _frames(self, buf: bytes, now: float) -> bytes:
        """Handle every complete frame in ``buf``; return the incomplete rest."""
        while len(buf) >= 2:
            opcode, n = buf[0] & 0x0F, buf[1] & 0x7F
            start = 2
            if n == 126:
                if len(buf) < 4:
                    break
                n, start = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                if len(buf) < 10:
                    break
                n, start = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < start + n:
                break
            payload = buf[start : start + n]
            buf = buf[start + n :]
            if opcode == 0x1:
                found = CAPTURED_AT.search(payload)
                if found is not None:  # not the connection message
                    self.tally.eye_data(self.index, float(found.group(1)), n, now)
            elif opcode == 0x9:
                self.send(0xA, payload)  # a ping wants a pong with the same payload
        return buf

    def send(self, opcode: int, payload: bytes) -> None:
        """One masked frame (clients must mask) of under 126 bytes."""
        assert self.transport is not None and len(payload) < 126
        mask = os.urandom(4)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.transport.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.handshaken.done():
            self.handshaken.set_exception(ConnectionError("closed during the handshake"))

    def closed(self) -> bool:
        return self.lost

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def raw_connect(port: int, index: int, tally: Tally) -> Connection:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(lambda: RawClient(index, tally), "127.0.0.1", port)
    await client.handshaken
    client.send(0x1, START.encode())
    return client


# --- the websockets library ------------------------------------------------------------------


class LibraryClient:
    def __init__(self, ws: Any, index: int, tally: Tally) -> None:
        self.ws = ws
        self.task = asyncio.create_task(self._read(index, tally))

    async def _read(self, index: int, tally: Tally) -> None:
        from websockets.exceptions import ConnectionClosed

        # A closed connection ends the loop; closed() reports it.
        with contextlib.suppress(ConnectionClosed):
            async for message in self.ws:
                now = time.time()
                found = CAPTURED_AT_STR.search(message)
                if found is not None:
                    tally.eye_data(index, float(found.group(1)), len(message), now)

    def closed(self) -> bool:
        return self.task.done()

    def abort(self) -> None:
        self.task.cancel()
        self.ws.transport.abort()


async def library_connect(port: int, index: int, tally: Tally) -> Connection:
    from websockets.asyncio.client import connect

    # No pings from us (the server sends its own); no compression, as the servers have it off.
    ws = await connect(f"ws://127.0.0.1:{port}/", compression=None, ping_interval=None)
    await ws.recv()  # the connection message
    await ws.send(START)
    return LibraryClient(ws, index, tally)


# --- the process -----------------------------------------------------------------------------


def stdin_lines() -> asyncio.Queue[str]:
    """Lines from the benchmark, read by a thread; at end of input the process exits at once,
    even mid-ramp: the benchmark is gone and nobody will read our results."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str] = asyncio.Queue()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        os._exit(0)

    threading.Thread(target=read, daemon=True).start()
    return lines


async def main(port: int, clients: int, impl: str) -> None:
    lines = stdin_lines()
    tally = Tally(clients)
    connect = raw_connect if impl == "raw" else library_connect
    conns: list[Connection] = []
    for i in range(clients):
        conns.append(await asyncio.wait_for(connect(port, i, tally), HANDSHAKE_TIMEOUT_S))
        if i % RAMP_BATCH == RAMP_BATCH - 1:
            await asyncio.sleep(RAMP_BATCH / RAMP_PER_S)
    print("READY", flush=True)
    t0, t1 = (float(v) for v in (await lines.get()).split())
    tally.t0, tally.t1 = t0, t1
    await asyncio.sleep(max(0.0, t1 - time.time()) + 0.05)
    print(json.dumps(tally.report(closed=sum(c.closed() for c in conns))), flush=True)
    for conn in conns:
        conn.abort()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--impl", choices=["raw", "websockets"], default="raw")
    args = parser.parse_args()
    raise_file_limit(args.clients + 100)
    asyncio.run(main(args.port, args.clients, args.impl))
