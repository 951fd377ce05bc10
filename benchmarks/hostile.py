"""Hostile frames a candidate can push: each a pure, deterministic function returning the bytes.

Each generator names the item of issue 20 it attacks. The attack benchmark
(``benchmarks/bench_attacks.py``) sends them to a real server; the server's tests import them to
show each hole before and after its fix. Every frame here is within the server's default limits
(``--max-frame-bytes`` 512 KiB, a declared size under ``--max-frame-pixels`` 1920x1080), which
is what makes it an attack rather than a refused frame.
"""

from __future__ import annotations

import struct
import zlib
from typing import Final

import cv2
import numpy as np

MAX_FRAME_BYTES: Final = 524288
"""trackerd's default ``--max-frame-bytes``: each frame is built to fit it."""

_SOI: Final = b"\xff\xd8"
_EOI: Final = b"\xff\xd9"
_SOF0: Final = 0xC0
_SOF2: Final = 0xC2
_SOS: Final = 0xDA
_APP0: Final = 0xE0


def _encode(image: np.ndarray, ext: str, *params: int) -> bytes:
    ok, data = cv2.imencode(ext, image, list(params))
    assert ok, f"cv2 could not encode a {image.shape} image as {ext}"
    return bytes(data.tobytes())


def _grey(width: int, height: int, level: int = 128) -> np.ndarray:
    return np.full((height, width), level, np.uint8)


def jpeg_segments(data: bytes) -> list[bytes]:
    """A JPEG cut into its marker segments, each with its marker; the entropy-coded data of a
    scan stays with its SOS segment, and EOI is the last. Only for well-formed JPEGs (cv2's)."""
    assert data.startswith(_SOI)
    out, i = [_SOI], 2
    while i < len(data):
        marker = data[i + 1]
        if marker == _EOI[1]:
            out.append(_EOI)
            break
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        end = i + 2 + length
        if marker == _SOS:  # the scan's data runs to the next marker that is not stuffing/RSTn
            while not (data[end] == 0xFF and data[end + 1] not in (0x00, *range(0xD0, 0xD8))):
                end += 1
        out.append(data[i:end])
        i = end
    return out


def _with_size(sof: bytes, width: int, height: int) -> bytes:
    """A start-of-frame segment declaring ``width`` x ``height`` instead."""
    return sof[:5] + struct.pack(">HH", height, width) + sof[9:]


def jpeg_hidden_sof(width: int = 6000, height: int = 6000) -> bytes:
    """Issue 20, item 1: a ~350-byte JPEG that declares 16x16 to a naive marker walker and
    decodes at ``width`` x ``height``.

    The first marker after SOI is ``FF 00``: a walker that takes every ``FF xx`` for a marker
    with a length reads the next two bytes as one and skips what they cover, a whole 16x16
    image whose frame header says ``width`` x ``height``. After it comes the original 16x16
    frame header, which is what the walker finds. libjpeg skips ``FF 00`` as stray bytes, decodes
    the hidden image at the hidden size, and ignores the later SOF (its decoding is done).
    """
    segments = jpeg_segments(_encode(_grey(16, 16), ".jpg"))
    body = [s for s in segments[1:-1] if s[1] != _APP0]
    sof = next(s for s in body if s[1] == _SOF0)
    hidden = b"".join(_with_size(s, width, height) if s is sof else s for s in body)
    return _SOI + b"\xff\x00" + struct.pack(">H", len(hidden) + 2) + hidden + sof + _EOI


def _huffman_table(symbols: list[int]) -> bytes:
    """A DHT segment for AC table 0: the ``symbols``, each with a fixed-length code (the all-ones
    code of that length is left unused, as the standard requires)."""
    bits = max(1, (len(symbols)).bit_length())
    counts = [0] * 16
    counts[bits - 1] = len(symbols)
    body = bytes([0x10, *counts, *symbols])  # class 1 (AC), table 0
    return b"\xff\xc4" + struct.pack(">H", 2 + len(body)) + body


def _eob_runs(blocks: int) -> list[tuple[int, int]]:
    """``blocks`` as EOB runs ``(r, extra)``: run ``2**r + extra``, at most 32767 each."""
    runs = []
    while blocks:
        run = min(blocks, 32767)
        r = run.bit_length() - 1
        runs.append((r, run - (1 << r)))
        blocks -= run
    return runs


def _empty_ac_scan_data(blocks: int) -> tuple[bytes, bytes]:
    """The DHT segment and the entropy-coded data of an AC first scan over ``blocks`` blocks in
    which every coefficient stays zero: nothing but end-of-band runs."""
    runs = _eob_runs(blocks)
    symbols = sorted({r << 4 for r, _ in runs})
    width = max(1, len(symbols).bit_length())
    bits = "".join(
        format(symbols.index(r << 4), f"0{width}b") + (format(extra, f"0{r}b") if r else "")
        for r, extra in runs
    )
    bits += "1" * (-len(bits) % 8)  # pad with ones, as the standard says
    data = bytearray()
    for k in range(0, len(bits), 8):
        data.append(int(bits[k : k + 8], 2))
        if data[-1] == 0xFF:
            data.append(0x00)  # byte stuffing
    return _huffman_table(symbols), bytes(data)


