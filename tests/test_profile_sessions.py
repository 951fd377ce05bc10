"""benchmarks.profile_sessions: py-spy's stacks of a real server under push sessions, cut into
the parts of a frame."""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.bench_sessions import measure, webcam_jpegs
from benchmarks.profile_sessions import summarise
from benchmarks.sessions_clients import write_frames

LOOP = "thread (7): MainThread;main (trackerd/cli.py:71);run (trio/_core/_run.py:2532)"
WORKER = "thread (9): Trio thread 0;Thread.run (threading.py:982)"


def test_samples_are_counted_by_thread_group_and_once_per_part() -> None:
    lines = [
        f"{LOOP};read_header (trackerd/vision/images.py:100) 3\n",
        f"{LOOP};EpollIOManager.get_events (trio/_core/_io_epoll.py:243) 5\n",
        # resize twice in one stack (geometry's, then OpenCV's through it): counted once.
        f"{WORKER};PushSession._analyse (trackerd/net/sessions.py:382);"
        "resize (trackerd/vision/geometry.py:37);resize (x.py:1) 4\n",
        f"{WORKER};WorkerThread._work (trio/_core/_thread_cache.py:211) 2\n",
        # The same function at another line is not the wait for a job.
        f"{WORKER};WorkerThread._work (trio/_core/_thread_cache.py:213) 1\n",
        "thread (8): trackerd-native-log;_read_native (trackerd/ops/logs.py:302) 6\n",
        "\n",
    ]
    summary = summarise(lines)
    assert summary["event loop"] == (
        8,
        {"a frame's checks (read_header)": 3, "waiting in epoll": 5},
    )
    assert summary["analysis"] == (
        7,
        {"a frame (PushSession._analyse)": 4, "resizing": 4, "waiting for a frame": 2},
    )


def test_a_real_server_under_sessions_is_profiled_by_py_spy() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        frames = Path(tmp) / "frames.bin"
        write_frames(frames, webcam_jpegs(30)[1])
        stacks = Path(tmp) / "stacks.txt"
        # 4 sessions for 3 s: ~80 frames' analysis to sample, not a handful.
        row = measure(4, frames, 3.0, 1.0, quiet=False, profile_to=stacks)
        with stacks.open() as lines:
            summary = summarise(lines)
    assert row["fps_mean"] > 0
    loop, analysis = summary["event loop"], summary["analysis"]
    assert loop[0] > 0 and analysis[0] > 0
    # Not "the tracker within a frame": --nonblocking reads a thread's stack while it runs,
    # and a stack read mid-change can miss its outer frames (seen: 6 tracker samples, 5 frame).
    assert analysis[1]["a frame (PushSession._analyse)"] > 0
    assert analysis[1]["the tracker"] > 0
