"""What a pushed frame can cost to decode once its header has passed (issue 20).

A decode cannot be stopped once libjpeg, libpng or libwebp has started, so the checks of
:func:`trackerd.vision.images.read_header` must bound it beforehand: the size the decoder reads (at
most ``max_frame_pixels``), at most :data:`~trackerd.vision.images.MAX_JPEG_SCANS` scans, at most
:data:`~trackerd.vision.images.MAX_PNG_CHUNKS` chunks, and at most ``max_frame_bytes``. This
measures the most costly frames those limits still let through, each decoded as the server does
(:func:`~trackerd.vision.images.decode_grey`, one thread, CPU time, the median of ``ROUNDS``), next
to an honest 640x480 face frame: if they are all a few milliseconds, nothing needs a decoder in a
process of its own that could be killed.

``python -m benchmarks.bench_decodes``: prints the table and writes ``decodes.json`` into
``--out`` (``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from benchmarks import hostile
from trackerd.settings import DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_FRAME_PIXELS
from trackerd.vision.images import MAX_JPEG_SCANS, decode_grey, read_header

ROUNDS = 7
WIDTH, HEIGHT = 1920, 1080
"""The largest frame ``max_frame_pixels`` admits by default, in the shape of a webcam's."""
assert WIDTH * HEIGHT <= DEFAULT_MAX_FRAME_PIXELS


def _noise(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH), dtype=np.uint8)


def _largest(encode: Callable[[int], bytes], settings: Sequence[int]) -> bytes:
    """The first of ``settings`` (most costly first) whose frame fits ``max_frame_bytes``."""
    for setting in settings:
        data = encode(setting)
        if len(data) <= DEFAULT_MAX_FRAME_BYTES:
            return data
    raise ValueError("no setting fits max_frame_bytes")


def _most_scans() -> bytes:
    """A 1920x1080 progressive JPEG with as many scans as the limit allows."""
    return next(
        data
        for scans in range(MAX_JPEG_SCANS, 0, -1)
        if (data := hostile.jpeg_many_scans(scans=scans, width=WIDTH, height=HEIGHT)).count(
            b"\xff\xda"
        )
        <= MAX_JPEG_SCANS
    )


def _blocks(noise: np.ndarray, block: int) -> np.ndarray:
    """``noise`` in square blocks of ``block`` pixels: smaller blocks compress less."""
    small = noise[: HEIGHT // block + 1, : WIDTH // block + 1]
    return cv2.resize(small, None, fx=block, fy=block, interpolation=cv2.INTER_NEAREST)[
        :HEIGHT, :WIDTH
    ]


def frames() -> dict[str, bytes]:
    noise = _noise()
    blocks = range(2, 64)  # the finest noise that still fits is the most costly to inflate
    return {
        "honest 640x480 face (JPEG q80)": hostile.real_face_jpegs(1)[0],
        f"progressive JPEG, {MAX_JPEG_SCANS} scans": _most_scans(),
        "baseline JPEG of noise, largest quality within 512 KiB": _largest(
            lambda q: cv2.imencode(".jpg", noise, [cv2.IMWRITE_JPEG_QUALITY, q])[1].tobytes(),
            range(95, 0, -5),
        ),
        "PNG of the finest block noise within 512 KiB": _largest(
            lambda b: cv2.imencode(".png", _blocks(noise, b))[1].tobytes(), blocks
        ),
        "lossless WebP of the finest block noise within 512 KiB": _largest(
            lambda b: cv2.imencode(".webp", _blocks(noise, b), [cv2.IMWRITE_WEBP_QUALITY, 101])[
                1
            ].tobytes(),
            blocks,
        ),
    }


def measure(data: bytes) -> dict[str, Any]:
    header = read_header(data)
    cpu_ms = []
    for _ in range(ROUNDS):
        started = time.thread_time()
        decoded = decode_grey(data, header)
        cpu_ms.append(1000 * (time.thread_time() - started))
    return {
        "bytes": len(data),
        "size": [header.width, header.height],
        "decoded": list(decoded.grey.shape[::-1]),
        "decode_ms_median": statistics.median(cpu_ms),
        "decode_ms_max": max(cpu_ms),
    }


def run() -> dict[str, Any]:
    cv2.setNumThreads(1)
    results = {}
    print(f"{'frame':<58} {'bytes':>7} {'size':>10} {'decoded':>8} {'median ms':>9} {'max ms':>7}")
    for name, data in frames().items():
        r = results[name] = measure(data)
        print(
            f"{name:<58} {r['bytes']:>7} {'x'.join(map(str, r['size'])):>10} "
            f"{'x'.join(map(str, r['decoded'])):>8} {r['decode_ms_median']:>9.2f} "
            f"{r['decode_ms_max']:>7.2f}",
            flush=True,
        )
    return results


def main(argv: Sequence[str] | None = None) -> None:
    from benchmarks.__main__ import RESULTS, make_record

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.time()
    results = run()
    command = ["-m", "benchmarks.bench_decodes", *(argv or sys.argv[1:])]
    record = make_record("decodes", command, False, started, results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "decodes.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
