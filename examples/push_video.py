"""A Python client for trackerd: read the server's own stream, or push the frames of a video file.

    pip install websockets opencv-python-headless
    python examples/push_video.py ws://localhost:5000/ --server      # what the server watches
    python examples/push_video.py ws://localhost:5000/ clip.mp4      # this video, as a camera
    TRACKERD_TOKEN=… python examples/push_video.py wss://tracker.example.com/ clip.mp4

One JSON line per ``eye_data`` on stdout; errors on stderr. Pushing keeps one frame in flight:
it sends a frame, waits for its ``eye_data`` (or ``error``), and only then sends the next, at
most at the video's own frame rate and the server's ``max_fps``, so nothing queues anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import cv2
from websockets.sync.client import ClientConnection, connect

ANSWER_TIMEOUT_S = 5.0
"""How long a pushed frame may wait for its answer before the client gives up on it."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="ws://host:port/ or wss://host/")
    parser.add_argument("video", nargs="?", help="a video file to push, frame by frame")
    parser.add_argument("--server", action="store_true", help="read the server's own stream")
    parser.add_argument("--count", type=int, default=0, help="stop after this many (0: never)")
    parser.add_argument("--max-width", type=int, default=640, help="downsize wider frames")
    args = parser.parse_args(argv)
    if args.server == bool(args.video):
        parser.error("give a video to push, or --server (not both)")
    token = os.environ.get("TRACKERD_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else None
    with connect(args.url, additional_headers=headers, max_size=2**20) as ws:
        if args.server:
            return watch(ws, args.count)
        return push(ws, args.video, args.count, args.max_width)


def watch(ws: ClientConnection, count: int) -> int:
    ws.send(json.dumps({"type": "start_tracking"}))
    seen = 0
    for raw in ws:
        message = json.loads(raw)
        if message["type"] == "error":
            print(f"error: {message['message']}", file=sys.stderr)
        elif message["type"] == "eye_data":
            print(json.dumps(message), flush=True)
            seen += 1
            if seen == count:
                break
    return 0


def push(ws: ClientConnection, video: str, count: int, max_width: int) -> int:
    ws.send(json.dumps({"type": "start_tracking", "source": "client"}))
    started = next_message(ws, ("tracking_started", "error"), ANSWER_TIMEOUT_S)
    if started is None or started["type"] == "error":
        reason = started["message"] if started else "no answer"
        print(f"cannot start a push session: {reason}", file=sys.stderr)
        return 1
    fps = cv2.VideoCapture(video).get(cv2.CAP_PROP_FPS) or 30.0
    interval = 1.0 / min(fps, started["max_fps"])
    frames = jpeg_frames(video, max_width, started["max_frame_bytes"])
    for sent, jpeg in enumerate(frames, start=1):  # the server numbers them the same way
        due = time.monotonic() + interval
        ws.send(jpeg)
        answer = next_message(ws, ("eye_data", "error"), ANSWER_TIMEOUT_S)
        if answer is None:
            print(f"frame {sent}: no answer within {ANSWER_TIMEOUT_S} s", file=sys.stderr)
        elif answer["type"] == "error":
            print(f"frame {sent}: {answer['message']}", file=sys.stderr)
        else:
            print(json.dumps(answer), flush=True)
        if sent == count:
            break
        time.sleep(max(0.0, due - time.monotonic()))  # pacing: the video's own frame rate
    ws.send(json.dumps({"type": "stop_tracking"}))
    return 0


def jpeg_frames(video: str, max_width: int, max_bytes: int) -> Iterator[bytes]:
    capture = cv2.VideoCapture(video)
    if not capture.isOpened():
        raise SystemExit(f"cannot open {video}")
    try:
        while True:
            ok, image = capture.read()
            if not ok:
                return
            if image.shape[1] > max_width:
                height = round(image.shape[0] * max_width / image.shape[1])
                image = cv2.resize(image, (max_width, height), interpolation=cv2.INTER_AREA)
            for quality in (85, 70, 50, 30):  # lower the quality until the frame fits
                ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
                if ok and len(encoded) <= max_bytes:
                    yield encoded.tobytes()
                    break
    finally:
        capture.release()


def next_message(
    ws: ClientConnection, kinds: tuple[str, ...], timeout_s: float
) -> dict[str, Any] | None:
    """The next message of one of ``kinds`` within ``timeout_s`` (others are skipped)."""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        try:
            message: dict[str, Any] = json.loads(ws.recv(timeout=left))
        except TimeoutError:
            return None
        if message["type"] in kinds:
            return message
    return None


if __name__ == "__main__":
    sys.exit(main())
