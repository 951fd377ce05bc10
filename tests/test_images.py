"""Pushed frames' headers and decoding, without a server: the size each format's decoder reads,
what is refused before decoding, and the reduced decode. The frames built to attack a server
(issue 20) come from :mod:`benchmarks.hostile`, which the attack benchmark sends too."""

from __future__ import annotations

import functools

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.typing import NDArray

from benchmarks import hostile
from tests.media import DATA, frames
from trackerd.vision.images import (
    MAX_JPEG_SCANS,
    MAX_PNG_CHUNKS,
    TRACKER_SIDE,
    BadImage,
    decode_grey,
    read_header,
)


@functools.cache
def face() -> NDArray[np.uint8]:
    return frames(DATA / "single_face.mp4")[0].image


def encoded(ext: str, width: int, height: int, **params: int) -> bytes:
    image = cv2.resize(face(), (width, height))
    flags = [v for pair in params.items() for v in (getattr(cv2, pair[0]), pair[1])]
    ok, data = cv2.imencode(ext, image, flags)
    assert ok
    return data.tobytes()


@pytest.mark.parametrize(
    ("ext", "params"),
    [
        (".jpg", {}),
        (".jpg", {"IMWRITE_JPEG_PROGRESSIVE": 1}),
        (".png", {}),
        (".webp", {"IMWRITE_WEBP_QUALITY": 80}),
        (".webp", {"IMWRITE_WEBP_QUALITY": 101}),  # lossless: VP8L
    ],
)
@pytest.mark.parametrize(("width", "height"), [(640, 360), (97, 53), (1920, 1080)])
def test_the_header_size_is_the_decoded_size(
    ext: str, params: dict[str, int], width: int, height: int
) -> None:
    data = encoded(ext, width, height, **params)
    header = read_header(data)
    assert (header.width, header.height) == (width, height)
    decoded = decode_grey(data, header)
    h, w = decoded.grey.shape
    assert max(w, h) == min(TRACKER_SIDE, max(width, height))
    assert w * decoded.scale == pytest.approx(width, rel=0.01)
    assert h * decoded.scale == pytest.approx(height, rel=0.01)


@pytest.mark.parametrize("ext", [".jpg", ".png", ".webp"])
@pytest.mark.parametrize(
    ("width", "height", "decoded"),
    [
        ((640, 360, (640, 360))),
        ((1280, 720, (640, 360))),
        ((1279, 1621, (505, 640))),  # under the old half-size threshold: decoded whole
        ((2560, 1440, (640, 360))),
        ((1920, 1080, (640, 360))),  # JPEG: decoded at 3/8 (720x405), then shrunk
    ],
)
def test_no_frame_is_decoded_much_larger_than_the_tracker_searches(
    ext: str, width: int, height: int, decoded: tuple[int, int]
) -> None:
    """The search's cost grows with the decoded pixels: it is bounded by the decoded size, not
    the pushed one. 1279x1621 block noise cost 3.9 s a search when it was decoded whole."""
    result = decode_grey(encoded(ext, width, height))
    h, w = result.grey.shape
    assert (w, h) == decoded
    assert w * result.scale == pytest.approx(width, rel=0.01)


def test_a_png_cut_short_is_refused_before_libpng_sees_it(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """libpng prints its complaints on stderr itself, which would break JSON logs."""
    data = encoded(".png", 320, 180)
    with pytest.raises(BadImage, match="cut short"):
        decode_grey(data[: len(data) // 2])
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0xFF
    with pytest.raises(BadImage, match="damaged"):
        decode_grey(bytes(damaged))
    assert capfd.readouterr().err == ""


def test_a_jpeg_is_sized_as_libjpeg_reads_it_not_as_a_marker_walk_would() -> None:
    """Issue 20, item 1: 365 bytes that a marker walk read as 16x16 (it took ``FF 00`` for a
    segment and skipped it) and libjpeg decodes at 6000x6000. libjpeg's own header reader
    refuses it: it warns of stray bytes, and a warning is an error here."""
    data = hostile.jpeg_hidden_sof(6000, 6000)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert decoded is not None and decoded.shape == (6000, 6000)  # what the attack did
    with pytest.raises(BadImage, match="extraneous bytes"):
        read_header(data)


def test_a_jpeg_with_more_scans_than_the_limit_is_refused_at_its_header() -> None:
    """Issue 20, item 2: a progressive JPEG with thousands of scans costs seconds to decode."""
    data = hostile.jpeg_many_scans(scans=MAX_JPEG_SCANS * 4, width=640, height=480)
    with pytest.raises(BadImage, match="scans"):
        read_header(data)
    honest = encoded(".jpg", 640, 480, IMWRITE_JPEG_PROGRESSIVE=1)
    assert read_header(honest).width == 640


def test_fill_bytes_are_libjpegs_to_skip_and_empty_chunks_are_bounded(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Issue 20, item 3: 512 KiB of ``FF`` fill bytes before a 16x16 image (the marker walk
    looped over each in Python, ~140 ms on the event loop; libjpeg skips them in C, and the
    image is legal) and a PNG with 43,000 empty chunks (~130 ms of Python)."""
    fill = hostile.jpeg_fill_bytes()
    header = read_header(fill)
    assert (header.width, header.height) == (16, 16)
    assert decode_grey(fill, header).grey.shape == (16, 16)
    png = hostile.png_empty_chunks(43_000)
    read_header(png)  # IHDR is first: its size is known at once
    with pytest.raises(BadImage, match=f"more than {MAX_PNG_CHUNKS} chunks"):
        decode_grey(png)
    assert capfd.readouterr().err == ""


@given(st.binary(max_size=3000))
def test_any_bytes_give_a_size_or_bad_image(data: bytes) -> None:
    try:
        header = read_header(data)
    except BadImage:
        return
    assert header.width >= 0 and header.height >= 0


@given(st.integers(0, 99))
def test_any_truncation_of_a_real_jpeg_decodes_or_is_bad_image(percent: int) -> None:
    data = encoded(".jpg", 320, 180)
    cut = data[: len(data) * percent // 100]
    try:
        decoded = decode_grey(cut)
    except BadImage:
        return
    assert decoded.grey.dtype == np.uint8 and decoded.grey.ndim == 2
