"""Memory: the server's resident set size idle, while tracking, and with many clients.

Both servers run the demo clip: trackerd and the original server (benchmarks.original_server)
in the same run. "idle" is after start-up with nobody connected; "tracking" after one client
has tracked for a few seconds; "N clients" while N tracking clients (benchmarks.fanout_clients,
two processes) are connected, the largest RSS seen over the window.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import psutil

from benchmarks.procs import expect, process, server, track

MIB = 2**20


def measure(kind: str, clients: int, window_s: float, frames: int = 60) -> dict[str, Any]:
    with server(kind) as (proc, port):
        ps = psutil.Process(proc.pid)
        time.sleep(1.0)
        idle = ps.memory_info().rss
        track(port, frames)  # 60: ~2.5 s of the 24 fps clip
        tracking = ps.memory_info().rss
        try:
            peak: float | None = _with_clients(ps, port, clients, window_s, tracking)
            failure = None
        except RuntimeError as exc:
            # The original analyses every frame on its event loop (~85 ms a frame at 24 fps:
            # the loop is always busy), so a crowd of clients may not even get connected.
            peak, failure = None, str(exc).splitlines()[0][:200]
    return {
        "server": kind,
        "idle_mib": idle / MIB,
        "tracking_mib": tracking / MIB,
        "clients": clients,
        "with_clients_mib": None if peak is None else peak / MIB,
        "with_clients_failure": failure,
    }


def _with_clients(ps: psutil.Process, port: int, clients: int, window_s: float, floor: int) -> int:
    """The largest RSS while ``clients`` tracking clients (two processes) are connected."""
    with contextlib.ExitStack() as stack:
        procs = [
            stack.enter_context(
                process("-m", "benchmarks.fanout_clients", "--port", str(port), "--clients", str(n))
            )
            for n in (clients // 2, clients - clients // 2)
        ]
        for p in procs:
            expect(p, "READY")
        t0 = time.time()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(f"{t0} {t0 + window_s}\n")
            p.stdin.flush()
        peak = floor
        while time.time() < t0 + window_s:
            peak = max(peak, ps.memory_info().rss)
            time.sleep(0.2)
        for p in procs:
            expect(p, "")
    return peak


def run(quick: bool = False) -> dict[str, Any]:
    clients, window_s, frames = (100, 1.0, 12) if quick else (1000, 6.0, 60)
    rows = [measure(kind, clients, window_s, frames) for kind in ("original", "trackerd")]
    print(f"{'server':10} {'idle MiB':>9} {'tracking MiB':>13} {f'{clients} clients MiB':>18}")
    for row in rows:
        crowd = row["with_clients_mib"]
        print(
            f"{row['server']:10} {row['idle_mib']:>9.1f} {row['tracking_mib']:>13.1f}"
            f" {crowd if crowd is None else round(crowd, 1)!s:>18}"
        )
    return {"rows": rows}
