"""Real nginx, with ``deploy/nginx/trackerd.conf``, in front of two real ``trackerd`` processes.

Candidates push real JPEG frames through nginx (one frame in flight, 10 a second), from
127.0.0.2 so that the forwarded address is told apart from nginx's own. The test checks that:
- least_conn spreads the sessions over both replicas (each one's ``/metrics``);
- the replica's log names the candidate's address from X-Forwarded-For, not nginx's;
- SIGTERM to one replica gives each of its candidates a 1001 within 2 s;
- each of them reconnects through nginx, lands on the other replica and gets eye_data again;
- the candidates on the other replica notice nothing: no gap over 1 s between two eye_data.
It prints the figures (run with ``-s``). nginx is Debian's package; ``.ci/run`` installs it, and
under CI a missing nginx fails this test rather than skipping it.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import cv2
import pytest
import trio
from trio_websocket import CloseReason, ConnectionClosed, WebSocketConnection, wrap_client_stream

from tests.children import Children, Process, children
from tests.media import DATA, frames
from tests.serverkit import EXIT_CAP_S, metric_samples

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "deploy" / "nginx" / "trackerd.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
CANDIDATES = 6
FPS = 10.0
STAY_ANSWERS = int(FPS)
"""eye_data each candidate that stayed must receive after the move: a second's worth."""
CLIENT_ADDRESS = "127.0.0.2"
"""Loopback too, but not nginx's 127.0.0.1: the replica's log shows which one it believed."""

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="127.0.0.2 is Linux's loopback")


@pytest.fixture
def nginx() -> str:
    if not os.access(NGINX, os.X_OK):
        message = "nginx is not installed (apt-get install nginx; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return NGINX


async def replica(started: Children, data_dir: Path) -> tuple[Process, int]:
    """A replica, with a database of its own in ``data_dir`` (as each pod has)."""
    child = await started.spawn(
        sys.executable, "-m", "trackerd", "--host", "127.0.0.1", "--port", "0",
        "--source", "demo", "--trusted-proxies", "127.0.0.1", "--max-fps", "1000",
        # Every candidate is CLIENT_ADDRESS, and a drain moves them all onto one replica.
        "--max-sessions-per-ip", str(CANDIDATES), "--data-dir", str(data_dir),
    )  # fmt: skip
    found = await child.wait_for(rb"listening on ws://[^:]+:(\d+)")
    return child, int(found[0].group(1))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def nginx_config(folder: Path, listen: int, replicas: list[int]) -> Path:
    """deploy/nginx/trackerd.conf with the test's ports, inside a main file of the test's own
    (its pid, logs and temporary files in ``folder``)."""
    site = SITE.read_text()
    for example, port in zip(("127.0.0.1:5001", "127.0.0.1:5002"), replicas, strict=True):
        assert site.count(f"server {example} ") == 1, "the example upstreams have moved"
        site = site.replace(f"server {example} ", f"server 127.0.0.1:{port} ")
    assert site.count("listen 80;") == 1
    site = site.replace("listen 80;", f"listen 127.0.0.1:{listen};")
    (folder / "trackerd.conf").write_text(site)
    temp = "\n".join(
        f"  {kind}_temp_path {folder / kind};" for kind in ("client_body", "proxy", "fastcgi")
    )
    main = folder / "nginx.conf"
    main.write_text(
        f"""daemon off;
{"user root;" if os.geteuid() == 0 else ""}
worker_processes 1;
pid {folder / "nginx.pid"};
error_log stderr notice;
events {{ worker_connections 256; }}
http {{
  access_log {folder / "access.log"};
{temp}
  uwsgi_temp_path {folder / "uwsgi"};
  scgi_temp_path {folder / "scgi"};
  include {folder / "trackerd.conf"};
}}
"""
    )
    return main


