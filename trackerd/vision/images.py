"""Frames a client pushes: what they will cost, read before anything is decoded, then decoded
straight to grey at the size the tracker needs.

A pushed frame is hostile until proven otherwise, so its cost is bounded before the expensive
work starts, by :func:`read_header`, which runs in C in time linear in the header:

- **The size the decoder will use.** A 400 KB PNG of zeros decodes to 400 MB, so the server
  refuses a frame over ``max_frame_pixels`` before decoding it. The size must be the one the
  *decoder* reads: a hand-written JPEG marker walk once read a ``FF 00`` as a segment with a
  length and skipped what libjpeg decodes, so a 365-byte JPEG that "declared" 16x16 decoded at
  6000x6000 (2.8 GB of RSS with two such sessions). JPEG headers are now read by libjpeg-turbo
  itself (``jpeg_read_header`` through simplejpeg), and JPEGs are decoded by the same library:
  the size checked is the size decoded. PNG's size is its IHDR, which libpng requires to be
  the first chunk; WebP's is its first chunk's, which libwebp checks against the bitstream.
- **At most** :data:`MAX_JPEG_SCANS` **scans.** A progressive JPEG decodes every scan over the
  whole image: 42,992 tiny scans in 512 KiB took ~19 s. Every scan starts with an SOS marker,
  ``FF DA``, and an ``FF`` in entropy-coded data is always followed by ``00`` or a restart
  marker, so ``data.count(b"\xff\xda")`` (C, ~0.05 ms for 512 KiB) bounds the scans from
  above.
- **At most** :data:`MAX_PNG_CHUNKS` **chunks**, checked in the analysis thread before libpng
  sees the file (lengths and CRCs, up to IEND): libpng reports a damaged file on stderr itself,
  and a walk over 43,000 empty chunks held the GIL ~130 ms.

:func:`decode_grey` then decodes to grey at once (the tracker works on grey; colour costs 4-5x
more), and never larger than the tracker needs: a JPEG whose longer side is over
:data:`TRACKER_SIDE` is decoded by libjpeg-turbo at the smallest of its M/8 scales that keeps
that side at least :data:`TRACKER_SIDE` (libjpeg then skips most of the work), then shrunk to
it; a PNG or WebP is shrunk right after decoding. So no frame is searched larger than
640x640, whatever was pushed: block noise built to pass the face cascade's first stages cost
3.9 s at 1279x1621 (decoded whole before), and costs ~220 ms at 640x480. The tracker's
coordinates are scaled back to the frame's own pixels by the caller, with the factor returned
here.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Final, Literal, cast

import cv2
import numpy as np
import simplejpeg
from numpy.typing import NDArray

from trackerd.errors import TrackerdError

TRACKER_SIDE: Final = 640
"""The longest side of a frame the tracker searches: it finds faces downscaled from here anyway
(tracker.py), so a 1280x720 frame is decoded at 640x360, and a 1920x1080 one at 720x405 (3/8)
and shrunk to 640x360."""
MAX_JPEG_SCANS: Final = 32
"""libjpeg's own progressive JPEGs have 6 (grey) or 10 (colour) scans, mozjpeg's ~10-12;
browsers send baseline JPEGs (1 scan). Each scan of a progressive JPEG costs ~1 ms at
1920x1080 here, so 32 bound the decode at ~35 ms for the largest frame allowed."""
MAX_PNG_CHUNKS: Final = 256
"""Encoders write a few header chunks and IDAT in 8-64 KiB pieces: a 512 KiB PNG in 8 KiB IDATs
has 64 chunks. The walk costs ~1 µs a chunk in Python."""

_PNG: Final = b"\x89PNG\r\n\x1a\n"
_JPEG: Final = b"\xff\xd8"
_SOS: Final = b"\xff\xda"

Kind = Literal["jpeg", "png", "webp"]


class BadImage(TrackerdError):
    """A frame that is not an image this server decodes; the message says why."""


@dataclass(frozen=True, slots=True)
class Header:
    """What a frame will cost to decode, as its decoder reads it."""

    kind: Kind
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass(frozen=True, slots=True)
class Decoded:
    grey: NDArray[np.uint8]
    scale: float
    """The frame's pixels per pixel of ``grey`` (1 when decoded at full size)."""


