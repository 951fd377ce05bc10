"""Push sessions: N clients each pushing 640x480 JPEGs of real face video at 15 fps.

The frames: the demo clip (a real face, 640x360, 472 frames) padded to 640x480, JPEG-encoded once
at quality 80 (what a browser's canvas sends).

``rows``: for each N, a fresh ``python -m trackerd`` (no source: push sessions only) and N push
sessions over two client processes (``benchmarks.sessions_clients``: one frame in flight per
session, the next when the last one's ``eye_data`` arrives or on the 15 fps clock, whichever is
later). After a warm-up, a measured window: per session the ``eye_data`` delivered a second, the
send → ``eye_data`` latency p50/p99 over every frame, the server's CPU (psutil: process CPU
seconds over the window's wall time, in % of one core) and per answered frame, and its RSS.

``largest``: the largest N at which *every* session gets at least ``HOLD_FPS`` frames a second
answered with a p99 under ``HOLD_P99_MS``: the table's passing and failing sizes, then a
bisection between them with fresh runs.

``costs``: per-frame CPU in this process, on the same JPEGs (cv2 on one thread): trackerd's
decode (straight to grey) and tracking, and the original's whole-frame approach on the decoded
frames; each as sessions per core at 15 fps.

``reduced``: frames larger than the tracker needs (the clips upscaled to 1280x720): decoding to grey
at full size against the server's own decode (``trackerd.vision.images.decode_grey``: libjpeg-turbo
at 4/8 for these, so 640x360), the time of each, and what the halving costs the tracker: the face
detection rate on both, and the face boxes' agreement (IoU, centre error) frame by frame.

``python -m benchmarks.bench_sessions [--quick] [--sizes 1,10]``: the same suite without writing
JSON (``python -m benchmarks sessions`` does).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import psutil

from benchmarks.bench_fanout import CLIENT_PROCESSES, _decimate, _quantile, child, shares
from benchmarks.bench_tracker import DATA, _frames
from benchmarks.original import Original
from benchmarks.procs import LISTENING
from benchmarks.sessions_clients import write_frames
from benchmarks.zju import iou
from trackerd.sources import demo_clip_path
from trackerd.vision.images import decode_grey
from trackerd.vision.observation import Box
from trackerd.vision.tracker import Tracker

FPS = 15.0
SIZES = (1, 10, 20, 40, 60)
QUICK_SIZES = (2,)
WORKERS = 2
"""The second configuration: ``trackerd --workers 2 --analysis-threads 1``, a process per core."""
HOLD_FPS = 14.0
HOLD_P99_MS = 150.0
SEARCH_STEP = 2
"""The bisection stops when the passing and failing sizes are this close."""
SEARCH_CEILING = 200
"""The search doubles past the table's largest size while it passes, up to this many."""
JPEG_QUALITY = 80
MAX_SESSIONS = 1000
"""The server's --max-sessions, and its --max-sessions-per-ip: above anything measured (the
defaults are 16 per analysis thread, and 4 from one address: every client here is 127.0.0.1)."""
QUIET_PCT = 30.0
"""Before each run, wait until everything else on the machine uses less than this (% of one
core; the VM is shared) ..."""
PEXELS_FRAMES = 472
"""The demo clip's first part, a face in every frame (trackerd/data/SOURCE.txt): the rest has the
person leave, and an empty room costs full-frame searches, not the face tracking measured here."""
QUIET_WAIT_S = 60.0
"""... but no longer than this: the row records the load it started under, and the window's."""
CHILD_SLACK_S = 60.0
PROFILE_RATE_HZ = 100
"""py-spy's samples a second, per thread: 1000 a thread over a 10 s window."""
LATENCY_QUANTILES = 500
MIB = 2**20


