"""Where frames come from: cameras, video files, image folders, stream URLs and the demo clip;
or nowhere, with ``none`` (:data:`NO_SOURCE`: push sessions only).

Every source is a blocking object with ``read() -> Frame | None`` and ``close()``. Callers on the
event loop run both in a worker thread (cv2 releases the GIL while it decodes). This module is the
only one that touches ``cv2.VideoCapture``. :func:`check_frame` is what a frame must pass before
a tracker sees it: a source's bytes (a corrupt file, a driver that lies) are not trusted.

Timestamps: files, folders and the demo clip use *media time* (the container's presentation time,
which matters for the variable-frame-rate ``.mov`` files), so smoothing behaves the same whether a
file is analysed flat out or played back in real time. Cameras and streams use the monotonic clock
at the moment the frame arrived.

Image folders: as a source, a folder is one frame sequence (its images in name order at
:data:`DEFAULT_FOLDER_FPS`), the only way a server can play it. ``trackerd analyze`` takes a
folder as separate photos instead, each through :func:`folder_images` and a fresh tracker, unless
told ``--sequence`` (see :mod:`trackerd.analyze`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final, cast
from urllib.parse import urlsplit

import cv2
import numpy as np
from numpy.typing import NDArray

from trackerd.errors import TrackerdError
from trackerd.redact import redact

AUTO_CAMERA_INDICES: Final = (0, 1, 2)
"""What ``--source auto`` tries, in order (as the original server did)."""

IMAGE_SUFFIXES: Final = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})

DEFAULT_FOLDER_FPS: Final = 30.0
"""Frame rate assumed for an image folder (a folder of frames exported from a video)."""

FALLBACK_FPS: Final = 30.0
"""Frame rate assumed when a container reports none."""

DEMO_CLIP: Final = "demo.mp4"

NO_SOURCE: Final = "none"
"""``--source none``: push sessions only, the default of every cloud recipe. A server in the
cloud has no camera, and the demo clip there would answer a client that forgot
``"source": "client"`` with a stranger's realistic ``eye_data``: silent fake data in a
proctoring product. With ``none`` nothing is ever opened and such a client is told, instead
(:data:`trackerd.capture.PUSH_ONLY`)."""

MAX_FRAME_SIDE: Final = 8192
"""The largest width or height :func:`check_frame` lets through (8K video is 7680 wide); a
bigger frame is a corrupt header, and would cost the tracker gigabytes."""

FRAME_CHANNELS: Final = frozenset({1, 3, 4})
"""Grey, BGR or BGRA."""

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


class SourceError(TrackerdError):
    """A source could not be opened or stopped delivering frames. The message says which and why."""


@dataclass(frozen=True, slots=True)
class Frame:
    image: NDArray[np.uint8]
    """BGR (or grey) pixels."""
    t: float
    """Seconds: media time for files, monotonic time for live sources."""
    index: int
    """0-based count of frames this source has delivered."""


class BadFrame(TrackerdError, ValueError):
    """A frame that must not reach the tracker. The message says what is wrong with it."""


def check_frame(frame: object) -> Frame:
    """``frame`` if a tracker can take it, else :class:`BadFrame` saying why.

    A frame must hold a non-empty ``uint8`` array, grey ``(h, w)`` or ``(h, w, c)`` with 1, 3 or
    4 channels, at most :data:`MAX_FRAME_SIDE` on each side, with a finite time. A one-channel
    ``(h, w, 1)`` image comes back as a grey ``(h, w)`` view, the form the tracker takes.
    """
    if not isinstance(frame, Frame):
        raise BadFrame(f"not a frame but {type(frame).__name__}")
    image: object = frame.image
    if not isinstance(image, np.ndarray):
        raise BadFrame(f"the image is {type(image).__name__}, not an array")
    if image.dtype != np.uint8:
        raise BadFrame(f"the image is {image.dtype}, not uint8")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in FRAME_CHANNELS):
        raise BadFrame(f"the image has shape {image.shape}, not (h, w) or (h, w, 1|3|4)")
    height, width = image.shape[:2]
    if not (0 < height <= MAX_FRAME_SIDE and 0 < width <= MAX_FRAME_SIDE):
        raise BadFrame(f"the image is {width}x{height}, outside 1..{MAX_FRAME_SIDE} a side")
    t: object = frame.t
    if not isinstance(t, (int, float)) or not math.isfinite(t):
        raise BadFrame(f"its time is {t!r}")
    if image.ndim == 3 and image.shape[2] == 1:
        return dataclasses.replace(frame, image=image[:, :, 0])
    return frame


class Source:
    """Base class: a blocking frame reader. Subclasses implement :meth:`_read`."""

    description: str = "source"
    live: bool = False
    """True when frames arrive in real time (cameras, streams); False for files, which a server
    paces to their media time and an analysis reads as fast as it can."""

    def __init__(self) -> None:
        self._count = 0

    def read(self) -> Frame | None:
        """The next frame, or ``None`` once a finite source has ended. Raises SourceError."""
        got = self._read()
        if got is None:
            return None
        image, t = got
        frame = Frame(image=image, t=t, index=self._count)
        self._count += 1
        return frame

    def _read(self) -> tuple[NDArray[np.uint8], float] | None:
        raise NotImplementedError

    def close(self) -> None:
        """Release the device or file. Safe to call twice."""

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.read()) is not None:
            yield frame

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Capture(Source):
    """Anything ``cv2.VideoCapture`` opens."""

    def __init__(self, target: int | str, description: str, *, live: bool) -> None:
        super().__init__()
        self.description = description
        self.live = live
        self._target = target
        self._cap = cv2.VideoCapture(target)
        if not self._cap.isOpened():
            self._cap.release()
            raise SourceError(f"cannot open {description}")
        fps = float(self._cap.get(cv2.CAP_PROP_FPS))
        self.fps = fps if math.isfinite(fps) and 0 < fps <= 1000 else FALLBACK_FPS
        self._last_t = -math.inf

    def _grab(self) -> NDArray[np.uint8] | None:
        if self._cap is None:
            raise SourceError(f"{self.description} is closed")
        ok, image = self._cap.read()
        return cast(NDArray[np.uint8], image) if ok and image is not None and image.size else None

    def _media_time(self) -> float:
        """The frame's presentation time, kept strictly increasing even if the container lies."""
        t = float(self._cap.get(cv2.CAP_PROP_POS_MSEC)) / 1000.0
        if not math.isfinite(t) or t <= self._last_t:
            t = self._last_t + 1.0 / self.fps if math.isfinite(self._last_t) else 0.0
        self._last_t = t
        return t

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None  # type: ignore[assignment]


