"""Push sessions on one core against two: ``python -m benchmarks.bench_scaling``.

A ``trackerd`` process is pinned with ``taskset`` to CPU 0, then to CPUs 0 and 1 (its analysis
threads follow: one per CPU it may use), and, with ``--workers``, ``trackerd --workers 2`` on
CPUs 0 and 1. A client process (not pinned) opens S push sessions; each sends the next frame of
the demo clip (640x360, JPEG at quality 80, ~27 KB, what a browser sends) as soon as the last
one's ``eye_data`` is back. So the server is never idle, and the frames it answers a second are
its capacity; the scaling figure is the two-core capacity over the one-core one.

The clients cost CPU too, and on a two-core machine they take it from the server in the
two-core case (in the one-core case they have CPU 1 to themselves): the figure is, if anything,
low. The client's CPU share is reported beside it, and so is everything else's ("other CPU":
the machine's busy time less server and client), as the VM it was written on is shared; each
run first waits (up to a minute) for the machine to be quiet.

Writes ``benchmarks/results/scaling.json`` (or ``--out``) and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from benchmarks.bench_sessions import await_quiet
from benchmarks.procs import ROOT, process, trackerd_port

RESULTS = ROOT / "benchmarks" / "results"

MIB = 2**20
START = json.dumps({"type": "start_tracking", "source": "client"})


def measure(
    cpus: str, workers: int, sessions: int, warmup_s: float, window_s: float
) -> dict[str, Any]:
    """One configuration: the server's answered frames a second, CPU and memory."""
    # Every session comes from 127.0.0.1: past the per-address default (4).
    args = ["--max-fps", "1000", "--max-sessions-per-ip", str(sessions)]
    if workers > 1:  # a thread each: a worker is one core's worth, and threads beside it contend
        args += ["--workers", str(workers), "--analysis-threads", "1"]
    busy_before = await_quiet()
    with pinned(cpus, args) as proc:
        port = trackerd_port(proc)
        assert proc.stderr is not None  # read on, or a full pipe would block the server's log
        threading.Thread(target=lambda: list(proc.stderr), daemon=True).start()  # type: ignore[arg-type]
        server = psutil.Process(proc.pid)
        time.sleep(1.0)  # the workers start beside the first
        family = [server, *server.children(recursive=True)]
        idle = sum(p.memory_info().rss for p in family)
        with process(
            "-m",
            "benchmarks.bench_scaling",
            "--client",
            str(port),
            str(sessions),
            str(warmup_s),
            str(window_s),
        ) as client:
            assert client.stdout is not None
            ready = client.stdout.readline()
            assert ready.startswith("WINDOW"), ready + (
                client.stderr.read() if client.stderr else ""
            )
            cpu0 = sum(sum(p.cpu_times()[:2]) for p in family)
            machine0 = _machine_cpu()
            loop0 = _loop_cpu(family)
            client_ps = psutil.Process(client.pid)
            client0 = sum(client_ps.cpu_times()[:2])
            t0 = time.monotonic()
            result = json.loads(client.stdout.readline())
            elapsed = time.monotonic() - t0
            cpu = sum(sum(p.cpu_times()[:2]) for p in family) - cpu0
            machine = _machine_cpu() - machine0
            loop = _loop_cpu(family) - loop0
            client_cpu = sum(client_ps.cpu_times()[:2]) - client0
            busy = sum(p.memory_info().rss for p in family)
    answered = result["answered"]
    latencies = sorted(result["latency_ms"])
    return {
        "cpus": cpus,
        "workers": workers,
        "sessions": sessions,
        "window_s": result["window_s"],
        "frames_per_s": answered / result["window_s"],
        "frames_per_cpu_s": answered / cpu if cpu else None,
        "event_loop_share": loop / cpu if cpu else None,
        "server_cpu_cores": cpu / elapsed,
        "client_cpu_cores": client_cpu / elapsed,
        "other_cpu_cores": (machine - cpu - client_cpu) / elapsed,
        "busy_before_pct": busy_before,
        "latency_ms_p50": latencies[len(latencies) // 2] if latencies else None,
        "latency_ms_p99": latencies[int(0.99 * (len(latencies) - 1))] if latencies else None,
        "rss_idle_mib": idle / MIB,
        "rss_busy_mib": busy / MIB,
        "rss_per_session_mib": (busy - idle) / MIB / sessions,
    }


def _machine_cpu() -> float:
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + t.irq + t.softirq)


