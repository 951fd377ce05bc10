"""Fan-out: synthetic observations at 30 Hz to N clients, trackerd against asyncio + websockets.

For each N and each server, in the same run: a fresh server process (benchmarks.fanout_server),
N clients spread over two client processes (benchmarks.fanout_clients), a warm-up, then a
measured window. Reported: messages per client per second (30 is everything), capture→receipt
latency p50/p99, the server's CPU (% of one core, from its own CPU time over the window) and its
RSS at the end. All on 127.0.0.1; everything stops by itself and children are killed on exit.

``e2e``: the real server on the real demo clip (cascades and all), one client, latency from the
frame's capture to the client's receipt.
"""

from __future__ import annotations

import contextlib
import json
import resource
import statistics
import sys
import time
from typing import Any

import psutil

from benchmarks.procs import expect, process, server, track

CLIENT_PROCESSES = 2
RATE_HZ = 30.0


def measure(kind: str, clients: int, window_s: float, warmup_s: float) -> dict[str, Any]:
    keep_every = max(1, clients // 100)  # ~100 latency samples per client process per second
    with process("-m", "benchmarks.fanout_server", kind, "--rate", str(RATE_HZ)) as srv:
        port = int(expect(srv, "PORT "))
        server_ps = psutil.Process(srv.pid)
        shares = [
            clients // CLIENT_PROCESSES + (i < clients % CLIENT_PROCESSES)
            for i in range(CLIENT_PROCESSES)
        ]
        with contextlib.ExitStack() as stack:
            procs = [
                stack.enter_context(
                    process(
                        "-m",
                        "benchmarks.fanout_clients",
                        "--port",
                        str(port),
                        "--clients",
                        str(n),
                        "--keep-every",
                        str(keep_every),
                    )
                )
                for n in shares
                if n
            ]
            for proc in procs:
                expect(proc, "READY")
            t0 = time.time() + warmup_s
            t1 = t0 + window_s
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write(f"{t0} {t1}\n")
                proc.stdin.flush()
            time.sleep(max(0.0, t0 - time.time()))
            cpu0 = _cpu(server_ps)
            time.sleep(max(0.0, t1 - time.time()))
            cpu1 = _cpu(server_ps)
            rss = server_ps.memory_info().rss
            results = [json.loads(expect(proc, "")) for proc in procs]
    counts = [c for r in results for c in r["counts"]]
    latencies = sorted(x for r in results for x in r["latencies"])
    rates = [c / window_s for c in counts]
    cpu_pct = 100.0 * (cpu1 - cpu0) / window_s
    delivered = sum(counts)
    return {
        "server": kind,
        "clients": clients,
        "rate_per_client_hz": statistics.fmean(rates),
        "min_rate_hz": min(rates),
        "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else None,
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))] if latencies else None,
        "cpu_pct": cpu_pct,
        "cpu_us_per_message": 1e6 * (cpu1 - cpu0) / delivered if delivered else None,
        "rss_mib": rss / 2**20,
        "closed_clients": sum(r["closed"] for r in results),
        # Sorted, so evenly spaced picks keep the distribution (for the CDF) at a readable size.
        "latency_samples_ms": [round(1000 * x, 3) for x in _decimate(latencies, 1000)],
        "window_s": window_s,
    }


def _decimate(ordered: list[float], most: int) -> list[float]:
    if len(ordered) <= most:
        return ordered
    step = (len(ordered) - 1) / (most - 1)
    return [ordered[round(i * step)] for i in range(most)]


def _cpu(ps: psutil.Process) -> float:
    times = ps.cpu_times()
    return float(times.user + times.system)


def end_to_end(frames: int) -> dict[str, Any]:
    """The real server on the demo clip (cascades and all), one client."""
    with server("trackerd") as (_, port):
        latencies = sorted(track(port, frames))[1:]  # the first includes the face acquisition
    return {
        "frames": len(latencies),
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "max_ms": 1000 * latencies[-1],
    }


def run(quick: bool = False) -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4096)), hard))
    sizes = [10, 100] if quick else [10, 100, 500, 1000]
    window_s, warmup_s = (2.0, 0.5) if quick else (8.0, 2.0)
    rows = []
    for n in sizes:
        for kind in ("baseline", "trackerd"):
            rows.append(measure(kind, n, window_s, warmup_s))
            print_row(rows[-1])
    e2e = end_to_end(30 if quick else 240)
    print(
        f"end to end on the demo clip (real cascades): p50 {e2e['p50_ms']:.1f} ms, "
        f"p99 {e2e['p99_ms']:.1f} ms over {e2e['frames']} frames"
    )
    return {"rows": rows, "end_to_end": e2e, "rate_hz": RATE_HZ}


def print_row(row: dict[str, Any]) -> None:
    if row["server"] == "baseline" and row["clients"] == 10:
        print(
            f"{'clients':>7} {'server':9} {'msg/s/client':>12} {'min':>6} {'p50 ms':>7} "
            f"{'p99 ms':>7} {'CPU %':>6} {'us/msg':>7} {'RSS MiB':>8}"
        )
    print(
        f"{row['clients']:>7} {row['server']:9} {row['rate_per_client_hz']:>12.1f} "
        f"{row['min_rate_hz']:>6.1f} {row['p50_ms'] or 0:>7.1f} {row['p99_ms'] or 0:>7.1f} "
        f"{row['cpu_pct']:>6.1f} {row['cpu_us_per_message'] or 0:>7.1f} {row['rss_mib']:>8.1f}",
        flush=True,
    )


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
