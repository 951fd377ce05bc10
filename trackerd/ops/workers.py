"""``--workers N``: N server processes on one port, so that push sessions use every core.

One process's analysis threads share its GIL, and the measured scaling of one process from
one core to two is well under 2x (docs/operations.md, "Every core of one machine"). So
``trackerd --workers N`` runs as a small supervisor that starts N ordinary server processes
(``python -m trackerd`` with the same arguments) which each listen on the same port with
``SO_REUSEPORT``: the kernel spreads new connections over them. Each has its own sessions,
limits and ``/metrics``; ``max_sessions`` and ``max_connections`` are per worker, and so are
the per-address limits. A worker learns its index and the port from its environment
(:data:`WORKER_ENV`), so that its command line is the supervisor's; each of its log records
and its ``/healthz`` carry ``worker``, its index.

The server's own camera can be opened by one process only, so only worker 0 watches it: on the
others, ``start_tracking`` without ``"source": "client"`` is answered with an ``error`` that says
so (code ``camera_elsewhere``), and since the kernel picks the worker, a client watching the
server's camera reaches it on about one connection in N. ``--workers`` is for push sessions;
serve a camera with one worker. (With ``--source none`` every worker answers ``push_only``.)

The supervisor forwards SIGTERM and SIGINT to every worker (they drain and close their clients
with 1001 as one process would) and exits 0 once all have. A worker that exits on its own is a
failure: the supervisor stops the others and exits with that worker's status, so that the
platform (systemd, Kubernetes) restarts the whole, rather than running on with fewer workers.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType

import trio

from trackerd.hub import Closed, Hub
from trackerd.net import protocol, web
from trackerd.ops import logs
from trackerd.settings import Settings

log = logging.getLogger("trackerd")

WORKER_ENV = "TRACKERD_WORKER"
"""Set by the supervisor in each worker's environment: ``INDEX,SUPERVISOR_PID,PORT``."""
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class Worker:
    index: int
    port: int
    """The port every worker listens on, the supervisor's (the one it reserved for port 0)."""


def this_worker() -> Worker | None:
    """This process's place when the supervisor started it, else None. A worker also asks
    Linux for a SIGTERM when its supervisor dies, however it dies (OOM-killed, SIGKILL), so
    that it drains and exits instead of holding the port as an orphan."""
    raw = os.environ.get(WORKER_ENV)
    if raw is None:
        return None
    index, supervisor, port = (int(part) for part in raw.split(","))
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != supervisor:  # it died before the line above
            raise SystemExit(f"trackerd: worker {index}: the supervisor has exited")
    return Worker(index, port)


def naming(route: web.Route, index: int) -> web.Route:
    """``route`` (``/healthz``) with ``"worker": index`` added to its JSON object: behind one
    port, a probe's answer says which process gave it."""

    async def named(head: web.Head) -> web.Response:
        response = await route(head)
        body = {**json.loads(response.body), "worker": index}
        return web.Response(
            response.status, response.content_type, (json.dumps(body) + "\n").encode()
        )

    return named


async def listen_shared(host: str, port: int) -> list[trio.SocketListener]:
    """Like :func:`trio.open_tcp_listeners`, with ``SO_REUSEPORT`` set before binding, so that
    every worker binds the same port and the kernel balances connections between them."""
    addresses = await trio.socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    listeners: list[trio.SocketListener] = []
    try:
        for family, kind, proto, _, address in addresses:
            sock = trio.socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                await sock.bind(address)
                sock.listen(socket.SOMAXCONN)
            except BaseException:
                sock.close()
                raise
            listeners.append(trio.SocketListener(sock))
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    return listeners


CAMERA_ELSEWHERE = "camera_elsewhere"
"""The ``code`` of the error a worker other than the first answers ``start_tracking`` with."""


class CameraElsewhere(Hub):
    """The hub of a worker other than the first: closed (:meth:`Hub.close`), so nobody
    subscribes to the server's camera here, its capture never opens the source, and each
    ``start_tracking`` is told why."""

    def __init__(self, index: int, workers: int) -> None:
        super().__init__(protocol.eye_data)  # never used: nothing is published here
        message = (
            f"the server's camera is watched by worker 0 only (trackerd --workers {workers}), and "
            f"this connection reached worker {index}: push your own frames "
            '({"type": "start_tracking", "source": "client"}), or reconnect'
        )
        self.close(Closed(message, CAMERA_ELSEWHERE))


def supervise(settings: Settings, argv: Sequence[str]) -> int:
    """Run ``settings.workers`` workers with ``argv`` until a signal, or until one fails."""
    # Port 0 means one free port for all: take it here, and keep the socket bound (never
    # listening, so it gets no connections) so that nothing else takes it meanwhile.
    reserved = _reserve(settings.host, settings.port)
    port = reserved.getsockname()[1]
    workers = _Workers()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, workers.forward)
    command = [sys.executable, "-m", "trackerd", *argv]  # the port goes in the environment
    workers.start(command, settings.workers, port)
    with reserved:
        return workers.wait()


class _Workers:
    """The worker processes, and whether a signal has asked them to stop."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []
        self.stopping = False

    def forward(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        for worker in self.processes:
            if worker.returncode is None:
                worker.send_signal(signum)

    def start(self, command: list[str], count: int, port: int) -> None:
        for index in range(count):
            if self.stopping:  # a signal before every worker started
                return
            # A process group of its own: a terminal's Ctrl-C reaches it once, through
            # forward(). The real stderr, not this process's captured fd 2: a worker captures
            # its own.
            env = {**os.environ, WORKER_ENV: f"{index},{os.getpid()},{port}"}
            stderr = logs.child_stderr()
            self.processes.append(
                subprocess.Popen(command, env=env, process_group=0, stderr=stderr)
            )

    def wait(self) -> int:
        """Reap every worker; the first unasked exit stops the others. The exit code: 0, the
        first failure's, or 1 for one killed by a signal."""
        indices = {w.pid: i for i, w in enumerate(self.processes)}
        failed = 0
        while any(w.returncode is None for w in self.processes):
            pid, status = os.wait()
            worker = next((w for w in self.processes if w.pid == pid), None)
            if worker is None:
                continue
            worker.returncode = os.waitstatus_to_exitcode(status)
            if not self.stopping:
                log.error(
                    "worker %d (pid %d) exited (%d): stopping the others",
                    *(indices[pid], pid, worker.returncode),
                )
                failed = worker.returncode or 1
                self.forward(signal.SIGTERM, None)
            elif worker.returncode != 0 and not failed:
                failed = worker.returncode
        return 0 if not failed else failed if failed > 0 else 1


def _reserve(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    return sock
