"""Child processes for tests that run real servers (trackerd, nginx) as an operator would: their
logs read all along, a wait for a line to appear in them, and none left running by a failure."""

from __future__ import annotations

import contextlib
import re
import subprocess
from collections.abc import AsyncIterator

import trio


class Process:
    """A child whose stderr is read all along (a full pipe would block it), with a wait for a
    line to appear in it."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.log = b""
        self.ended = False
        self._grew = trio.Event()

    async def read(self) -> None:
        assert self.process.stderr is not None
        while chunk := await self.process.stderr.receive_some(65536):
            self.log += chunk
            self._grew.set()
            self._grew = trio.Event()
        self.ended = True
        self._grew.set()

    async def wait_closed(self) -> None:
        """Until the log ends: every process holding it (this one, and any child it passed
        its stderr to) has exited."""
        while not self.ended:
            await self._grew.wait()

    async def wait_for(self, pattern: bytes, count: int = 1) -> list[re.Match[bytes]]:
        """The first ``count`` matches of ``pattern`` in the log, once there are that many."""
        while len(found := list(re.finditer(pattern, self.log))) < count:
            assert not self.ended, self.log.decode(errors="replace")
            await self._grew.wait()
        return found[:count]


class Children:
    """Starts processes and reads their logs; see :func:`children`."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self.processes: list[trio.Process] = []

    async def spawn(self, *command: str) -> Process:
        process = await trio.lowlevel.open_process(list(command), stderr=subprocess.PIPE)
        self.processes.append(process)
        child = Process(process)
        self._nursery.start_soon(child.read)
        return child


@contextlib.asynccontextmanager
async def children() -> AsyncIterator[Children]:
    """Processes that are killed on the way out if the test left any running (a failure)."""
    async with trio.open_nursery() as nursery:
        started = Children(nursery)
        try:
            yield started
        finally:
            for process in started.processes:
                if process.returncode is None:
                    process.kill()