def jpeg_many_scans(
    scans: int = 42992, width: int = 1920, height: int = 1080, max_bytes: int = MAX_FRAME_BYTES
) -> bytes:
    """Issue 20, item 2: a progressive grey JPEG of ``width`` x ``height`` with ``scans`` extra
    scans (fewer when they do not fit ``max_bytes``), each costing the decoder a pass over every
    block while adding 12 bytes to the file.

    The base image is flat grey, encoded progressively by cv2. Each added scan is a full
    precision AC first scan (``Ah = Al = 0``) of coefficient 1, whose data is all end-of-band
    runs: legal to repeat, and libjpeg does not warn about it, so the frame decodes cleanly.
    """
    base = _encode(_grey(width, height), ".jpg", cv2.IMWRITE_JPEG_PROGRESSIVE, 1)
    segments = jpeg_segments(base)
    sof = next(s for s in segments if s[1] == _SOF2)
    component = sof[10]  # the first (only) component's id
    blocks = -(-width // 8) * -(-height // 8)
    table, data = _empty_ac_scan_data(blocks)
    scan = b"\xff\xda" + struct.pack(">HBBBBBB", 8, 1, component, 0x00, 1, 1, 0x00) + data
    fit = (max_bytes - len(base) - len(table)) // len(scan)
    return base[:-2] + table + scan * max(0, min(scans, fit)) + _EOI


def jpeg_fill_bytes(size: int = MAX_FRAME_BYTES) -> bytes:
    """Issue 20, item 3: a ``size``-byte JPEG that is nearly all ``0xFF`` fill bytes after SOI,
    then a 16x16 grey image's segments.

    Fill bytes are legal between markers: libjpeg skips them in C, while a marker walker in
    Python spends one iteration on each before it finds the frame header. The frame decodes.
    """
    tail = _encode(_grey(16, 16), ".jpg")[2:]
    return _SOI + b"\xff" * max(0, size - 2 - len(tail)) + tail


def _png_chunk(kind: bytes, body: bytes = b"") -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_empty_chunks(chunks: int = 43000) -> bytes:
    """Issue 20, item 3: a valid 16x16 grey PNG with ``chunks`` empty private ancillary chunks
    (``prVt``, valid CRCs) between IHDR and IDAT, 12 bytes each.

    Decoders skip unknown ancillary chunks; a chunk-by-chunk check in Python costs one
    iteration and a CRC call on each.
    """
    png = _encode(_grey(16, 16), ".png")
    ihdr_end = 8 + 8 + 13 + 4  # signature, then IHDR: length, type, 13 bytes, CRC
    return png[:ihdr_end] + _png_chunk(b"prVt") * chunks + png[ihdr_end:]


def jpeg_block_noise(
    width: int = 1279,
    height: int = 1621,
    block: int = 8,
    seed: int = 0,
    max_bytes: int = MAX_FRAME_BYTES,
) -> bytes:
    """Issue 20, item 4: a valid baseline JPEG of random grey ``block`` x ``block`` squares,
    at the best quality that fits ``max_bytes``.

    1279 wide is just under the width (1280) from which frames are decoded at half size, and
    1279x1621 just under 1920x1080 pixels. Every window of the face search finds edges, so the
    Haar cascade's early stages pass nearly everywhere: seconds of search per frame.
    """
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 256, (-(-height // block), -(-width // block)), dtype=np.uint8)
    image = np.kron(cells, np.ones((block, block), np.uint8))[:height, :width]
    low, high = 1, 100  # the best quality that fits: bisection on cv2's quality
    best = _encode(image, ".jpg", cv2.IMWRITE_JPEG_QUALITY, low)
    while low <= high:
        quality = (low + high) // 2
        data = _encode(image, ".jpg", cv2.IMWRITE_JPEG_QUALITY, quality)
        if len(data) <= max_bytes:
            best, low = data, quality + 1
        else:
            high = quality - 1
    return best


def real_face_jpegs(count: int, size: tuple[int, int] = (640, 480)) -> list[bytes]:
    """``count`` honest frames: the bundled demo clip's real face as the sessions benchmark
    sends it (padded to 640x480, JPEG quality 80), resized to ``size`` if it differs, looping
    over the clip's face part when ``count`` is larger."""
    from benchmarks.bench_sessions import JPEG_QUALITY, PEXELS_FRAMES, webcam_jpegs

    images, jpegs = webcam_jpegs(min(count, PEXELS_FRAMES))
    if size != (640, 480):
        jpegs = [
            _encode(
                cv2.resize(i, size, interpolation=cv2.INTER_AREA),
                ".jpg",
                cv2.IMWRITE_JPEG_QUALITY,
                JPEG_QUALITY,
            )
            for i in images
        ]
    return [jpegs[k % len(jpegs)] for k in range(count)]
