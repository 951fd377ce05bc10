"""Every face's box: ``faces`` beside ``face_count``, on the hand-drawn boxes of dlib-faces, on
pyfeat's group photo, and in ``eye_data`` from a real server.

The dlib figures are ``benchmarks/faces.py``'s (``python -m benchmarks.faces`` prints them, and
says how a box is matched); the floors and ceilings here sit one face from what it measured.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import cv2
import pytest
import trio
from trio_websocket import open_websocket_url

from benchmarks import faces as bench
from benchmarks.original import Original
from tests.media import DATA, shared
from tests.serverkit import capped, recv_type, url
from tests.test_push import serve, start_session
from trackerd.vision.observation import Box, Observation

pytestmark = pytest.mark.usefixtures("no_unexpected_errors")


@cache
def original() -> Original:
    return Original()


@cache
def dlib() -> tuple[tuple[bench.Photo, tuple[Box, ...], tuple[Observation, ...]], ...]:
    """Each labelled photo, the original's faces on it, and the tracker's run over it."""
    photos = bench.photos(shared("dlib-faces"))
    runs = []
    for photo in photos:
        image = bench.read(photo.path)
        runs.append((photo, original().faces(image), tuple(bench.tracked(image))))
    return tuple(runs)


def totals(pick: int | None, rule: bench.Rule) -> tuple[int, int]:
    """(hand-drawn faces found, false boxes) over the photos: the tracker's ``faces`` on frame
    ``pick`` of each run, or the original's with ``None``."""
    found = false = 0
    for photo, theirs, run in dlib():
        got = bench.score(photo.drawn, theirs if pick is None else run[pick].faces, rule)
        found, false = found + got[0], false + got[1]
    return found, false


def coherent(o: Observation) -> bool:
    """``faces`` is what ``face_count`` counts, the followed face first; nothing without one."""
    if o.face is None:
        return o.faces == () and o.face_count == 0
    return len(o.faces) == o.face_count and o.faces[0] == o.face


def test_dlib_faces_every_frame_reports_every_counted_face() -> None:
    assert sum(len(photo.drawn) for photo, _, _ in dlib()) == 43
    assert all(coherent(o) for _, _, run in dlib() for o in run)


def test_dlib_faces_first_frame_finds_no_fewer_than_the_original() -> None:
    """The first frame is a full search at the original's sensitivity (IoU >= 0.5: trackerd
    37 of 43 with 2 false boxes, the original 36 with 2)."""
    ours, ours_false = totals(0, bench.by_iou)
    theirs, _ = totals(None, bench.by_iou)
    assert ours >= max(theirs, 36) and ours_false <= 3
    # By centre and size too, the rule this test used before it measured IoU (38 and 38).
    assert totals(0, bench.by_centre)[0] >= totals(None, bench.by_centre)[0]


def test_dlib_faces_after_the_recount_finds_no_fewer_than_the_original() -> None:
    """From the recount at 1 s on, the others' boxes are the recount's: a search of the first
    search's image for faces at least half the followed one's width, the followed face's inside
    painted over. It keeps what the first frame found (IoU >= 0.5: 37 of 43 with 2 false
    boxes). Painting the whole box lost a face touching the followed one, and searching an
    image shrunk for the larger minimum lost two more (41 and 110 px wide): 34, 1 false."""
    found, false = totals(-1, bench.by_iou)
    theirs, theirs_false = totals(None, bench.by_iou)
    assert found >= max(theirs, 36) and false <= theirs_false


def test_dlib_faces_the_recount_finds_every_face_the_first_frame_found() -> None:
    """Photo by photo, each box of the first frame's search has one after the recount (IoU >=
    0.5), the false ones too: the recount is the same search, over faces at least half the
    followed one's width (every face here is), so it has no reason to lose one."""
    lost = {
        photo.path.name: (run[0].faces, run[-1].faces)
        for photo, _, run in dlib()
        if bench.score(run[0].faces, run[-1].faces, bench.by_iou)[0] < len(run[0].faces)
    }
    assert not lost


def test_multi_face_photo_reports_the_originals_faces_on_every_frame() -> None:
    """pyfeat's group photo: the original finds 4 faces, trackerd those 4 (IoU >= 0.5, through
    the recount) and one more."""
    image = bench.read(DATA / "multi_face.jpg")
    theirs = original().faces(image)
    run = bench.tracked(image)
    assert len(theirs) == 4
    assert all(coherent(o) and o.face_count >= 4 for o in run)
    assert all(bench.score(theirs, o.faces, bench.by_iou)[0] == 4 for o in run)


@capped
async def test_eye_data_carries_every_face_with_the_followed_one_among_them(
    nursery: trio.Nursery,
) -> None:
    """The group photo pushed as a JPEG for 1.3 s at 30 fps, through the recount at 1 s: each
    eye_data has ``faces``, as many as ``face_count``, ``face`` among them, in the frame's own
    pixels (the server decodes 1000x667 at half size and scales the boxes back)."""
    ok, data = cv2.imencode(".jpg", bench.read(DATA / "multi_face.jpg"))
    assert ok
    # The first frame searches the whole photo and then five faces: ~65 ms of analysis here, of
    # the default budget of 150 ms, and 159 ms once in a full CI run (a frame_over_budget
    # error instead of its eye_data). The budget is tests/test_sessions.py's subject, not this.
    running = await serve(nursery, frame_cpu_budget_s=1.0)
    answers: list[dict[str, Any]] = []
    async with open_websocket_url(url(running)) as ws:
        await start_session(ws)
        due = trio.current_time()
        for _ in range(40):
            await trio.sleep_until(due)  # the sender's frame rate, under the session's 30 fps
            due = trio.current_time() + 1 / 30
            await ws.send_message(data.tobytes())
            answers.append(await recv_type(ws, "eye_data"))
    assert all(len(a["faces"]) == a["face_count"] for a in answers), [
        (a["face_count"], a["faces"]) for a in answers
    ]
    assert all(a["face"] in a["faces"] for a in answers if a["face"] is not None)
    assert all(a["face_count"] >= 4 for a in answers)
    boxes = [box for a in answers for box in a["faces"]]
    assert all(x >= 0 and y >= 0 and x + w <= 1001 and y + h <= 668 for x, y, w, h in boxes)
    assert max(x + w for x, _, w, _ in boxes) > 640, "in 1000x667 pixels, not the decoded size"
