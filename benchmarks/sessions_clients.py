"""Push sessions in one process, for the sessions benchmark: each sends JPEG frames, one in flight.

``python -m benchmarks.sessions_clients --port P --sessions N --frames FILE [--fps 15]`` opens N
connections to 127.0.0.1:P (the ``websockets`` library's asyncio client), starts a push session on
each (``{"type": "start_tracking", "source": "client"}``), prints ``READY`` and waits for a line
``T0 T1`` on stdin: the measurement window in Unix seconds. Every session then pushes the frames
of FILE (JPEGs, see :func:`write_frames`) in a loop, each session from its own place in the clip
and at its own phase of the frame clock, as the browser client does:

- at most one frame in flight: the next frame goes when the last one's ``eye_data`` has arrived,
  or when the frame clock says so, whichever is later (a late answer delays the next frame; it
  does not cause a burst to catch up);
- the latency of a frame is from just before its send to the receipt of its ``eye_data``.

When the window has passed it prints one JSON line and exits: per session the ``eye_data``
received in the window and how many had a face, every latency in the window (µs), the errors and
lost frames (no ``eye_data`` within ``ANSWER_TIMEOUT_S``), and the connections closed on us. End
of stdin means the benchmark is gone: the process exits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

START = '{"type":"start_tracking","source":"client"}'
ANSWER_TIMEOUT_S = 5.0
"""A frame unanswered for this long is lost (counted) and the session sends the next one."""
HANDSHAKE_TIMEOUT_S = 30.0
GOLDEN = 0.618034
"""Session k starts at phase k x this (mod 1) of the frame clock: spread evenly for any count."""


def write_frames(path: Path, jpegs: list[bytes]) -> None:
    """The clip for the client processes: each JPEG after its length (4 bytes, big-endian)."""
    with path.open("wb") as out:
        for data in jpegs:
            out.write(struct.pack(">I", len(data)) + data)


def read_frames(path: Path) -> list[bytes]:
    blob = path.read_bytes()
    frames, i = [], 0
    while i < len(blob):
        (n,) = struct.unpack(">I", blob[i : i + 4])
        frames.append(blob[i + 4 : i + 4 + n])
        i += 4 + n
    return frames


class Window:
    """The measurement window, unknown (nothing counts) until the benchmark sends it."""

    def __init__(self) -> None:
        self.t0, self.t1 = math.inf, -math.inf

    def holds(self, unix: float) -> bool:
        return self.t0 <= unix <= self.t1


class Session:
    """One push session's tally: only frames answered inside the window count."""

    def __init__(self) -> None:
        self.answered = 0
        self.with_face = 0
        self.latencies_us: list[int] = []
        self.errors = 0
        self.lost = 0
        self.closed = False

    def report(self) -> dict[str, Any]:
        return {
            "answered": self.answered,
            "with_face": self.with_face,
            "latencies_us": self.latencies_us,
            "errors": self.errors,
            "lost": self.lost,
            "closed": self.closed,
        }


async def open_session(port: int) -> Any:
    from websockets.asyncio.client import connect

    # No compression (the server has it off); no pings from us (the server sends its own).
    ws = await connect(
        f"ws://127.0.0.1:{port}/", compression=None, ping_interval=None, max_size=2**20
    )
    await ws.recv()  # the connection message
    await ws.send(START)
    while json.loads(await ws.recv())["type"] != "tracking_started":
        pass
    return ws


async def push(
    ws: Any,
    tally: Session,
    frames: list[bytes],
    first: int,
    start: float,
    period: float,
    window: Window,
) -> None:
    """Send frames until cancelled: one in flight, no faster than one per ``period``."""
    from websockets.exceptions import ConnectionClosed

    loop = asyncio.get_running_loop()
    due = start  # on the loop's clock
    number = 0
    try:
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            number += 1
            sent = time.time()
            await ws.send(frames[(first + number) % len(frames)])
            answer = await _answer(ws, number, tally, window)
            received = time.time()
            if answer is None:
                if window.holds(received):
                    tally.lost += 1
            elif answer["type"] == "error":
                pass  # counted by _answer; the frame is answered, so the next one goes
            elif window.holds(received):
                tally.answered += 1
                tally.with_face += bool(answer.get("face_detected"))
                tally.latencies_us.append(round(1e6 * (received - sent)))
            # The frame clock's next tick, or now if the answer came after it.
            due = max(due + period, loop.time())
    except ConnectionClosed:
        tally.closed = True


async def _answer(ws: Any, number: int, tally: Session, window: Window) -> dict[str, Any] | None:
    """The answer to frame ``number`` (its ``eye_data``, or an ``error`` naming it), or None
    after ``ANSWER_TIMEOUT_S``."""
    try:
        async with asyncio.timeout(ANSWER_TIMEOUT_S):
            while True:
                message = json.loads(await ws.recv())
                if message["type"] == "eye_data" and message["frame"] == number:
                    return dict(message)
                if message["type"] == "error":
                    if window.holds(time.time()):
                        tally.errors += 1
                    if message["message"].startswith(f"frame {number}:"):
                        return dict(message)
    except TimeoutError:
        return None


def stdin_lines() -> asyncio.Queue[str]:
    """Lines from the benchmark, read by a thread; at end of input the process exits at once."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str] = asyncio.Queue(maxsize=4)

    def read() -> None:
        for line in sys.stdin:
            asyncio.run_coroutine_threadsafe(lines.put(line), loop).result()
        os._exit(0)

    threading.Thread(target=read, daemon=True).start()
    return lines


async def main(port: int, sessions: int, frames_path: Path, fps: float, offset: int) -> None:
    lines = stdin_lines()
    frames = read_frames(frames_path)
    conns = []
    for _ in range(sessions):
        conns.append(await asyncio.wait_for(open_session(port), HANDSHAKE_TIMEOUT_S))
    print("READY", flush=True)
    window = Window()
    t0, t1 = (float(v) for v in (await lines.get()).split())
    window.t0, window.t1 = t0, t1
    loop = asyncio.get_running_loop()
    period = 1.0 / fps
    tallies = [Session() for _ in conns]
    tasks = [
        asyncio.create_task(
            push(
                ws,
                tally,
                frames,
                # Spread over the clip and over the frame clock: cameras are not in step.
                first=(offset + i) * 31 % len(frames),
                start=loop.time() + (offset + i) * GOLDEN % 1.0 * period,
                period=period,
                window=window,
            )
        )
        for i, (ws, tally) in enumerate(zip(conns, tallies, strict=True))
    ]
    await asyncio.sleep(max(0.0, t1 - time.time()) + 0.05)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    print(json.dumps({"sessions": [t.report() for t in tallies]}), flush=True)
    for ws in conns:
        ws.transport.abort()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--frames", type=Path, required=True)
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument(
        "--offset", type=int, default=0, help="sessions in the client processes before this one"
    )
    args = parser.parse_args()
    asyncio.run(main(args.port, args.sessions, args.frames, args.fps, args.offset))