def webcam_jpegs(limit: int | None) -> tuple[list[np.ndarray], list[bytes]]:
    """The demo clip as 640x480 frames, and their JPEGs: the whole 640x360 picture between
    black bars. (A 4:3 centre crop would be a truer webcam, but the person leaves that crop for
    ~60 frames, and this measures tracking a face, not searching an empty room.)"""
    bar = (480 - 360) // 2
    images = [
        cv2.copyMakeBorder(f, bar, bar, 0, 0, cv2.BORDER_CONSTANT)
        for f in _frames(demo_clip_path(), limit or PEXELS_FRAMES)
    ]
    assert images[0].shape[:2] == (480, 640)
    return images, [_jpeg(i) for i in images]


def _jpeg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    assert ok
    return bytes(data.tobytes())


# --- N sessions against the real server ------------------------------------------------------


def await_quiet() -> float:
    """Wait for the machine to be quiet (see QUIET_PCT); the busy CPU last seen, % of a core."""
    deadline = time.monotonic() + QUIET_WAIT_S
    while True:
        busy = psutil.cpu_percent(interval=2.0) * (psutil.cpu_count() or 1)
        if busy < QUIET_PCT or time.monotonic() > deadline:
            return float(busy)


def measure(
    sessions: int,
    frames: Path,
    window_s: float,
    warmup_s: float,
    workers: int = 1,
    extra: Sequence[str] = (),
    root: Path | None = None,
    env: dict[str, str] | None = None,
    quiet: bool = True,
    profile_to: Path | None = None,
) -> dict[str, Any]:
    """A fresh server, ``sessions`` push sessions, one window: a row of the table. With
    ``workers`` > 1, ``trackerd --workers N --analysis-threads 1``: a process per core, each
    with its own GIL (the CPU and RSS are then the supervisor's and its workers' together).
    ``extra``: more of the server's flags, ``env`` its environment's additions; ``root``:
    another checkout whose server to run. ``quiet``: first wait (a minute at most) for the
    machine to be quiet (the quick run does not: it checks that the code runs).
    ``profile_to``: py-spy's raw stacks of every server thread over the window go there
    (:mod:`benchmarks.profile_sessions`)."""
    busy_before = await_quiet() if quiet else None
    deadline_s = warmup_s + window_s + sessions / 10 + CHILD_SLACK_S
    args = ("-m", "trackerd", "--host", "127.0.0.1", "--port", "0")
    args += ("--max-sessions", str(MAX_SESSIONS), "--max-sessions-per-ip", str(MAX_SESSIONS))
    if workers > 1:
        args += ("--workers", str(workers), "--analysis-threads", "1")
    args += tuple(extra)
    env = {**({"PYTHONPATH": str(root)} if root else {}), **(env or {})}
    with child(*args, deadline_s=deadline_s, env=env, cwd=root) as srv:
        port = str(srv.wait_log(LISTENING, timeout_s=30).group(1))
        server = _family(psutil.Process(srv.proc.pid), workers)
        rss_idle = _rss(server)
        with contextlib.ExitStack() as stack:
            procs = []
            for i, n in enumerate(shares(sessions)):
                offset = sum(shares(sessions)[:i])
                client_args = ("--port", port, "--sessions", str(n), "--frames", str(frames))
                client_args += ("--fps", str(FPS), "--offset", str(offset))
                procs.append(
                    stack.enter_context(
                        child(
                            "-m", "benchmarks.sessions_clients", *client_args, deadline_s=deadline_s
                        )
                    )
                )
            # Every session started (READY), then the window: after the warm-up, for window_s.
            for c in procs:
                c.line("READY")
            start = time.time() + warmup_s
            edges = (start, start + window_s)
            for c in procs:
                c.send(" ".join(map(repr, edges)))
            before = _cpu_at(edges[0], server, procs)
            with _profiled(profile_to, srv.proc.pid, window_s, workers):
                after = _cpu_at(edges[1], server, procs)
            rss = _rss(server)
            reports = [s for c in procs for s in json.loads(c.line(""))["sessions"]]
        # trackerd does not stop at the end of its input: leaving ``child`` terminates it.
    used = {k: after[k] - before[k] for k in after}
    row = _row(sessions, window_s, reports, {**used, "rss": rss, "rss_idle": rss_idle})
    row["busy_before_pct"] = busy_before
    row["workers"] = workers
    return row


