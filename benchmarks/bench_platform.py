"""What the platform side costs a pushed frame: episodes, the session database, the webhook outbox.

Three servers, each measured as ``python -m benchmarks sessions`` measures a row (N push
sessions of the demo clip's real face as 640x480 JPEGs at 15 fps, one frame in flight each,
``--workers 2``), in turns (each round in another order), so that a busy spell of a shared VM
falls on each alike:

- ``baseline``: another checkout (``--baseline DIR``, e.g. a git worktree of the commit before
  episodes), with no episodes and no database;
- ``records``: this tree, webhooks off: each session's episodes, its stillness measure, its
  report saved every 10 s and at each episode, each event written (fsynced) to SQLite;
- ``webhooks``: this tree with ``--webhook-url`` to a receiver in this process (it answers 204),
  so every event is also signed and POSTed.

Each row gives the server's CPU per answered frame (all its processes), the slowest session's
fps, the p99 latency, and whether it holds (every session >= 14 fps, p99 < 150 ms); the webhook
rows add the events delivered. ``python -m benchmarks.bench_platform --baseline DIR [--sessions
40] [--rounds 2] [--out benchmarks/results]``.
"""

from __future__ import annotations

import argparse
import http.server
import json
import statistics
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.bench_sessions import WORKERS, holds, measure, webcam_jpegs
from benchmarks.sessions_clients import write_frames

SECRET = "whsec_" + "YmVuY2htYXJrLXdlYmhvb2stc2VjcmV0LTMyYnl0ZXM="
KINDS = ("baseline", "records", "webhooks")


class _Count(http.server.BaseHTTPRequestHandler):
    delivered = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        with _Count.lock:
            _Count.delivered += 1
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a line per event would be the benchmark's own noise."""


@contextmanager
def receiver() -> Iterator[str]:
    """A webhook receiver in a thread of this process, answering 204 to every POST: its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Count)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks"
    finally:
        server.shutdown()


def run(
    baseline: Path, sessions: int, rounds: int, window_s: float = 8.0, warmup_s: float = 2.0
) -> dict[str, Any]:
    _, jpegs = webcam_jpegs(None)
    rows: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    with tempfile.TemporaryDirectory() as tmp, receiver() as url:
        frames = Path(tmp) / "frames.bin"
        write_frames(frames, jpegs)
        for r in range(rounds):
            # Each round in another order: a machine that slows over a round, or a server that
            # gains from the one before it, favours no kind.
            for kind in KINDS[r % len(KINDS) :] + KINDS[: r % len(KINDS)]:
                data = ("--data-dir", str(Path(tmp) / f"data-{kind}-{r}"))
                extra = {
                    "baseline": (),
                    "records": data,
                    "webhooks": (*data, "--webhook-url", url),
                }[kind]
                env_root = baseline if kind == "baseline" else None
                before = _Count.delivered
                env = {"TRACKERD_WEBHOOK_SECRET": SECRET} if kind == "webhooks" else None
                row = measure(sessions, frames, window_s, warmup_s, WORKERS, extra, env_root, env)
                row["kind"] = kind
                row["holds"] = holds(row)
                if kind == "webhooks":
                    row["events_delivered"] = _Count.delivered - before
                rows[kind].append(row)
                print(_line(row), flush=True)
    summary = {
        kind: {
            "server_cpu_ms_per_frame": statistics.median(
                r["server_cpu_ms_per_frame"] for r in rows[kind]
            ),
            "fps_min": min(r["fps_min"] for r in rows[kind]),
            "p99_ms": max(r["p99_ms"] for r in rows[kind]),
            "holds": all(r["holds"] for r in rows[kind]),
        }
        for kind in KINDS
    }
    base = summary["baseline"]["server_cpu_ms_per_frame"]
    for kind in KINDS:
        ms = summary[kind]["server_cpu_ms_per_frame"]
        summary[kind]["ratio_to_baseline"] = ms / base
        print(
            f"{kind:>9}: {ms:.2f} ms of server CPU a frame (median of {rounds}), "
            f"{ms / base:.2f}x the baseline's; slowest session {summary[kind]['fps_min']:.1f} "
            f"fps, worst p99 {summary[kind]['p99_ms']:.0f} ms, holds: {summary[kind]['holds']}"
        )
    return {
        "sessions": sessions,
        "workers": WORKERS,
        "rounds": rounds,
        "window_s": window_s,
        "baseline": str(baseline),
        "rows": rows,
        "summary": summary,
    }


def _line(row: dict[str, Any]) -> str:
    delivered = f", {row['events_delivered']} events delivered" if "events_delivered" in row else ""
    return (
        f"{row['kind']:>9} N={row['sessions']}: {row['server_cpu_ms_per_frame']:.2f} ms/frame, "
        f"fps min {row['fps_min']:.1f}, p99 {row['p99_ms']:.0f} ms, holds {row['holds']}"
        f"{delivered}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="a checkout to compare")
    parser.add_argument("--sessions", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, help="a folder to write platform.json in")
    args = parser.parse_args()
    results = run(args.baseline.resolve(), args.sessions, args.rounds)
    if args.out:
        (args.out / "platform.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
