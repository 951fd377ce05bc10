"""Many WebSocket clients in one process, as light as a client can be, for the fan-out benchmark.

``python -m benchmarks.fanout_clients --port P --clients N`` connects N clients to 127.0.0.1:P
(a paced ramp, so the server's accept backlog never overflows), sends ``start_tracking`` on each,
prints ``READY`` and waits for a line ``T0 T1`` (Unix seconds) on stdin: the measurement window.
It then prints one JSON line: per-client message counts in the window and capture→receipt
latencies (``time.time() - captured_at``; same machine, same clock), and exits.

The clients are a hand-written asyncio protocol rather than the ``websockets`` library: at 1000
clients x 30 Hz the library's per-message cost would make the client processes, which share the
2 cores with the server, the bottleneck and distort what is measured. They read unmasked server
frames, pull ``captured_at`` out of each text frame, and answer pings (with masked pongs).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import resource
import sys
import time

CAPTURED_AT = re.compile(rb'"captured_at":([0-9.]+)')
RAMP_PER_S = 400.0
"""Connections opened per second per client process."""


class Client(asyncio.Protocol):
    def __init__(self, window: list[float], latencies: list[float], keep_every: int) -> None:
        self.buffer = b""
        self.handshaken = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.window = window  # [t0, t1], filled in once the parent says
        self.latencies = latencies
        self.keep_every = keep_every
        self.count = 0
        self.total = 0
        self.closed = False

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
        now = time.time()
        self.buffer += data
        if not self.handshaken.done():
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.buffer.startswith(b"HTTP/1.1 101"):
                self.handshaken.set_exception(
                    RuntimeError(self.buffer[:80].decode(errors="replace"))
                )
                return
            self.buffer = self.buffer[end + 4 :]
            self.handshaken.set_result(None)
        self._frames(now)

    def _frames(self, now: float) -> None:
        buf = self.buffer
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
                self._text(payload, now)
            elif opcode == 0x9:  # ping: answer with a masked pong
                assert self.transport is not None
                mask = os.urandom(4)
                body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + mask + body)
        self.buffer = buf

    def _text(self, payload: bytes, now: float) -> None:
        found = CAPTURED_AT.search(payload)
        if found is None:
            return  # connection / status messages
        self.total += 1
        if self.window and self.window[0] <= now <= self.window[1]:
            self.count += 1
            if self.count % self.keep_every == 0:
                self.latencies.append(now - float(found.group(1)))

    def send_text(self, text: str) -> None:
        assert self.transport is not None
        payload = text.encode()
        mask = os.urandom(4)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.transport.write(bytes([0x81, 0x80 | len(payload)]) + mask + body)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True


async def main(port: int, clients: int, keep_every: int) -> None:
    loop = asyncio.get_running_loop()
    window: list[float] = []
    latencies: list[float] = []
    protocols: list[Client] = []
    for i in range(clients):
        _, proto = await loop.create_connection(
            lambda: Client(window, latencies, keep_every), "127.0.0.1", port
        )
        protocols.append(proto)
        await asyncio.wait_for(proto.handshaken, 30)
        proto.send_text('{"type":"start_tracking"}')
        if i % 20 == 19:
            await asyncio.sleep(20 / RAMP_PER_S)
    print("READY", flush=True)
    line = await loop.run_in_executor(None, sys.stdin.readline)
    t0, t1 = (float(v) for v in line.split())
    window.extend([t0, t1])
    await asyncio.sleep(max(0.0, t1 - time.time()) + 0.05)
    print(
        json.dumps(
            {
                "counts": [p.count for p in protocols],
                "latencies": latencies,
                "keep_every": keep_every,
                "closed": sum(p.closed for p in protocols),
            }
        ),
        flush=True,
    )
    for p in protocols:
        if p.transport is not None:
            p.transport.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--keep-every", type=int, default=1, help="keep every k-th latency sample")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.clients + 100)), hard))
    asyncio.run(main(args.port, args.clients, args.keep_every))
