"""Child processes for the benchmarks: started with the repository on the path, always reaped."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
LISTENING = re.compile(r"listening on ws://[^:]+:(\d+)")


@contextlib.contextmanager
def process(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> Iterator[subprocess.Popen[str]]:
    """``python *args`` with pipes, in ``cwd``; terminated (then killed) on the way out, whatever
    happens."""
    proc = subprocess.Popen(
        [sys.executable, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        cwd=cwd,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def expect(proc: subprocess.Popen[str], prefix: str) -> str:
    """The rest of the child's next stdout line, which must start with ``prefix``."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(prefix):
        err = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
        raise RuntimeError(f"expected {prefix!r} from {proc.args}, got {line!r} {err}")
    return line[len(prefix) :].strip()


def trackerd_port(proc: subprocess.Popen[str]) -> int:
    """Read trackerd's log on stderr until it says where it listens."""
    assert proc.stderr is not None
    while True:
        line = proc.stderr.readline()
        if not line:
            raise RuntimeError(f"trackerd exited before listening: {proc.args}")
        if found := LISTENING.search(line):
            return int(found.group(1))


BENCH_MAX_CONNECTIONS = 4000


@contextlib.contextmanager
def server(
    kind: str, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """``trackerd`` on the demo clip, or ``original`` (benchmarks.original_server)."""
    if kind == "trackerd":
        # Room for the 1000-client crowd and the probes beside it (the default cap is 1000), all
        # from 127.0.0.1 (one address may otherwise hold 256).
        args = ("-m", "trackerd", "--host", "127.0.0.1", "--port", "0", "--source", "demo")
        args += ("--max-connections", str(BENCH_MAX_CONNECTIONS))
        args += ("--max-connections-per-ip", str(BENCH_MAX_CONNECTIONS))
    else:
        args = ("-m", "benchmarks.original_server")
    with process(*args, env=env) as proc:
        port = trackerd_port(proc) if kind == "trackerd" else int(expect(proc, "PORT "))
        # Keep reading the server's log: a full pipe would block its writes to stderr, and with
        # them the whole server (1000 clients log 2000 lines).
        assert proc.stderr is not None
        threading.Thread(target=_drain, args=(proc.stderr,), daemon=True).start()
        yield proc, port


def _drain(stream: IO[str]) -> None:
    for _ in stream:
        pass


def track(port: int, frames: int, timeout_s: float = 60.0) -> list[float]:
    """Connect, start tracking, and return the capture→receipt latency of ``frames`` eye_data
    messages (the ``websockets`` library's client, in this process)."""
    from websockets.sync.client import connect

    latencies: list[float] = []
    with connect(f"ws://127.0.0.1:{port}/", open_timeout=timeout_s) as ws:
        ws.recv(timeout=timeout_s)
        ws.send('{"type": "start_tracking"}')
        while len(latencies) < frames:
            message = json.loads(ws.recv(timeout=timeout_s))
            if message["type"] == "eye_data":
                latencies.append(time.time() - message["captured_at"])
    return latencies
