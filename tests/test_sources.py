"""Sources on real files: media time, looping, folders, and clear errors for bad paths."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import cv2
import pytest

from tests.media import DATA
from trackerd.sources import (
    NO_SOURCE,
    ImageFilesSource,
    SourceError,
    VideoFileSource,
    check_source,
    demo_clip_path,
    open_source,
    planned_description,
)


def test_video_file_uses_media_time_even_at_variable_frame_rate() -> None:
    with open_source(str(DATA / "face_noface.mov")) as source:
        frames = list(source)
    assert len(frames) == 169
    times = [f.t for f in frames]
    assert times[0] == 0.0
    assert all(b > a for a, b in itertools.pairwise(times))
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # The container's own presentation times: not one fixed interval.
    assert max(gaps) - min(gaps) > 0.01
    assert 6.0 < times[-1] < 6.6


def test_constant_rate_clip_times_match_its_frame_rate() -> None:
    with open_source(str(DATA / "single_face.mp4")) as source:
        frames = list(source)
    assert len(frames) == 72
    assert frames[30].t == pytest.approx(1.0, abs=1e-3)
    assert [f.index for f in frames] == list(range(72))


def test_demo_clip_is_shipped_and_loops_with_time_carrying_on() -> None:
    path = demo_clip_path()
    assert path.is_file() and (path.parent / "SOURCE.txt").is_file()
    with open_source("demo") as source:
        assert not source.live
        frames = [source.read() for _ in range(784)]  # the clip has 776 frames
    assert all(f is not None for f in frames)
    times = [f.t for f in frames if f is not None]
    assert all(b > a for a, b in itertools.pairwise(times))
    assert times[776] - times[775] == pytest.approx(times[1] - times[0], rel=0.01)


def test_image_folder_is_a_sequence_in_name_order(tmp_path: Path) -> None:
    for name in ("b.jpg", "a.png", "notes.txt"):
        src = DATA / ("single_face.jpg" if name.endswith("jpg") else "astronaut.png")
        if name.endswith("txt"):
            (tmp_path / name).write_text("not an image")
        else:
            shutil.copy(src, tmp_path / name)
    with open_source(str(tmp_path)) as source:
        frames = list(source)
    assert [f.image.shape[:2] for f in frames] == [(512, 512), (562, 572)]
    assert frames[1].t > frames[0].t


def test_single_image_is_one_frame() -> None:
    with open_source(str(DATA / "single_face.jpg")) as source:
        assert len(list(source)) == 1


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file or folder"):
        open_source(str(tmp_path / "nope.mp4"))


def test_file_that_is_not_a_video_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"\x00garbage" * 1000)
    with pytest.raises(SourceError, match=r"clip\.mp4"):
        src = open_source(str(bad))
        src.read()


def test_undecodable_image_in_a_folder_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with open_source(str(tmp_path)) as source, pytest.raises(SourceError, match=r"broken\.jpg"):
        source.read()


def test_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="contains no images"):
        open_source(str(tmp_path))


def test_missing_camera_index_is_a_clear_error() -> None:
    # This machine has no camera; index 9 is absent on any ordinary machine.
    with pytest.raises(SourceError, match="camera 9"):
        open_source("9")


def test_auto_says_which_cameras_it_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    if cv2.VideoCapture(0).isOpened():
        pytest.skip("this machine has a camera")
    with pytest.raises(SourceError, match="tried indices 0, 1, 2"):
        open_source("auto")


def test_stream_url_that_cannot_be_opened_hides_credentials() -> None:
    with pytest.raises(SourceError) as info:
        open_source("rtsp://user:secret@127.0.0.1:9/stream")
    assert "secret" not in str(info.value)
    assert "127.0.0.1" in str(info.value)


def test_closing_twice_is_safe_and_reading_after_close_is_an_error() -> None:
    source = open_source(str(DATA / "single_face.mp4"))
    assert isinstance(source, VideoFileSource)
    source.close()
    source.close()
    with pytest.raises(SourceError, match="closed"):
        source.read()


def test_empty_image_list_is_refused() -> None:
    with pytest.raises(SourceError, match="no images"):
        ImageFilesSource([], "nothing")


def test_the_demo_clip_timeline_carries_on_over_several_loops() -> None:
    """What the soak (test_soak.py) stands on: docs/operations.md says the demo clip "loops with its
    timeline carrying on", and the server plays a file at its media time. Over three passes of
    the clip (776 frames, 24 fps) every frame must come one frame interval after the one
    before. (It jumped back a loop's length from the second pass on, and the pacer then
    dropped frames.)"""
    with open_source("demo", loop_files=True) as source:
        times = []
        for _ in range(3 * 776 + 24):
            frame = source.read()
            assert frame is not None
            times.append(frame.t)
    wrong = [
        (i + 1, round(earlier, 3), round(later, 3))
        for i, (earlier, later) in enumerate(itertools.pairwise(times))
        if not 0 < later - earlier < 0.1
    ]
    assert not wrong, f"(frame, t before, t) where the timeline does not carry on: {wrong}"


def test_none_is_valid_names_push_mode_and_opens_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--source none``: the server's start-up check passes, ``status`` says push sessions
    only, and opening it is a clear error rather than a file or a camera. A file that happens
    to be called ``none`` in the working folder does not change that (``./none`` names it)."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(DATA / "single_face.mp4", tmp_path / "none")
    for spec in (NO_SOURCE, f" {NO_SOURCE} "):
        check_source(spec)
        assert planned_description(spec) == "no source (push sessions only)"
        with pytest.raises(SourceError, match="push sessions only"):
            open_source(spec)
    with open_source("./none") as source:
        assert source.read() is not None