@dataclass
class Candidate:
    """One browser pushing its camera: eye_data arrival times, and its 1001 if it got one."""

    answers: list[float] = field(default_factory=list)
    closed_at: float | None = None
    back_at: float | None = None
    """When the first eye_data arrived after reconnecting."""
    connected: trio.Event = field(default_factory=trio.Event)
    back: trio.Event = field(default_factory=trio.Event)
    _answered: trio.Event = field(default_factory=trio.Event)

    async def answers_after(self, t: float, n: int) -> None:
        """Wait until ``n`` eye_data have arrived after ``t``."""
        while sum(at > t for at in self.answers) < n:
            await self._answered.wait()

    async def run(
        self, port: int, jpegs: list[bytes], closes: trio.MemorySendChannel[Candidate]
    ) -> None:
        """Push until cancelled; on a 1001, say so on ``closes``, reconnect (once), push on."""
        while True:
            reason = await self._session(port, jpegs)
            assert reason.code == 1001 and self.closed_at is None, reason
            self.closed_at = trio.current_time()
            closes.send_nowait(self)

    async def _session(self, port: int, jpegs: list[bytes]) -> CloseReason:
        """One connection through nginx, pushing until the server closes it: how it did."""
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        await sock.bind((CLIENT_ADDRESS, 0))
        await sock.connect(("127.0.0.1", port))
        async with trio.open_nursery() as nursery:
            ws = await wrap_client_stream(nursery, trio.SocketStream(sock), "127.0.0.1", "/")
            try:
                await self._push(ws, jpegs)
            except ConnectionClosed as exc:
                return exc.reason
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await ws.aclose()

    async def _push(self, ws: WebSocketConnection, jpegs: list[bytes]) -> NoReturn:
        assert json.loads(await ws.get_message())["type"] == "connection"
        await ws.send_message(json.dumps({"type": "start_tracking", "source": "client"}))
        while json.loads(await ws.get_message())["type"] != "tracking_started":
            pass
        n = 0
        while True:
            due = trio.current_time() + 1 / FPS
            await ws.send_message(jpegs[n % len(jpegs)])
            n += 1
            message = json.loads(await ws.get_message())
            assert message["type"] == "eye_data", message
            now = trio.current_time()
            self.answers.append(now)
            self._answered.set()
            self._answered = trio.Event()
            self.connected.set()
            if self.closed_at is not None and self.back_at is None:
                self.back_at = now
                self.back.set()
            await trio.sleep_until(due)


async def sessions(port: int) -> int:
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    return int(metric_samples(data.partition(b"\r\n\r\n")[2].decode())["trackerd_sessions"])


def largest_gap(times: list[float]) -> float:
    return max(b - a for a, b in itertools.pairwise(times))


async def test_replicas_behind_nginx_share_sessions_and_drain_onto_each_other(
    nginx: str, tmp_path: Path
) -> None:
    jpegs = [
        cv2.imencode(".jpg", f.image, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()
        for f in frames(DATA / "single_face.mp4")
    ]
    with trio.fail_after(60):
        async with children() as started:
            (a, port_a), (b, port_b) = [
                await replica(started, tmp_path / f"data-{i}") for i in (0, 1)
            ]
            listen = free_port()
            config = nginx_config(tmp_path, listen, [port_a, port_b])
            check = await trio.run_process([nginx, "-t", "-c", str(config), "-e", "stderr"])
            assert check.returncode == 0, "nginx -t refused the configuration"
            proxy = await started.spawn(nginx, "-c", str(config), "-e", "stderr")
            await proxy.wait_for(rb"start worker process")

            candidates = [Candidate() for _ in range(CANDIDATES)]
            closes, closed = trio.open_memory_channel[Candidate](CANDIDATES)
            async with trio.open_nursery() as pushing:
                for candidate in candidates:  # one by one, so least_conn sees each arrive
                    pushing.start_soon(candidate.run, listen, jpegs, closes)
                    await candidate.connected.wait()
                spread = [await sessions(port_a), await sessions(port_b)]
                assert sum(spread) == CANDIDATES and min(spread) >= 2, spread
                # trackerd logged the candidate's address, which only X-Forwarded-For carries.
                await a.wait_for(rb"127\.0\.0\.2 \(via 127\.0\.0\.1:\d+\) connected")

                a.process.send_signal(signal.SIGTERM)
                signalled = trio.current_time()
                with trio.fail_after(EXIT_CAP_S):  # every candidate on a has its 1001
                    moved = [await closed.receive() for _ in range(spread[0])]
                with trio.fail_after(5.0):
                    for candidate in moved:
                        await candidate.back.wait()
                    assert await a.process.wait() == 0
                on_b = await sessions(port_b)
                # The candidates that stayed push on for a second more after the move.
                moved_at = trio.current_time()
                stayed = [c for c in candidates if c not in moved]
                with trio.move_on_after(2.0 * STAY_ANSWERS / FPS):  # twice their pace
                    for candidate in stayed:
                        await candidate.answers_after(moved_at, STAY_ANSWERS)
                pushing.cancel_scope.cancel()

            proxy.process.send_signal(signal.SIGQUIT)
            b.process.send_signal(signal.SIGTERM)
            assert await b.process.wait() == 0
            await proxy.process.wait()

    after_move = [sum(t > moved_at for t in c.answers) for c in stayed]
    assert all(c.closed_at is None for c in stayed)
    assert min(after_move) >= STAY_ANSWERS, after_move
    assert on_b == CANDIDATES
    last_1001 = max(c.closed_at - signalled for c in moved if c.closed_at is not None)
    reconnect = [c.back_at - c.closed_at for c in moved if c.back_at and c.closed_at]
    gap = max(largest_gap(c.answers) for c in stayed)
    print(
        f"\nnginx figures: sessions per replica {spread}; SIGTERM to the last 1001 "
        f"{last_1001 * 1000:.0f} ms; 1001 to eye_data again {min(reconnect) * 1000:.0f}-"
        f"{max(reconnect) * 1000:.0f} ms; all {CANDIDATES} on the other replica after; "
        f"largest gap of a candidate that stayed {gap * 1000:.0f} ms"
    )
    assert last_1001 < 2.0
    assert gap < 1.0