@contextlib.contextmanager
def _profiled(to: Path | None, pid: int, seconds: float, workers: int) -> Iterator[None]:
    """py-spy sampling the server (and its workers) for ``seconds`` from now, if ``to``;
    waited for on the way out. ``--nonblocking``: the server is never paused to be read."""
    if to is None:
        yield
        return
    # From this Python's own environment first: a venv's bin is not always on PATH (CI's isn't).
    beside = Path(sys.executable).with_name("py-spy")
    spy_exe = str(beside) if beside.exists() else "py-spy"
    args = [spy_exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))]
    args += ["--rate", str(PROFILE_RATE_HZ), "--threads", "--nonblocking", "--format", "raw"]
    args += ["--output", str(to)] + (["--subprocesses"] if workers > 1 else [])
    spy = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        yield
    finally:
        _, err = spy.communicate(timeout=seconds + CHILD_SLACK_S)
    if spy.returncode != 0:
        raise RuntimeError(f"py-spy failed ({spy.returncode}): {err.strip()}")


def _family(server: psutil.Process, workers: int) -> list[psutil.Process]:
    """The server process and, under ``--workers``, its workers (started right after it
    listens): their CPU times and RSS are summed as the server's."""
    deadline = time.monotonic() + 30
    while workers > 1 and len(server.children()) < workers and time.monotonic() < deadline:
        time.sleep(0.1)
    return [server, *server.children(recursive=True)]


def _rss(family: Sequence[psutil.Process]) -> int:
    return sum(p.memory_info().rss for p in family)


def _cpu_at(
    unix: float, server: Sequence[psutil.Process], procs: Sequence[Any]
) -> dict[str, float]:
    """At ``unix`` (sleeping until then), the CPU seconds so far: the server's, the client
    processes', and the whole machine's busy time (to tell whether something else ran)."""
    time.sleep(max(0.0, unix - time.time()))
    machine = psutil.cpu_times()
    return {
        "server_s": sum(sum(p.cpu_times()[:2]) for p in server),
        "clients_s": sum(sum(psutil.Process(c.proc.pid).cpu_times()[:2]) for c in procs),
        "machine_s": machine.user + machine.nice + machine.system + machine.irq + machine.softirq,
    }


def _row(
    sessions: int, window_s: float, reports: list[dict[str, Any]], used: dict[str, float]
) -> dict[str, Any]:
    """``used``: CPU seconds spent in the window (see :func:`_cpu_at`), and the server's RSS."""
    server_s, clients_s = used["server_s"], used["clients_s"]
    fps = [r["answered"] / window_s for r in reports]
    answered = sum(r["answered"] for r in reports)
    latencies = sorted(x / 1000 for r in reports for x in r["latencies_us"])
    row = {
        "sessions": sessions,
        "window_s": window_s,
        "fps_mean": statistics.fmean(fps),
        "fps_min": min(fps),
        "p50_ms": _quantile(latencies, 0.50),
        "p99_ms": _quantile(latencies, 0.99),
        "max_ms": latencies[-1] if latencies else None,
        "answered": answered,
        "with_face": sum(r["with_face"] for r in reports),
        "errors": sum(r["errors"] for r in reports),
        "lost": sum(r["lost"] for r in reports),
        "closed": sum(r["closed"] for r in reports),
        "server_cpu_pct": 100 * server_s / window_s,
        "server_cpu_ms_per_frame": 1000 * server_s / answered if answered else None,
        "client_cpu_pct": 100 * clients_s / window_s,
        # Everything else the machine did meanwhile: other people's work on a shared VM.
        "other_cpu_pct": 100 * (used["machine_s"] - server_s - clients_s) / window_s,
        "rss_mib": used["rss"] / MIB,
        "rss_idle_mib": used["rss_idle"] / MIB,
        "latency_samples_ms": [round(x, 3) for x in _decimate(latencies, LATENCY_QUANTILES)],
    }
    row["holds"] = holds(row)
    return row


