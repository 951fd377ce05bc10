"""Frames a client pushes: their size read from the header, then decoded straight to grey.

A 400 KB PNG of zeros decodes to 400 MB, so :func:`declared_size` reads the width and height an
image declares from its first bytes (PNG's IHDR, JPEG's start-of-frame marker, WebP's VP8, VP8L
or VP8X chunk) and the server refuses one over ``max_frame_pixels`` before anything is decoded.
Only then does :func:`decode_grey` decode it: to grey at once (the tracker works on grey;
decoding to colour costs 4-5x more), and at half or quarter size when the frame is larger than
the tracker needs (libjpeg then skips most of the work). The tracker's coordinates are scaled back
to the frame's own pixels by the caller, with the factor returned here.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Final, cast

import cv2
import numpy as np
from numpy.typing import NDArray

from trackerd.errors import TrackerdError

TRACKER_WIDTH: Final = 640
"""The widest frame the tracker gains from: it searches faces downscaled from here anyway
(tracker.py), so a 1280-wide frame is decoded at half size and a 2560-wide one at a quarter."""
_REDUCED: Final = ((4, cv2.IMREAD_REDUCED_GRAYSCALE_4), (2, cv2.IMREAD_REDUCED_GRAYSCALE_2))
_JPEG_SOF: Final = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD})
"""Start-of-frame markers (baseline, progressive, lossless...): they carry the dimensions."""
_JPEG_NO_LENGTH: Final = frozenset({0x01, *range(0xD0, 0xD8)})
"""Markers with no length field after them (TEM, RSTn)."""


_PNG: Final = b"\x89PNG\r\n\x1a\n"


class BadImage(TrackerdError):
    """A frame that is not an image this server decodes; the message says why."""


@dataclass(frozen=True, slots=True)
class Decoded:
    grey: NDArray[np.uint8]
    scale: int
    """The frame's pixels per pixel of ``grey`` (1, 2 or 4)."""


def declared_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` as the image's header declares them, without decoding anything."""
    if data.startswith(_PNG):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise BadImage("a PNG without its IHDR header")
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_size(data)
    raise BadImage("not a JPEG, PNG or WebP image")


def _check_png(data: bytes) -> None:
    i = len(_PNG)
    while i + 12 <= len(data):
        (length,) = struct.unpack(">I", data[i : i + 4])
        end = i + 12 + length
        if end > len(data):
            break
        kind_and_body = data[i + 4 : end - 4]
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(kind_and_body) != crc:
            raise BadImage(f"a PNG whose {kind_and_body[:4].decode('latin-1')!r} chunk is damaged")
        if kind_and_body[:4] == b"IEND":
            return
        i = end
    raise BadImage("a PNG cut short")


def _jpeg_size(data: bytes) -> tuple[int, int]:
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise BadImage("a JPEG whose markers are broken")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _JPEG_NO_LENGTH:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _JPEG_SOF:
            if i + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        if marker == 0xDA or length < 2:  # start of scan before any frame header
            raise BadImage("a JPEG without a frame header")
        i += 2 + length
    raise BadImage("a JPEG cut short before its frame header")


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    raise BadImage("a WebP without a frame header this server reads")


def decode_grey(data: bytes, width: int) -> Decoded:
    """Decode to grey, reduced when ``width`` (the declared one) is at least twice what the
    tracker needs. Raises :class:`BadImage` when the bytes do not decode."""
    if data.startswith(_PNG):
        # libpng reports a damaged file on stderr by itself, which would break JSON logs: a
        # PNG is checked chunk by chunk first (lengths and CRCs, up to IEND), which costs a
        # CRC over the file, and what fails the check is never handed to it.
        _check_png(data)
    scale, flag = next(
        ((s, f) for s, f in _REDUCED if width >= s * TRACKER_WIDTH), (1, cv2.IMREAD_GRAYSCALE)
    )
    buffer = np.frombuffer(data, np.uint8)
    try:
        image = cv2.imdecode(buffer, flag)
    except cv2.error as exc:  # OpenCV raises on some malformed headers instead of returning None
        raise BadImage(f"it does not decode ({exc.err})") from None
    if image is None or image.ndim != 2 or image.size == 0:
        raise BadImage("it does not decode")
    return Decoded(cast(NDArray[np.uint8], image), scale)
