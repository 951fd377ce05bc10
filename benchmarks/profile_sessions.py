"""Where a push session's frame goes: py-spy over a server under N push sessions.

``python -m benchmarks.profile_sessions [--sessions 20] [--workers 1] [--seconds 10]
[--raw FILE]`` runs one row of the sessions suite (:func:`benchmarks.bench_sessions.measure`:
a fresh server, N sessions sending the demo clip's frames at 15 fps), with py-spy recording
every server thread over the window (needs py-spy, in the ``bench`` extra, and the right to
read another process's memory: root, or ``ptrace_scope`` 0). It prints the row, then for each
group of threads, the share of its samples spent in each of :data:`PARTS`.

Without ``--idle``, py-spy leaves out the samples of a thread it finds idle, by its own
heuristic: trio's wait in ``epoll`` is counted often enough that it is shown, as a part. A
share includes waiting to take the GIL back after a C call, so in one process the shares of
the Python around OpenCV's calls grow with the load. py-spy reads each stack while its
thread runs, so a few stacks come out short of their outer frames. ``--raw`` keeps the stacks
(py-spy's raw format: one stack a line, then its count) for other cuts, e.g. a flame graph.
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from benchmarks.bench_sessions import measure, print_header, print_row, webcam_jpegs
from benchmarks.sessions_clients import write_frames

GROUPS: Final = {"event loop": "MainThread", "analysis": "Trio thread"}
"""Thread groups by the name py-spy reports: the trio loop, and the threads that analyse."""

PARTS: Final = {
    "event loop": (
        ("the socket's reads", "SocketStream.receive_some"),
        ("wsproto's parse", "FrameProtocol.received_frames"),
        ("a frame's checks (read_header)", "read_header"),
        ("the hand-off to a thread", "in_thread"),
        ("the eye_data JSON", "eye_data"),
        ("the sends", "FrameStream.try_send"),
        ("waiting in epoll", "EpollIOManager.get_events"),
    ),
    "analysis": (
        ("a frame (PushSession._analyse)", "PushSession._analyse"),
        ("decode", "decode_grey"),
        ("the stillness measure", "Stillness.change"),
        ("the tracker", "Tracker.process"),
        ("cascade searches", "Cascade.detectMultiScale"),
        ("the eye stage", "EyeStage.step"),
        ("the recount of every face", "Tracker._recount"),
        ("resizing", "resize"),
        ("waiting for a frame", "WorkerThread._work (trio/_core/_thread_cache.py:211)"),
    ),
}
"""What to count, by group: a label and a function as py-spy names it, optionally with its file
and line; a sample counts once for each part whose function is anywhere in its stack."""


def summarise(lines: Iterable[str]) -> dict[str, tuple[int, dict[str, int]]]:
    """Per group, its samples and the samples of each of its parts, from py-spy's raw lines
    (``thread (TID): NAME;frame;frame... COUNT``)."""
    totals: Counter[str] = Counter()
    parts: dict[str, Counter[str]] = {group: Counter() for group in GROUPS}
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        thread = frames[0].partition(": ")[2]
        group = next((g for g, prefix in GROUPS.items() if thread.startswith(prefix)), None)
        if group is None:
            continue
        totals[group] += int(count)
        for label, function in PARTS[group]:
            if any(f == function or f.startswith(function + " (") for f in frames[1:]):
                parts[group][label] += int(count)
    return {group: (totals[group], dict(parts[group])) for group in GROUPS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0, help="the window")
    parser.add_argument("--raw", type=Path, help="keep py-spy's stacks here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        frames = Path(tmp) / "frames.bin"
        write_frames(frames, webcam_jpegs(None)[1])
        raw = args.raw or Path(tmp) / "stacks.txt"
        row = measure(
            args.sessions, frames, args.seconds, 2.0, args.workers, quiet=False, profile_to=raw
        )
        print_header()
        print_row(row)
        with raw.open() as stacks:
            summary = summarise(stacks)
    for group, (total, counted) in summary.items():
        print(f"\n{group}: {total} samples")
        for label, _ in PARTS[group]:
            share = counted.get(label, 0) / total if total else 0.0
            print(f"  {100 * share:5.1f} %  {label}")


if __name__ == "__main__":
    main()
