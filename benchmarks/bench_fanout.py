"""Fan-out: synthetic observations at 30 Hz to N clients, trackerd against asyncio + websockets.

For each N and each server, in the same run: a fresh server process (``benchmarks.fanout_server``:
the real trackerd with only the frame analysis made up; ``benchmarks.fanout_baseline``: asyncio +
``websockets.broadcast``), N clients spread over two client processes
(``benchmarks.fanout_clients``), a warm-up, then a measured window. Reported per row: messages
received per client per second (30 is everything), capture→receipt latency p50/p99 (the clients
compute ``time.time() - captured_at``), the server's CPU over the window in % of one core (psutil),
the part of it spent in the fan-out call itself (``Hub.publish`` / ``broadcast``), and its RSS.
Then, per N, trackerd's CPU per delivered message as a ratio of the baseline's.

``end_to_end``: the real ``python -m trackerd --source demo`` (cascades and all), one client,
latency from the frame's capture to the client's receipt.

Everything runs on 127.0.0.1 and is bounded: every child has a deadline after which it is killed,
children exit when the benchmark's end of their stdin closes, and all are reaped on the way out.

``python -m benchmarks.bench_fanout [--quick] [--sizes 10,100] [--client websockets]
[--profile N]``: the same suite without writing JSON (``python -m benchmarks fanout`` does);
``--profile N`` instead runs trackerd under cProfile with N clients and prints where its
event-loop thread spends its time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pstats
import re
import resource
import statistics
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil

from benchmarks.procs import LISTENING, process, track

RATE_HZ = 30.0
SIZES = (10, 100, 500, 1000)
QUICK_SIZES = (100,)
CLIENT_PROCESSES = 2
"""Two client processes: the server has one core to itself at most anyway (2 cores in all), and
each client process handles 500 clients x 30 Hz on well under one core with the raw client."""
SERVERS = {"baseline": "benchmarks.fanout_baseline", "trackerd": "benchmarks.fanout_server"}
ROUNDS = 3
"""Rounds per server and N in a full run, the servers alternating: CPU is the median round's,
because one 2-core machine's CPU figures move by ±15 % from one round to the next."""
LATENCY_QUANTILES = 1000
"""Latency samples kept per row in the JSON: evenly spaced order statistics, enough for a CDF."""
OTHER_LOAD_PCT = 10.0
"""Beyond this much CPU (% of a core) used by anything but the server and the clients during a
window, the run says that the machine was not quiet."""
CHILD_SLACK_S = 60.0
"""A child still running this long after its work should be over is hung: it is killed."""
MIB = 2**20


# --- child processes -------------------------------------------------------------------------


class Child:
    """A child process: its stdout read line by line, its stderr drained by a thread (a full
    pipe would block it) and kept for error messages, and a deadline after which it is killed."""

    def __init__(self, proc: subprocess.Popen[str], deadline_s: float) -> None:
        self.proc = proc
        self.log: deque[str] = deque(maxlen=200)
        self._logged = threading.Condition()
        self._lines_logged = 0
        self._log_ended = False
        self.killed = False
        self._watchdog = threading.Timer(deadline_s, self._kill)
        self._watchdog.daemon = True
        self._watchdog.start()
        threading.Thread(target=self._drain, daemon=True).start()

    def _kill(self) -> None:
        self.killed = True
        self.proc.kill()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._logged:
                self.log.append(line)
                self._lines_logged += 1
                self._logged.notify_all()
        with self._logged:
            self._log_ended = True
            self._logged.notify_all()

    def line(self, prefix: str) -> str:
        """The rest of the next stdout line, which must start with ``prefix``."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith(prefix):
            raise self.error(f"expected {prefix!r}, got {line[:200]!r}")
        return line[len(prefix) :].strip()

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait_log(self, pattern: re.Pattern[str], timeout_s: float) -> re.Match[str]:
        """The first stderr line matching ``pattern`` (trackerd logs where it listens)."""
        deadline = time.monotonic() + timeout_s
        seen = 0
        with self._logged:
            while True:
                new = self._lines_logged - seen
                for line in list(self.log)[-new:] if new else []:
                    if found := pattern.search(line):
                        return found
                seen = self._lines_logged
                left = deadline - time.monotonic()
                if self._log_ended or left <= 0:
                    raise self.error(f"no log line matching {pattern.pattern!r}")
                self._logged.wait(left)

    def error(self, what: str) -> RuntimeError:
        """An error naming the child and showing the end of its log."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(1.0)  # if it is dying, let its last words reach the log
            with self._logged:
                self._logged.wait_for(lambda: self._log_ended, timeout=1.0)
        why = " (killed: past its deadline)" if self.killed else ""
        tail = "".join(list(self.log)[-15:])
        return RuntimeError(f"{' '.join(self.proc.args)}{why}: {what}\n{tail}")  # type: ignore[arg-type]

    def close(self) -> None:
        """Done with it: no deadline any more (``process`` reaps it)."""
        self._watchdog.cancel()

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Close its stdin (our children stop at end of input); False if it has not exited
        within ``timeout_s`` (then the way out of :func:`child` terminates it)."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True


