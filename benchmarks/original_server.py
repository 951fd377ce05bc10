"""The server trackerd replaces, reconstructed for the start-up and memory baselines.

asyncio + ``websockets``; on ``start_tracking`` it reads the demo clip (looping, at its own frame
rate) and, for every frame, does the original's analysis and sends its message
(benchmarks/original.py: every face, eyes in each, the original's cascade parameters and JSON),
plus a ``captured_at`` the benchmarks read the latency from. Prints ``PORT <n>`` when it accepts
connections on 127.0.0.1; stops on SIGTERM or when stdin closes.

Where it differs from the original's ``eye_gaze.py`` (see benchmarks/original.py for which), and
why: the demo clip at its frame rate stands in for the camera and its ``asyncio.sleep(0.1)``
after each send, so that both servers analyse the same frames at the same rate; and one capture
loop sends each frame to every tracking client in turn, where the original ran one camera loop
per client inside that client's message handler (a second client could not open the camera
the first one held).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from datetime import datetime
from pathlib import Path

import cv2
from websockets.asyncio.server import ServerConnection, serve

from benchmarks.original import Original

# Deliberately nothing from trackerd (whose package imports numba): the baseline's memory and
# start-up must be the original's own. benchmarks.original imports only cv2 and numpy.
DEMO = Path(__file__).resolve().parents[1] / "trackerd" / "data" / "demo.mp4"


async def main() -> None:
    cv2.setNumThreads(1)
    original = Original()
    tracking: set[ServerConnection] = set()
    wanted = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await ws.send(
            json.dumps(
                {
                    "type": "connection",
                    "message": "Eye tracking connected",
                    "timestamp": datetime.now().isoformat(),  # as the original's
                }
            )
        )
        try:
            async for message in ws:
                if json.loads(message).get("type") == "start_tracking":
                    tracking.add(ws)
                    wanted.set()
        finally:
            tracking.discard(ws)

    async def capture() -> None:
        while True:
            await wanted.wait()
            video = cv2.VideoCapture(str(DEMO))
            interval = 1.0 / (video.get(cv2.CAP_PROP_FPS) or 30.0)
            next_at = time.monotonic()
            while tracking:
                ok, image = video.read()
                if not ok:
                    video.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    continue
                captured_at = time.time()
                message = original.analyse(image).message()
                text = json.dumps(message | {"captured_at": captured_at})
                for ws in list(tracking):
                    await ws.send(text)
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            video.release()
            wanted.clear()

    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    loop.add_reader(sys.stdin.fileno(), lambda: stop.done() or stop.set_result(None))
    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        print(f"PORT {next(iter(server.sockets)).getsockname()[1]}", flush=True)
        task = asyncio.create_task(capture())
        await stop
        task.cancel()


if __name__ == "__main__":
    asyncio.run(main())