def read_header(data: bytes) -> Header:
    """The frame's kind and size as its decoder reads them, without decoding anything; refuses
    a JPEG over :data:`MAX_JPEG_SCANS` scans. Runs in C, in time linear in the header."""
    if data.startswith(_JPEG):
        scans = data.count(_SOS)
        if scans > MAX_JPEG_SCANS:
            raise BadImage(f"a JPEG in {scans} scans (at most {MAX_JPEG_SCANS})")
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data, strict=True)
        except ValueError as exc:  # libjpeg's own message: a warning counts as an error
            raise BadImage(f"a JPEG whose header does not read ({_reason(exc)})") from None
        return Header("jpeg", width, height)
    if data.startswith(_PNG):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise BadImage("a PNG without its IHDR header")
        width, height = struct.unpack(">II", data[16:24])
        return Header("png", width, height)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return Header("webp", *_webp_size(data))
    raise BadImage("not a JPEG, PNG or WebP image")


def _reason(exc: ValueError) -> str:
    """simplejpeg prefixes libjpeg's message with the TurboJPEG call that failed."""
    return str(exc).split("): ", 1)[-1]


def _check_png(data: bytes) -> None:
    i = len(_PNG)
    for _ in range(MAX_PNG_CHUNKS):
        if i + 12 > len(data):
            raise BadImage("a PNG cut short")
        (length,) = struct.unpack(">I", data[i : i + 4])
        end = i + 12 + length
        if end > len(data):
            raise BadImage("a PNG cut short")
        kind_and_body = data[i + 4 : end - 4]
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(kind_and_body) != crc:
            raise BadImage(f"a PNG whose {kind_and_body[:4].decode('latin-1')!r} chunk is damaged")
        if kind_and_body[:4] == b"IEND":
            return
        i = end
    raise BadImage(f"a PNG in more than {MAX_PNG_CHUNKS} chunks")


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


def decode_grey(data: bytes, header: Header | None = None) -> Decoded:
    """Decode to grey, its longer side shrunk towards :data:`TRACKER_SIDE` when it is longer.
    ``header`` is :func:`read_header`'s, when the caller has it already. Raises
    :class:`BadImage` when the bytes do not decode."""
    header = header if header is not None else read_header(data)
    if header.width == 0 or header.height == 0:
        raise BadImage("its header declares an empty image")
    if header.kind == "jpeg":
        return _decode_jpeg(data, header)
    if header.kind == "png":
        # libpng reports a damaged file on stderr by itself, which would break JSON logs: a
        # PNG is checked chunk by chunk first (lengths and CRCs, up to IEND), which costs a
        # CRC over the file, and what fails the check is never handed to it.
        _check_png(data)
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    except cv2.error as exc:  # OpenCV raises on some malformed headers instead of returning None
        raise BadImage(f"it does not decode ({exc.err})") from None
    if image is None or image.ndim != 2 or image.size == 0:
        raise BadImage("it does not decode")
    height, width = image.shape
    if (width, height) != (header.width, header.height):
        raise BadImage(
            f"it decodes at {width}x{height}, not the {header.width}x{header.height} "
            "its header declares"
        )
    return _shrunk(cast(NDArray[np.uint8], image), header)


def _shrunk(image: NDArray[np.uint8], header: Header) -> Decoded:
    """``image`` with its longer side at most :data:`TRACKER_SIDE`."""
    height, width = image.shape
    side = max(width, height)
    if side > TRACKER_SIDE:
        size = (round(width * TRACKER_SIDE / side), round(height * TRACKER_SIDE / side))
        image = cast(NDArray[np.uint8], cv2.resize(image, size, interpolation=cv2.INTER_AREA))
    return Decoded(image, header.width / image.shape[1])


def _decode_jpeg(data: bytes, header: Header) -> Decoded:
    side = max(header.width, header.height)
    shrink = TRACKER_SIDE / side if side > TRACKER_SIDE else 1.0
    try:
        image = simplejpeg.decode_jpeg(
            data,
            colorspace="GRAY",
            # libjpeg-turbo picks the smallest M/8 scale that keeps both at least these.
            min_width=int(header.width * shrink),
            min_height=int(header.height * shrink),
            strict=True,
        )
    except ValueError as exc:
        raise BadImage(f"it does not decode ({_reason(exc)})") from None
    return _shrunk(image.reshape(image.shape[:2]), header)