def holds(row: dict[str, Any]) -> bool:
    """Every session at HOLD_FPS or better, p99 under HOLD_P99_MS, nothing lost or closed."""
    return bool(
        row["fps_min"] >= HOLD_FPS
        and row["p99_ms"] is not None
        and row["p99_ms"] < HOLD_P99_MS
        and not row["lost"]
        and not row["closed"]
    )


def largest(
    rows: list[dict[str, Any]], frames: Path, window_s: float, warmup_s: float, workers: int = 1
) -> dict[str, Any]:
    """The largest N that holds: from the table's rows, then fresh runs between the largest
    passing size and the smallest failing one (or doubling past the table while all pass)."""
    tried = {r["sessions"]: r for r in rows}

    def run(n: int) -> bool:
        if n not in tried:
            tried[n] = measure(n, frames, window_s, warmup_s, workers)
            print_row(tried[n], note="search")
        return bool(tried[n]["holds"])

    passing = [n for n, r in tried.items() if r["holds"]]
    good = max(passing, default=0)
    failing = [n for n in tried if n > good]
    bad = min(failing, default=0)
    while not bad and good < SEARCH_CEILING:
        n = min(2 * good, SEARCH_CEILING)
        good, bad = (n, 0) if run(n) else (good, n)
    while bad and bad - good > SEARCH_STEP:
        n = (good + bad) // 2
        good, bad = (n, bad) if run(n) else (good, n)
    return {
        "sessions": good,
        "first_failing": bad or None,
        "criterion": f"every session >= {HOLD_FPS} fps, p99 < {HOLD_P99_MS} ms",
        "tried": [_summary(r) for _, r in sorted(tried.items())],
    }


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("sessions", "fps_min", "fps_mean", "p99_ms", "server_cpu_pct", "other_cpu_pct")
    keys += ("busy_before_pct",)
    return {k: row[k] for k in (*keys, "holds")}


# --- CPU per frame, in this process ----------------------------------------------------------


def costs(images: list[np.ndarray], jpegs: list[bytes], rounds: int) -> dict[str, Any]:
    """CPU per frame (this thread's CPU time; cv2 runs on this one thread here): trackerd's
    decode + track over ``rounds`` passes, and the original's whole-frame approach over one (it
    is ~40 times slower, and its cost hardly varies)."""
    decode_ms: list[float] = []
    track_ms: list[float] = []
    for _ in range(rounds):
        tracker = Tracker()
        tracker.process(_decode(jpegs[0]), 0.0)  # acquired: the steady state is measured
        for i, data in enumerate(jpegs):
            t0 = time.thread_time()
            grey = _decode(data)
            t1 = time.thread_time()
            tracker.process(grey, (i + 1) / FPS)
            t2 = time.thread_time()
            decode_ms.append(1000 * (t1 - t0))
            track_ms.append(1000 * (t2 - t1))
    original = Original()
    original_ms = []
    for image in images:
        t0 = time.thread_time()
        original.analyse(image)
        original_ms.append(1000 * (time.thread_time() - t0))
    total = [d + t for d, t in zip(decode_ms, track_ms, strict=True)]
    ours, theirs = statistics.fmean(total), statistics.fmean(original_ms)
    return {
        "frames": len(jpegs),
        "rounds": rounds,
        "jpeg_kib": statistics.fmean(len(j) for j in jpegs) / 1024,
        "decode_ms": statistics.fmean(decode_ms),
        "track_ms": statistics.fmean(track_ms),
        "trackerd_ms": ours,
        "trackerd_p99_ms": _quantile(sorted(total), 0.99),
        "original_ms": theirs,
        "trackerd_sessions_per_core": 1000 / (FPS * ours),
        "original_sessions_per_core": 1000 / (FPS * theirs),
        "ratio": theirs / ours,
    }