class CameraSource(_Capture):
    def __init__(self, index: int) -> None:
        super().__init__(index, f"camera {index}", live=True)

    def _read(self) -> tuple[NDArray[np.uint8], float] | None:
        image = self._grab()
        if image is None:
            # A camera has no end: no frame means it was unplugged or its driver failed.
            raise SourceError(f"{self.description} stopped delivering frames")
        return image, time.monotonic()


class StreamSource(_Capture):
    def __init__(self, url: str) -> None:
        super().__init__(url, f"stream {redact(url)}", live=True)

    def _read(self) -> tuple[NDArray[np.uint8], float] | None:
        image = self._grab()
        if image is None:
            raise SourceError(f"{self.description} stopped delivering frames")
        return image, time.monotonic()


class VideoFileSource(_Capture):
    """A video file, read once (or forever with ``loop=True``, media time carrying on)."""

    def __init__(self, path: Path, *, loop: bool = False, description: str | None = None) -> None:
        super().__init__(str(path), description or f"video file {path}", live=False)
        self._loop = loop
        self._offset = 0.0
        self._path = path

    def _read(self) -> tuple[NDArray[np.uint8], float] | None:
        image = self._grab()
        if image is None and self._loop and self._count > 0:
            # Rewind; the timeline continues one frame interval after the last frame.
            self._offset += self._last_t + 1.0 / self.fps
            self._last_t = -math.inf
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            image = self._grab()
            if image is None:
                raise SourceError(f"{self.description} could not be rewound")
            return image, self._offset + self._media_time()
        if image is None:
            if self._count == 0:
                raise SourceError(f"{self.description} has no decodable frames")
            return None
        return image, self._offset + self._media_time()


class ImageFilesSource(Source):
    """Still images (one file, or every image in a folder, sorted by name) as a frame sequence,
    read once, or forever with ``loop=True``: a served image is a still, the same frame at
    ``fps`` for as long as anyone tracks, as a served video file plays on a loop."""

    def __init__(
        self,
        paths: list[Path],
        description: str,
        fps: float = DEFAULT_FOLDER_FPS,
        *,
        loop: bool = False,
    ) -> None:
        super().__init__()
        if not paths:
            raise SourceError(_no_images(description))
        self.description = description
        self._paths = paths
        self._fps = fps
        self._loop = loop

    def _read(self) -> tuple[NDArray[np.uint8], float] | None:
        if self._count >= len(self._paths) and not self._loop:
            return None
        path = self._paths[self._count % len(self._paths)]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise SourceError(f"cannot decode image {path}")
        return cast(NDArray[np.uint8], image), self._count / self._fps


def folder_images(folder: Path) -> list[Path]:
    """The images in ``folder`` (by suffix: :data:`IMAGE_SUFFIXES`), in name order. Other files
    and subfolders are ignored; a folder with no image at all is a SourceError."""
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise SourceError(_no_images(f"image folder {folder}"))
    return images