def _loop_cpu(family: list[psutil.Process]) -> float:
    """CPU seconds of the processes' main threads: trio's event loop, which holds the GIL for
    all it does (reading frames off the sockets, sending eye_data, the thread hand-offs). Its
    share of the whole is a floor on what cannot run in parallel within one process."""
    total = 0.0
    for p in family:
        main = [t for t in p.threads() if t.id == p.pid]
        total += sum(t.user_time + t.system_time for t in main)
    return total


@contextlib.contextmanager
def pinned(cpus: str, args: list[str]) -> Iterator[subprocess.Popen[str]]:
    """``trackerd`` on ``cpus`` (taskset), on 127.0.0.1, a free port; stopped on the way out."""
    command = ["taskset", "-c", cpus, sys.executable, "-m", "trackerd", "--host", "127.0.0.1"]
    command += ["--port", "0", "--source", "demo", *args]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def demo_jpegs() -> list[bytes]:
    """The demo clip's frames as a browser sends them: JPEG at quality 80."""
    import cv2

    from trackerd.sources import demo_clip_path, open_source

    with open_source(str(demo_clip_path())) as source:
        return [
            cv2.imencode(".jpg", f.image, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()
            for f in source
        ]


def analyse_alone(window_s: float) -> None:
    """The ceiling's child: decode and track the demo's JPEGs in one thread, no server, for
    ``window_s`` after a warm-up; prints the frames done."""
    from trackerd.vision.images import decode_grey
    from trackerd.vision.tracker import Tracker

    jpegs = demo_jpegs()
    tracker = Tracker()
    done, n = 0, 0
    started = time.monotonic()
    warm = started + 1.0
    while (now := time.monotonic()) < warm + window_s:
        data = jpegs[n % len(jpegs)]
        n += 1
        tracker.process(decode_grey(data).grey, now)
        done += now >= warm
    print(done)


def ceiling(window_s: float) -> dict[str, Any]:
    """What this machine gives two independent processes on CPUs 0 and 1 against one on CPU 0,
    on the same work (decode + track, no server, no GIL shared): the most any server could get
    from its second core here. On a VM whose two vCPUs are one core's two hyperthreads, or
    whose host steals time, it is well under 2."""
    rates = {}
    for cpus, n in (("0", 1), ("0,1", 2)):
        command = ["taskset", "-c", cpus, sys.executable, "-m", "benchmarks.bench_scaling"]
        command += ["--alone", str(window_s)]
        await_quiet()
        children = [
            subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(n)
        ]
        rates[cpus] = sum(int(c.communicate()[0]) for c in children) / window_s
    return {
        "one_cpu_frames_per_s": rates["0"],
        "two_cpus_frames_per_s": rates["0,1"],
        "ceiling": rates["0,1"] / rates["0"],
    }


def clients(port: int, sessions: int, warmup_s: float, window_s: float) -> None:
    """The client process: ``sessions`` push sessions, each one frame in flight, for
    ``warmup_s`` + ``window_s``; prints ``WINDOW`` when the window opens, then one JSON line."""
    import trio
    from trio_websocket import open_websocket_url

    jpegs = demo_jpegs()
    answered = 0
    latency_ms: list[float] = []

    async def session(index: int, window: list[float], ready: trio.Event) -> None:
        nonlocal answered
        async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
            await ws.get_message()  # connection
            await ws.send_message(START)
            while json.loads(await ws.get_message())["type"] != "tracking_started":
                pass
            ready.set()
            n = index * 37  # sessions at different points of the clip
            while (now := trio.current_time()) < window[1]:
                await ws.send_message(jpegs[n % len(jpegs)])
                n += 1
                while json.loads(await ws.get_message())["type"] != "eye_data":
                    pass
                if now >= window[0]:
                    answered += 1
                    latency_ms.append((trio.current_time() - now) * 1000)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            readies = [trio.Event() for _ in range(sessions)]
            opened = trio.current_time() + 60.0  # moved once every session has started
            window = [opened, opened + window_s]
            for i, ready in enumerate(readies):
                nursery.start_soon(session, i, window, ready)
            for ready in readies:
                await ready.wait()
            # The sessions read `window` when they loop: set it before they pass the old one.
            window[0] = trio.current_time() + warmup_s
            window[1] = window[0] + window_s
            await trio.sleep_until(window[0])
            print("WINDOW", flush=True)

    trio.run(main)
    print(json.dumps({"answered": answered, "window_s": window_s, "latency_ms": latency_ms}))


def run(
    quick: bool = False, workers: bool = True, sessions: int = 12, repeat: int = 1
) -> dict[str, Any]:
    """Each configuration ``repeat`` times, the configurations interleaved so that other work
    on the machine weighs on all of them alike; the median run of each is its row."""
    warmup_s, window_s = (1.0, 2.0) if quick else (3.0, 15.0)
    configs = [("0", 1), ("0,1", 1)] + ([("0,1", 2)] if workers else [])
    runs: list[list[dict[str, Any]]] = [[] for _ in configs]
    for _ in range(repeat):
        for samples, (cpus, n) in zip(runs, configs, strict=True):
            samples.append(measure(cpus, n, sessions, warmup_s, window_s))
    rows = []
    for samples in runs:
        ordered = sorted(samples, key=lambda r: r["frames_per_s"])
        row = dict(ordered[len(ordered) // 2])
        row["frames_per_s_runs"] = [round(r["frames_per_s"], 1) for r in samples]
        rows.append(row)
    one = rows[0]["frames_per_s"]
    for row in rows:
        row["scaling"] = row["frames_per_s"] / one
    return {"rows": rows, "machine": ceiling(window_s)}


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| CPUs | workers | sessions | frames/s | scaling | server CPU | client CPU | other CPU "
        "| event loop | p50 / p99 ms | RSS per session | frames/s of each run |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        cells = (
            r["cpus"],
            r["workers"],
            r["sessions"],
            f"{r['frames_per_s']:.0f}",
            f"{r['scaling']:.2f}x",
            f"{r['server_cpu_cores']:.2f}",
            f"{r['client_cpu_cores']:.2f}",
            f"{r['other_cpu_cores']:.2f}",
            f"{r['event_loop_share']:.0%}",
            f"{r['latency_ms_p50']:.0f} / {r['latency_ms_p99']:.0f}",
            f"{r['rss_per_session_mib']:.1f} MiB",
            ", ".join(f"{f:.0f}" for f in r["frames_per_s_runs"]),
        )
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_scaling")
    parser.add_argument("--quick", action="store_true", help="brief smoke run, not for timings")
    parser.add_argument("--sessions", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the median is kept")
    parser.add_argument("--no-workers", action="store_true", help="skip the --workers 2 row")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--client", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--alone", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.alone:
        analyse_alone(args.alone)
        return 0
    if args.client:
        port, sessions, warmup_s, window_s = args.client
        clients(int(port), int(sessions), float(warmup_s), float(window_s))
        return 0
    results = run(args.quick, not args.no_workers, args.sessions, args.repeat)
    record = {
        "suite": "scaling",
        "command": " ".join(["python", "-m", "benchmarks.bench_scaling", *(argv or sys.argv[1:])]),
        "quick": args.quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        # Other work on the machine takes CPU from the server: say how much there was.
        "load_average_before": os.getloadavg(),
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"scaling{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(record, indent=1))
    print(table(results["rows"]))
    m = results["machine"]
    print(
        f"machine ceiling (two independent processes, no server): {m['ceiling']:.2f}x "
        f"({m['one_cpu_frames_per_s']:.0f} -> {m['two_cpus_frames_per_s']:.0f} frames/s)"
    )
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
