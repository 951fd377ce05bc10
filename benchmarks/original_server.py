"""The server trackerd replaces, reconstructed for the start-up and memory baselines.

asyncio + ``websockets``; on ``start_tracking`` it reads the demo clip (looping, at its own frame
rate) and, for every frame, runs the original's analysis: the face cascade over the whole frame at
scale 1.1 (5 neighbours, 30 px), eyes over the whole face box (1.1/5/20), ``looking_away`` = no face
or fewer than two eyes, ``confidence`` 1.0/0.5/0.0; each client is sent its messages in turn.
Prints ``PORT <n>`` when it accepts connections on 127.0.0.1; stops on SIGTERM or when stdin
closes.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path

import cv2
from websockets.asyncio.server import ServerConnection, serve

# Deliberately nothing from trackerd (whose package imports numba): the baseline's memory and
# start-up must be the original's own.
DEMO = Path(__file__).resolve().parents[1] / "trackerd" / "data" / "demo.mp4"


def timestamp() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def analyse(
    face: cv2.CascadeClassifier, eye: cv2.CascadeClassifier, image: object
) -> dict[str, object]:
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    faces = face.detectMultiScale(grey, 1.1, 5, minSize=(30, 30))
    eyes = 0
    for x, y, w, h in faces[:1]:
        eyes = len(eye.detectMultiScale(grey[y : y + h, x : x + w], 1.1, 5, minSize=(20, 20)))
    found = len(faces) > 0
    return {
        "type": "eye_data",
        "timestamp": timestamp(),
        "face_detected": found,
        "eye_count": int(min(eyes, 2)),
        "looking_away": not found or eyes < 2,
        "confidence": 1.0 if found and eyes >= 2 else 0.5 if found else 0.0,
    }


async def main() -> None:
    cv2.setNumThreads(1)
    data = cv2.data.haarcascades
    face = cv2.CascadeClassifier(data + "haarcascade_frontalface_default.xml")
    eye = cv2.CascadeClassifier(data + "haarcascade_eye.xml")
    tracking: set[ServerConnection] = set()
    wanted = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await ws.send(
            json.dumps(
                {
                    "type": "connection",
                    "message": "Eye tracking connected",
                    "timestamp": timestamp(),
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
                message = analyse(face, eye, image) | {"captured_at": captured_at}
                text = json.dumps(message)
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