def planned_description(spec: str) -> str:
    """What ``open_source(spec)`` will open, in the words of its ``description``, said without
    opening anything (a camera's light stays off until someone tracks). A stream URL loses its
    credentials: ``status`` shows this to every client."""
    spec = spec.strip()
    if spec == NO_SOURCE:
        return "no source (push sessions only)"
    if spec == "auto":
        *first, last = (str(i) for i in AUTO_CAMERA_INDICES)
        return f"camera {', '.join(first)} or {last}"
    if spec.isdigit():
        return f"camera {int(spec)}"
    if spec == "demo":
        return "demo clip"
    if _URL.match(spec):
        return f"stream {redact(spec)}"
    path = Path(spec)
    if path.is_dir():
        return f"image folder {path}"
    return f"{'image' if path.suffix.lower() in IMAGE_SUFFIXES else 'video file'} {path}"


def _no_images(description: str) -> str:
    return f"{description} contains no images ({', '.join(sorted(IMAGE_SUFFIXES))})"


def demo_clip_path() -> Path:
    """The real face clip shipped inside the package (see ``trackerd/data/SOURCE.txt``)."""
    path = Path(str(resources.files("trackerd") / "data" / DEMO_CLIP))
    if not path.is_file():
        raise SourceError(f"the demo clip is missing from the installed package: {path}")
    return path


def open_source(spec: str, *, loop_files: bool = False) -> Source:
    """Open what ``--source`` names. Blocking (a camera can take a second to open).

    ``auto`` tries cameras 0, 1, 2; a number is a camera index; ``demo`` is the bundled clip
    (always looping); a ``scheme://`` URL is a stream; a folder is its images in name order; any
    other path is a video file or a single image. ``loop_files`` plays files, folders and
    images again from the start when they end (an image is then a still). Raises
    :class:`SourceError` with the reason, also for ``none`` (:data:`NO_SOURCE`), which names
    nothing to open.
    """
    spec = spec.strip()
    if spec == NO_SOURCE:
        raise SourceError(
            "--source none opens nothing: it serves push sessions only (each client sends its "
            "own frames)"
        )
    if spec == "auto":
        for index in AUTO_CAMERA_INDICES:
            try:
                return CameraSource(index)
            except SourceError:
                continue
        tried = ", ".join(str(i) for i in AUTO_CAMERA_INDICES)
        raise SourceError(f"no camera could be opened (tried indices {tried})")
    if spec.isdigit():
        return CameraSource(int(spec))
    if spec == "demo":
        return VideoFileSource(demo_clip_path(), loop=True, description="demo clip")
    if _URL.match(spec):
        return StreamSource(spec)
    path = Path(spec)
    if path.is_dir():
        return ImageFilesSource(folder_images(path), f"image folder {path}", loop=loop_files)
    if not path.exists():
        raise SourceError(f"no such file or folder: {redact(str(path))}")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageFilesSource([path], f"image {path}", loop=loop_files)
    return VideoFileSource(path, loop=loop_files)


def check_source(spec: str) -> None:
    """Refuse, with :class:`SourceError`, what is wrong with ``spec`` before anything is
    opened: a path that does not exist or cannot be read, a folder with no images, a URL with
    no host or a bad port. A server started with such a source would only fail at its first
    client. Cameras (``auto``, an index) can only be checked by opening them, which would turn
    a camera's light on at start-up, and a file's or stream's content only by reading it: those
    fail, as before, when a client starts tracking. ``none`` (:data:`NO_SOURCE`) has nothing to
    check: it is valid as it is, and a file named ``none`` would need ``./none``."""
    spec = spec.strip()
    if spec in ("auto", NO_SOURCE) or spec.isdigit():
        return
    if spec == "demo":
        demo_clip_path()
    elif _URL.match(spec):
        _check_url(spec)
    elif Path(spec).is_dir():
        folder_images(Path(spec))  # raises when it holds no image
    elif not Path(spec).exists():
        # Redacted: "rtsp:/user:pw@host" (one slash) is a typo of a URL, read here as a path.
        raise SourceError(f"no such file or folder: {redact(spec)}")
    elif not os.access(spec, os.R_OK):
        raise SourceError(f"cannot read {redact(spec)}: permission denied")


def _check_url(url: str) -> None:
    if any(c.isspace() for c in url):
        # Not echoed: redaction ends a URL at whitespace, and a password may hold a space.
        raise SourceError("the stream URL contains spaces (encode them as %20)")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing it is the check: "host:http" raises ValueError
    except ValueError as exc:
        # Python's reason quotes the port or host, which a raw "/" in a password makes part of
        # the password ("p@ss:w/rd@host" reads as host "ss", port "w"): said only when the
        # redacted URL hides nothing.
        shown = redact(url)
        reason = str(exc) if shown == url else _UNPARSED_AUTHORITY
        raise SourceError(f"stream URL {shown}: {reason}") from None
    if not parts.hostname and parts.scheme.lower() != "file":
        raise SourceError(f"stream URL {redact(url)} names no host")


_UNPARSED_AUTHORITY: Final = (
    "its host and port cannot be read (a port is a number from 0 to 65535; a '/', '?' or '#' "
    "in a user name or password must be percent-encoded: %2F, %3F, %23)"
)