def _decode(data: bytes, reduce: bool = True) -> np.ndarray:
    """What the server does with a pushed frame before tracking it."""
    if reduce:
        return decode_grey(data).grey
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)


# --- decoding at reduced size: time and accuracy ---------------------------------------------


def reduced(name: str, images: list[np.ndarray], rounds: int) -> dict[str, Any]:
    """1280x720 JPEGs of ``images``: full-size grey against half-size grey, both tracked."""
    jpegs = [_jpeg(cv2.resize(i, (1280, 720), interpolation=cv2.INTER_CUBIC)) for i in images]
    out: dict[str, Any] = {"clip": name, "frames": len(jpegs), "source_shape": images[0].shape[:2]}
    boxes: dict[str, list[Box | None]] = {}
    for variant, reduce, scale in (("full", False, 1), ("half", True, 2)):
        decode_ms: list[float] = []
        track_ms: list[float] = []
        for _ in range(rounds):
            tracker = Tracker()
            found: list[Box | None] = []
            for i, data in enumerate(jpegs):
                t0 = time.thread_time()
                grey = _decode(data, reduce)
                t1 = time.thread_time()
                face = tracker.process(grey, i / FPS).face
                t2 = time.thread_time()
                decode_ms.append(1000 * (t1 - t0))
                track_ms.append(1000 * (t2 - t1))
                found.append(None if face is None else _scale(face, scale))
        boxes[variant] = found  # the last round's (the rounds see the same frames)
        out[variant] = {
            "decode_ms": statistics.fmean(decode_ms),
            "track_ms": statistics.fmean(track_ms),
            "detected": sum(b is not None for b in found) / len(jpegs),
        }
    pairs = [(a, b) for a, b in zip(boxes["full"], boxes["half"], strict=True) if a and b]
    ious = [iou(a, b) for a, b in pairs]
    errors = [_centre_error(a, b) for a, b in pairs]
    out["both_detected"] = len(pairs)
    out["mean_iou"] = statistics.fmean(ious) if ious else None
    out["min_iou"] = min(ious) if ious else None
    out["centre_error_median_pct"] = statistics.median(errors) if errors else None
    out["centre_error_max_pct"] = max(errors) if errors else None
    return out


def _scale(b: Box, k: int) -> Box:
    return (b[0] * k, b[1] * k, b[2] * k, b[3] * k)


def _centre_error(a: Box, b: Box) -> float:
    """Distance between the two boxes' centres, in % of the full-size box's width."""
    dx = (a[0] + a[2] / 2) - (b[0] + b[2] / 2)
    dy = (a[1] + a[3] / 2) - (b[1] + b[3] / 2)
    return 100 * float(np.hypot(dx, dy)) / a[2]


# --- the suite -------------------------------------------------------------------------------


