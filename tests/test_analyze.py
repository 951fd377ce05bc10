"""``trackerd analyze`` as a user runs it: a real process, real files, JSON lines on stdout."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import cv2

from tests.media import DATA
from tests.serverkit import run_trackerd
from trackerd.sources import open_source

KEYS = [
    "source",
    "frame",
    "t",
    "face_detected",
    "eye_count",
    "looking_away",
    "confidence",
    "face",
    "eyes",
    "ms",
    "pupils",
    "eyes_closed",
    "blinks",
    "gaze",
    "head",
    "face_count",
]


def analyze(*paths: str | Path) -> subprocess.CompletedProcess[str]:
    return run_trackerd("analyze", *map(str, paths))


def test_video_and_image_give_one_json_object_per_frame() -> None:
    done = analyze(DATA / "single_face.mp4", DATA / "single_face.jpg")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(rows) == 72 + 1
    assert all(list(r) == KEYS for r in rows)
    video = rows[:72]
    assert [r["frame"] for r in video] == list(range(72))
    assert all(r["source"] == str(DATA / "single_face.mp4") for r in video)
    assert sum(r["face_detected"] for r in video) >= 70
    for r in video:
        assert 0.0 <= r["confidence"] <= 1.0 and r["ms"] >= 0.0
        assert r["eye_count"] == len(r["eyes"])
        assert r["face"] is None or len(r["face"]) == 4
        # The eye stage's keys: pupils per side (null without a face), gaze in [-1, 1].
        assert (r["pupils"] is None) == (r["face"] is None)
        assert r["face_count"] >= r["face_detected"]
        assert r["gaze"] is None or all(-1.0 <= g <= 1.0 for g in r["gaze"])
        assert r["blinks"] >= 0 and isinstance(r["eyes_closed"], bool)
    pupils = [p for r in video if r["pupils"] for p in r["pupils"] if p is not None]
    assert len(pupils) >= 2 * 60, "a pupil for most eyes of a frontal face"
    for r in video:
        for eye, pupil in zip(r["eyes"], [p for p in r["pupils"] or [] if p], strict=False):
            x, y, w, h = eye
            assert x <= pupil[0] <= x + w and y <= pupil[1] <= y + h, "inside its eye box"
    assert rows[72]["face_detected"] and rows[72]["frame"] == 0
    # Progress and the summary go to stderr, one summary line per path.
    assert "single_face.mp4: 72 frames" in done.stderr
    assert "single_face.jpg: 1 frames" in done.stderr


def test_missing_path_is_an_error_with_no_result_on_stdout(tmp_path: Path) -> None:
    done = analyze(tmp_path / "missing.mp4")
    assert done.returncode == 2
    assert done.stdout == ""
    assert "no such file or folder" in done.stderr


def test_undecodable_file_is_an_error_with_no_result_on_stdout(tmp_path: Path) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x01garbage" * 4096)
    done = analyze(bad)
    assert done.returncode == 2
    assert done.stdout == ""
    assert "broken.mp4" in done.stderr


def test_a_missing_path_after_a_good_one_stops_the_run_before_it_starts(tmp_path: Path) -> None:
    done = analyze(DATA / "single_face.jpg", tmp_path / "missing")
    assert done.returncode == 2
    assert done.stdout == ""  # every path is checked before the first is analysed
    assert "missing" in done.stderr


def test_an_undecodable_path_after_a_good_one_stops_the_run(tmp_path: Path) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x01garbage" * 4096)  # there and readable: only decoding tells
    done = analyze(DATA / "single_face.jpg", bad)
    assert done.returncode == 2
    assert len(done.stdout.splitlines()) == 1  # the good path's result, complete
    assert "broken.mp4" in done.stderr


def test_help_lists_the_output_fields() -> None:
    done = run_trackerd("analyze", "--help")
    assert done.returncode == 0
    assert "looking_away" in done.stdout


# --- folders: separate photos by default, one sequence with --sequence ---------------------------


def photo_folder(folder: Path) -> list[Path]:
    """Real, unrelated pictures in name order: a face, a frame with no face (the first frame of
    the no_face.mp4 animation), another face, a group."""
    with open_source(str(DATA / "no_face.mp4")) as clip:
        first = clip.read()
    assert first is not None
    photos = [folder / n for n in ("1_face.jpg", "2_noface.png", "3_face.png", "4_group.jpg")]
    shutil.copy(DATA / "single_face.jpg", photos[0])
    cv2.imwrite(str(photos[1]), first.image)
    shutil.copy(DATA / "astronaut.png", photos[2])
    shutil.copy(DATA / "multi_face.jpg", photos[3])
    return photos


def rows_of(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_a_folder_of_photos_is_analysed_photo_by_photo(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    photos = photo_folder(folder)
    (folder / "notes.txt").write_text("not an image")  # ignored
    from_folder = rows_of(analyze(folder))
    one_by_one = rows_of(analyze(*photos))  # each path from a fresh tracker
    assert [r["source"] for r in from_folder] == [str(p) for p in photos]
    assert all(r["frame"] == 0 and r["t"] == 0.0 for r in from_folder)
    without_ms = [{k: v for k, v in r.items() if k != "ms"} for r in from_folder]
    assert without_ms == [{k: v for k, v in r.items() if k != "ms"} for r in one_by_one]
    # The face in the photo before lends the empty picture nothing.
    no_face = from_folder[1]
    assert (no_face["face_detected"], no_face["confidence"]) == (False, 0.0)
    assert all(from_folder[i]["face_detected"] for i in (0, 2, 3))


def test_with_sequence_a_folder_is_one_clip_in_name_order(tmp_path: Path) -> None:
    photo_folder(tmp_path)
    rows = rows_of(analyze("--sequence", tmp_path))
    assert [r["source"] for r in rows] == [str(tmp_path)] * 4
    assert [r["frame"] for r in rows] == [0, 1, 2, 3]
    assert [r["t"] for r in rows] == [round(i / 30, 6) for i in range(4)]
    # One clip: the confidence is smoothed across frames, so the face-less frame that follows a
    # face decays towards 0 instead of dropping to it.
    assert not rows[1]["face_detected"]
    assert 0.0 < rows[1]["confidence"] < rows[0]["confidence"]


def test_a_folder_with_no_images_is_an_error_with_nothing_on_stdout(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    done = analyze(tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert "contains no images" in done.stderr
