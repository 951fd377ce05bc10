"""Pushed frames' headers and decoding, without a server: the size each format declares, what
is refused before decoding, and the reduced decode."""

from __future__ import annotations

import functools

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.typing import NDArray

from tests.media import DATA, frames
from trackerd.images import BadImage, declared_size, decode_grey


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
def test_the_declared_size_is_the_decoded_size(
    ext: str, params: dict[str, int], width: int, height: int
) -> None:
    data = encoded(ext, width, height, **params)
    assert declared_size(data) == (width, height)
    decoded = decode_grey(data, width)
    h, w = decoded.grey.shape
    assert (w * decoded.scale, h * decoded.scale) == (width, height)


def test_wide_frames_are_decoded_reduced_and_say_by_how_much() -> None:
    assert decode_grey(encoded(".jpg", 640, 360), 640).scale == 1
    assert decode_grey(encoded(".jpg", 1280, 720), 1280).scale == 2
    assert decode_grey(encoded(".jpg", 2560, 1440), 2560).scale == 4


def test_a_png_cut_short_is_refused_before_libpng_sees_it(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """libpng prints its complaints on stderr itself, which would break JSON logs."""
    data = encoded(".png", 320, 180)
    with pytest.raises(BadImage, match="cut short"):
        decode_grey(data[: len(data) // 2], 320)
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0xFF
    with pytest.raises(BadImage, match="damaged"):
        decode_grey(bytes(damaged), 320)
    assert capfd.readouterr().err == ""


@given(st.binary(max_size=3000))
def test_any_bytes_give_a_size_or_bad_image(data: bytes) -> None:
    try:
        width, height = declared_size(data)
    except BadImage:
        return
    assert width >= 0 and height >= 0


@given(st.integers(0, 99))
def test_any_truncation_of_a_real_jpeg_decodes_or_is_bad_image(percent: int) -> None:
    data = encoded(".jpg", 320, 180)
    cut = data[: len(data) * percent // 100]
    try:
        declared_size(cut)
        decoded = decode_grey(cut, 320)
    except BadImage:
        return
    assert decoded.grey.dtype == np.uint8 and decoded.grey.ndim == 2