def run(quick: bool = False, sizes: Sequence[int] | None = None) -> dict[str, Any]:
    cv2.setNumThreads(1)  # for the per-frame costs here; the server is its own process
    window_s, warmup_s = (1.0, 0.5) if quick else (8.0, 2.0)
    limit = 8 if quick else None  # quick: the original costs ~100 ms a frame
    images, jpegs = webcam_jpegs(limit)
    results: dict[str, Any] = {
        "fps": FPS,
        "frame_shape": [480, 640],
        "jpeg_quality": JPEG_QUALITY,
        "window_s": window_s,
        "warmup_s": warmup_s,
        "client_processes": CLIENT_PROCESSES,
        "cpus": psutil.cpu_count(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        frames = Path(tmp) / "frames.bin"
        write_frames(frames, jpegs)
        # One process (the default), then, on a machine with more than one core, a process per
        # core (--workers): the GIL keeps one process's analysis threads to ~1.1 cores.
        configs = [1] + ([] if quick or (psutil.cpu_count() or 1) < 2 else [WORKERS])
        for workers in configs:
            key = "" if workers == 1 else f"_workers{workers}"
            print(f"trackerd --workers {workers}" if workers > 1 else "trackerd (one process)")
            print_header()
            rows = []
            for n in sizes or (QUICK_SIZES if quick else SIZES):
                rows.append(measure(n, frames, window_s, warmup_s, workers, quiet=not quick))
                print_row(rows[-1])
            results["rows" + key] = rows
            if not quick:
                results["largest" + key] = found = largest(
                    rows, frames, window_s, warmup_s, workers
                )
                print(
                    f"largest N holding {found['criterion']}: {found['sessions']}"
                    f" (first failing: {found['first_failing']})"
                )
    rounds = 1 if quick else 3
    results["costs"] = c = costs(images, jpegs, rounds)
    print(
        f"CPU per 640x480 frame, one thread: trackerd decode {c['decode_ms']:.2f} + track "
        f"{c['track_ms']:.2f} = {c['trackerd_ms']:.2f} ms ({c['trackerd_sessions_per_core']:.0f}"
        f" sessions per core at 15 fps); original {c['original_ms']:.1f} ms "
        f"({c['original_sessions_per_core']:.1f} per core): {c['ratio']:.0f}x"
    )
    face_noface = _frames(DATA / "face_noface.mov", 72)  # the face part, 960x540 native
    results["reduced"] = [
        reduced("demo 640x360", _frames(demo_clip_path(), limit or PEXELS_FRAMES), rounds),
        reduced("face_noface 960x540", face_noface[: limit or 72], rounds),
    ]
    print_reduced(results["reduced"])
    return results


HEADER = (
    f"{'N':>4} {'fps mean':>8} {'min':>5} {'p50 ms':>7} {'p99 ms':>7} {'CPU %':>6} "
    f"{'ms/frame':>8} {'RSS MiB':>8} {'clients %':>9} {'other %':>7} holds"
)
ROW = (
    "{sessions:>4} {fps_mean:>8.1f} {fps_min:>5.1f} {p50_ms:>7.1f} {p99_ms:>7.1f} "
    "{server_cpu_pct:>6.0f} {server_cpu_ms_per_frame:>8.2f} {rss_mib:>8.0f} "
    "{client_cpu_pct:>9.0f} {other_cpu_pct:>7.0f} {holds}"
)


def print_header() -> None:
    print(HEADER, flush=True)


def print_row(row: dict[str, Any], note: str = "") -> None:
    values = {k: math.nan if v is None else v for k, v in row.items()}  # None: nothing answered
    trouble = {k: row[k] for k in ("errors", "lost", "closed") if row[k]}
    if row["other_cpu_pct"] > QUIET_PCT:
        trouble["disturbed"] = f"other work used {row['other_cpu_pct']:.0f} % of a core"
    print(ROW.format(**values), note, trouble or "", flush=True)


def print_reduced(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        f, h = r["full"], r["half"]
        print(
            f"{r['clip']} upscaled to 1280x720, {r['frames']} frames: decode full "
            f"{f['decode_ms']:.2f} ms / half {h['decode_ms']:.2f} ms; track full "
            f"{f['track_ms']:.2f} / half {h['track_ms']:.2f} ms; faces full {f['detected']:.1%}"
            f" / half {h['detected']:.1%}; IoU mean {r['mean_iou']:.3f} min {r['min_iou']:.3f};"
            f" centre error median {r['centre_error_median_pct']:.1f} % max "
            f"{r['centre_error_max_pct']:.1f} % of the face width",
            flush=True,
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 2, 1 s windows")
    parser.add_argument("--sizes", help="comma-separated session counts, e.g. 10,40")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
    run(args.quick, sizes)


if __name__ == "__main__":
    main()