@contextlib.contextmanager
def child(
    *args: str, deadline_s: float, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Iterator[Child]:
    """``python *args`` (in ``cwd``, with ``env`` added: another checkout's code to compare)."""
    with process(*args, env=env, **({"cwd": cwd} if cwd else {})) as proc:
        c = Child(proc, deadline_s)
        try:
            yield c
        finally:
            c.close()


# --- one measurement -------------------------------------------------------------------------


def shares(clients: int) -> list[int]:
    """``clients`` split as evenly as possible over the client processes (none empty)."""
    k = min(CLIENT_PROCESSES, clients)
    return [clients // k + (i < clients % k) for i in range(k)]


def measure(
    kind: str, clients: int, window_s: float, warmup_s: float, impl: str = "raw"
) -> dict[str, Any]:
    """One round: a fresh server, ``clients`` clients, one window. The raw figures (every
    latency included); :func:`combine` turns rounds into a row of the table."""
    deadline_s = warmup_s + window_s + clients / 100 + CHILD_SLACK_S
    with child("-m", SERVERS[kind], "--rate", str(RATE_HZ), deadline_s=deadline_s) as srv:
        port = srv.line("PORT ")
        server_ps = psutil.Process(srv.proc.pid)
        rss_idle = server_ps.memory_info().rss
        with contextlib.ExitStack() as stack:
            procs = [
                stack.enter_context(
                    child(
                        "-m",
                        "benchmarks.fanout_clients",
                        *("--port", port, "--clients", str(n), "--impl", impl),
                        deadline_s=deadline_s,
                    )
                )
                for n in shares(clients)
            ]
            for c in procs:
                c.line("READY")
            t0 = time.time() + warmup_s
            t1 = t0 + window_s
            for c in procs:
                c.send(f"{t0!r} {t1!r}")
            time.sleep(max(0.0, t0 - time.time()))
            before = _snapshot(srv, server_ps, procs)
            time.sleep(max(0.0, t1 - time.time()))
            after = _snapshot(srv, server_ps, procs)
            rss = server_ps.memory_info().rss
            reports = [json.loads(c.line("")) for c in procs]
        srv.stop()
    return _round(kind, window_s, reports, before, after, rss_idle, rss)


def _snapshot(srv: Child, server_ps: psutil.Process, procs: list[Child]) -> dict[str, Any]:
    """CPU times: the server's, the client processes', the whole machine's busy time (to see
    whether anything else ran), and the server's own counters."""
    cpu = server_ps.cpu_times()
    clients_cpu = [sum(psutil.Process(c.proc.pid).cpu_times()[:2]) for c in procs]
    machine = psutil.cpu_times()
    srv.send("stats")
    return {
        "user_s": cpu.user,
        "system_s": cpu.system,
        "clients_cpu_s": clients_cpu,
        "machine_busy_s": machine.user
        + machine.nice
        + machine.system
        + machine.irq
        + machine.softirq,
        **json.loads(srv.line("STATS ")),
    }


def _round(
    kind: str,
    window_s: float,
    reports: list[dict[str, Any]],
    before: dict[str, Any],
    after: dict[str, Any],
    rss_idle: int,
    rss: int,
) -> dict[str, Any]:
    def delta(key: str) -> float:
        return float(after[key] - before[key])

    clients_cpu = [
        a - b for a, b in zip(after["clients_cpu_s"], before["clients_cpu_s"], strict=True)
    ]
    server_cpu = delta("user_s") + delta("system_s")
    fanout_key = "publish_cpu_s" if kind == "trackerd" else "broadcast_cpu_s"
    return {
        "counts": [n for r in reports for n in r["counts"]],
        "latencies_ms": [x / 1000 for r in reports for x in r["latencies_us"]],
        "eye_data_bytes": [r["eye_data_bytes"] for r in reports if r["eye_data_bytes"]],
        "closed": sum(r["closed"] for r in reports),
        "cpu_pct": 100 * server_cpu / window_s,
        "user_pct": 100 * delta("user_s") / window_s,
        "system_pct": 100 * delta("system_s") / window_s,
        "fanout_call_pct": 100 * delta(fanout_key) / window_s,
        "client_process_cpu_pct": [100 * c / window_s for c in clients_cpu],
        # Everything else the machine did meanwhile (other sessions, the tick's coarseness).
        "other_cpu_pct": 100 * (delta("machine_busy_s") - server_cpu - sum(clients_cpu)) / window_s,
        "rss_mib": rss / MIB,
        "rss_idle_mib": rss_idle / MIB,  # listening, before any client (and before capture)
        # The send paths trackerd took in the window: fast (one os.write), slow (awaited),
        # skipped (a backlogged client's stale observations).
        "counters": {k: int(delta(k)) for k, v in after.items() if type(v) is int},
    }


def combine(
    kind: str, clients: int, window_s: float, rounds: list[dict[str, Any]]
) -> dict[str, Any]:
    """One row from several rounds: rates and latencies over every message of every round;
    CPU as the median round (a round disturbed by something else on the machine does not move
    it), with every round's figure kept beside it."""
    counts = [n for r in rounds for n in r["counts"]]
    latencies = sorted(x for r in rounds for x in r["latencies_ms"])
    rates = [n / window_s for n in counts]
    delivered = sum(counts)
    # µs of server CPU per delivered message, per round
    per_message = [
        1e6 * (r["cpu_pct"] / 100 * window_s) / sum(r["counts"]) for r in rounds if sum(r["counts"])
    ]
    sizes = [b for r in rounds for b in r["eye_data_bytes"]]

    def median(key: str) -> float:
        return float(statistics.median(r[key] for r in rounds))

    row: dict[str, Any] = {
        "server": kind,
        "clients": clients,
        "window_s": window_s,
        "rounds": len(rounds),
        "rate_per_client_hz": statistics.fmean(rates),
        "min_rate_hz": min(rates),
        "delivered": delivered,
        "p50_ms": _quantile(latencies, 0.50),
        "p99_ms": _quantile(latencies, 0.99),
        "max_ms": latencies[-1] if latencies else None,
        "cpu_pct": median("cpu_pct"),
        "cpu_pct_rounds": [r["cpu_pct"] for r in rounds],
        "user_pct": median("user_pct"),
        "system_pct": median("system_pct"),
        "fanout_call_pct": median("fanout_call_pct"),
        "cpu_us_per_message": statistics.median(per_message) if per_message else None,
        "client_process_cpu_pct": max(c for r in rounds for c in r["client_process_cpu_pct"]),
        "other_cpu_pct_rounds": [r["other_cpu_pct"] for r in rounds],
        "rss_mib": max(r["rss_mib"] for r in rounds),
        "rss_idle_mib": max(r["rss_idle_mib"] for r in rounds),
        "eye_data_bytes": statistics.fmean(sizes) if sizes else None,
        "closed_clients": sum(r["closed"] for r in rounds),
        # Sorted, so evenly spaced picks keep the distribution (for the CDF) at a readable size.
        "latency_samples_ms": [round(x, 3) for x in _decimate(latencies, LATENCY_QUANTILES)],
        "latency_sample_count": len(latencies),
    }
    if kind == "trackerd":
        row["server_counters"] = {
            k: sum(r["counters"].get(k, 0) for r in rounds) for k in rounds[0]["counters"]
        }
    return row


def _quantile(ordered: Sequence[float], q: float) -> float | None:
    return ordered[round(q * (len(ordered) - 1))] if ordered else None


def _decimate(ordered: list[float], most: int) -> list[float]:
    if len(ordered) <= most:
        return ordered
    step = (len(ordered) - 1) / (most - 1)
    return [ordered[round(i * step)] for i in range(most)]


# --- end to end on the demo clip -------------------------------------------------------------


def end_to_end(frames: int) -> dict[str, Any]:
    """The real server process on the demo clip (cascades and all), one client."""
    deadline_s = frames / 20 + CHILD_SLACK_S  # the clip plays at 24 fps
    args = ("-m", "trackerd", "--host", "127.0.0.1", "--port", "0", "--source", "demo")
    with child(*args, deadline_s=deadline_s) as srv:
        port = int(srv.wait_log(LISTENING, timeout_s=30).group(1))
        samples = track(port, frames + 1)
    # The first frame includes the first, full-frame face search (tens of ms): start-up, not
    # the steady state that the percentiles describe (bench_startup measures start-up).
    latencies = sorted(1000 * x for x in samples[1:])
    return {
        "frames": len(latencies),
        "p50_ms": _quantile(latencies, 0.50),
        "p99_ms": _quantile(latencies, 0.99),
        "max_ms": latencies[-1],
        "first_ms": 1000 * samples[0],
        "latency_samples_ms": [round(x, 3) for x in latencies],
    }


# --- the suite -------------------------------------------------------------------------------


def run(
    quick: bool = False,
    sizes: Sequence[int] | None = None,
    impl: str = "raw",
    with_end_to_end: bool = True,
) -> dict[str, Any]:
    # The client processes inherit this; they and the servers raise it further themselves.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4096)), hard))
    sizes = sizes or (QUICK_SIZES if quick else SIZES)
    window_s, warmup_s, rounds = (1.0, 0.5, 1) if quick else (6.0, 2.0, ROUNDS)
    print_header()
    rows = []
    for n in sizes:
        measured: dict[str, list[dict[str, Any]]] = {kind: [] for kind in SERVERS}
        for i in range(rounds):
            # Alternating the order, so that a drift in the machine's load favours neither.
            for kind in list(SERVERS)[:: 1 if i % 2 == 0 else -1]:
                measured[kind].append(measure(kind, n, window_s, warmup_s, impl))
        for kind in SERVERS:
            rows.append(combine(kind, n, window_s, measured[kind]))
            print_row(rows[-1])
    ratios = cpu_ratios(rows)
    print(
        "CPU per delivered message, trackerd / baseline: "
        + ", ".join(f"{n} clients {r:.2f}x" for n, r in ratios.items())
    )
    warn_if_suspect(rows)
    results: dict[str, Any] = {
        "rate_hz": RATE_HZ,
        "rounds": rounds,
        "client": impl,
        "client_processes": CLIENT_PROCESSES,
        "warmup_s": warmup_s,
        "rows": rows,
        "cpu_per_message_ratio": {str(n): r for n, r in ratios.items()},
    }
    if with_end_to_end:
        e2e = results["end_to_end"] = end_to_end(10 if quick else 240)
        print(
            f"end to end, python -m trackerd --source demo (real cascades), one client: "
            f"p50 {e2e['p50_ms']:.1f} ms, p99 {e2e['p99_ms']:.1f} ms over {e2e['frames']} frames"
        )
    return results


def cpu_ratios(rows: list[dict[str, Any]]) -> dict[int, float]:
    by = {(r["clients"], r["server"]): r["cpu_us_per_message"] for r in rows}
    return {
        n: by[n, "trackerd"] / by[n, "baseline"]
        for n in dict.fromkeys(r["clients"] for r in rows)
        if by.get((n, "trackerd")) and by.get((n, "baseline"))
    }


def warn_if_suspect(rows: list[dict[str, Any]]) -> None:
    """Say so when a row measured something other than the server."""
    sizes = {r["server"]: r["eye_data_bytes"] for r in rows if r["eye_data_bytes"]}
    if len(sizes) == 2 and abs(sizes["trackerd"] - sizes["baseline"]) > 4:
        print(f"warning: the servers' eye_data differ in size: {sizes}")
    for r in rows:
        where = f"warning: {r['clients']} clients, {r['server']}:"
        if r["client_process_cpu_pct"] > 85:
            print(
                f"{where} a client process used {r['client_process_cpu_pct']:.0f} % of a core; "
                "its receipt times include its own queueing"
            )
        other = max(r["other_cpu_pct_rounds"])
        if other > OTHER_LOAD_PCT:
            print(f"{where} something else used {other:.0f} % of a core during a window")
        if r["closed_clients"]:
            print(f"{where} {r['closed_clients']} connections closed")


COLUMNS = (
    ("clients", 7, "{clients}"),
    ("server", 8, "{server}"),
    ("msg/s/client", 12, "{rate_per_client_hz:.1f}"),
    ("min", 5, "{min_rate_hz:.1f}"),
    ("p50 ms", 7, "{p50_ms:.1f}"),
    ("p99 ms", 7, "{p99_ms:.1f}"),
    ("CPU %", 6, "{cpu_pct:.1f}"),
    ("in send %", 9, "{fanout_call_pct:.1f}"),
    ("µs/msg", 7, "{cpu_us_per_message:.1f}"),
    ("RSS MiB", 8, "{rss_mib:.1f}"),
)


def print_header() -> None:
    print(" ".join(f"{name:>{width}}" for name, width, _ in COLUMNS), flush=True)


def print_row(row: dict[str, Any]) -> None:
    cells = []
    for _, width, fmt in COLUMNS:
        try:
            cell = fmt.format(**row)
        except (TypeError, ValueError):  # None: nothing was received
            cell = "-"
        cells.append(f"{cell:>{width}}")
    print(" ".join(cells), flush=True)


# --- profiling trackerd ----------------------------------------------------------------------


def profile(clients: int, window_s: float = 8.0, top: int = 25) -> None:
    """trackerd under cProfile with ``clients`` clients: where its event-loop thread's time goes."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "trackerd.prof"
        deadline_s = window_s + clients / 100 + CHILD_SLACK_S
        args = ("-m", SERVERS["trackerd"], "--rate", str(RATE_HZ), "--profile", str(out))
        with child(*args, deadline_s=deadline_s) as srv:
            port = srv.line("PORT ")
            with contextlib.ExitStack() as stack:
                procs = [
                    stack.enter_context(
                        child(
                            "-m",
                            "benchmarks.fanout_clients",
                            *("--port", port, "--clients", str(n)),
                            deadline_s=deadline_s,
                        )
                    )
                    for n in shares(clients)
                ]
                for c in procs:
                    c.line("READY")
                t0 = time.time()
                for c in procs:
                    c.send(f"{t0!r} {t0 + window_s!r}")
                for c in procs:
                    c.line("")
            if not srv.stop():  # the profile is written as the server exits
                raise srv.error("did not exit at the end of its input")
        pstats.Stats(str(out)).sort_stats("tottime").print_stats(top)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 100, 1 s windows")
    parser.add_argument("--sizes", help="comma-separated client counts, e.g. 10,1000")
    parser.add_argument("--client", choices=["raw", "websockets"], default="raw")
    parser.add_argument("--no-e2e", action="store_true", help="skip the demo-clip case")
    parser.add_argument("--profile", type=int, metavar="N", help="profile trackerd, N clients")
    args = parser.parse_args(argv)
    if args.profile:
        profile(args.profile)
        return
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
    run(args.quick, sizes, args.client, with_end_to_end=not args.no_e2e)


if __name__ == "__main__":
    main()
