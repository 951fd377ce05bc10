"""A webhook receiver that verifies with the ``standardwebhooks`` package (not trackerd's code),
run as its own process, with a scripted outage::

    python -m tests.receiver --secret whsec_... [--plan PLAN] [--port 0]

It prints ``listening on PORT`` to stdout, then one JSON line per delivery it accepted (a
verified request answered 200): ``{"id": webhook-id, "body": the parsed body, "attempt_at":
webhook-timestamp, "received_at": its own clock, "path": the request's path}``. A bad signature
is answered 400 and takes no step of the plan. Everything else it does goes to stderr, a line
each: ``answered 500 to msg_…``, ``hung on msg_…``, ``bad signature from msg_…: why``,
``refusing connections for 2 s``, ``listening again on PORT``.

PLAN, comma-separated steps taken in order by the verified requests; once it is used up, every
request is answered 200:

- ``500``, ``500x2``: answer that status to the next request, or the next 2 (``ok`` is 200);
- ``hang``, ``hang:3``: never answer the next request (or 3): the sender times out. The
  connection is held until the sender closes it;
- ``refuse:60s``: once the step before is done (a hung request included), close the listening
  socket and every open connection, refuse connections for 60 s, then listen again on the SAME
  port.

Example: ``500x2,hang:3,refuse:60s,ok``. :func:`receiver` runs one from a test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import subprocess
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Final

import h11
import trio
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

MAX_BODY_BYTES: Final = 1 << 20
HANG_MAX_S: Final = 600.0
"""A hung request is dropped after this long at the latest, should its sender never give up."""


@dataclass(frozen=True)
class Step:
    action: str
    """``answer``, ``hang`` or ``refuse``."""
    status: int = 200
    count: int = 1
    seconds: float = 0.0


def parse_plan(text: str) -> list[Step]:
    steps = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        if m := re.fullmatch(r"(ok|[1-5]\d\d)(?:x(\d+))?", item):
            status = 200 if m[1] == "ok" else int(m[1])
            steps.append(Step("answer", status, int(m[2] or 1)))
        elif m := re.fullmatch(r"hang(?::(\d+))?", item):
            steps.append(Step("hang", count=int(m[1] or 1)))
        elif m := re.fullmatch(r"refuse:(\d+(?:\.\d+)?)s", item):
            steps.append(Step("refuse", seconds=float(m[1])))
        else:
            raise ValueError(f"bad plan step {item!r}: 500x2, ok, hang:3 or refuse:60s")
    return steps


class Plan:
    def __init__(self, steps: list[Step]) -> None:
        self._steps = deque(steps)
        self._used = 0

    def refusing(self) -> bool:
        return bool(self._steps) and self._steps[0].action == "refuse"

    def take(self) -> Step:
        """The step for the next request (not a refusal: see :meth:`refusing`)."""
        if not self._steps:
            return Step("answer")
        step = self._steps[0]
        self._used += 1
        if self._used >= step.count:
            self._steps.popleft()
            self._used = 0
        return step

    def pop_refusal(self) -> Step:
        return self._steps.popleft()


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Receiver:
    def __init__(self, webhook: Webhook, plan: Plan) -> None:
        self._webhook = webhook
        self._plan = plan
        self._serving = trio.CancelScope()

    async def run(self, port: int) -> None:
        first = True
        while True:
            (listener,) = await trio.open_tcp_listeners(port, host="127.0.0.1")
            port = listener.socket.getsockname()[1]
            if first:
                print(f"listening on {port}", flush=True)
                first = False
            else:
                say(f"listening again on {port}")
            with trio.CancelScope() as self._serving:
                if self._plan.refusing():
                    self._serving.cancel()
                # Cancelling this scope closes the listener and every connection.
                await trio.serve_listeners(self._handle, [listener])
            await listener.aclose()
            refusal = self._plan.pop_refusal()
            say(f"refusing connections for {refusal.seconds:g} s")
            await trio.sleep(refusal.seconds)

    def _done(self) -> None:
        """A request is finished: a refusal that follows starts now."""
        if self._plan.refusing():
            self._serving.cancel()

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            conn = h11.Connection(h11.SERVER)
            try:
                while await self._serve_one(conn, stream):
                    conn.start_next_cycle()
            except (h11.ProtocolError, trio.BrokenResourceError) as e:
                say(f"connection dropped: {type(e).__name__}: {e}")

    async def _serve_one(self, conn: h11.Connection, stream: trio.SocketStream) -> bool:
        """One request; whether the connection goes on."""
        request = await _next(conn, stream)
        if request is None:
            return False
        assert isinstance(request, h11.Request)
        body = b""
        while not isinstance(event := await _next(conn, stream), h11.EndOfMessage):
            if not isinstance(event, h11.Data):
                return False
            body += event.data
            if len(body) > MAX_BODY_BYTES:
                await _answer(conn, stream, 413, "too large")
                return False
        headers = {name.decode().lower(): value.decode() for name, value in request.headers}
        msg_id = headers.get("webhook-id", "?")
        try:
            parsed = self._webhook.verify(body, headers)
        except WebhookVerificationError as e:
            say(f"bad signature from {msg_id}: {e}")
            await _answer(conn, stream, 400, f"bad signature: {e}")
            return conn.our_state is h11.DONE
        if self._plan.refusing():  # a request that came in just as a refusal was due
            self._serving.cancel()
            return False
        step = self._plan.take()
        if step.action == "hang":
            say(f"hung on {msg_id}")
            await _until_closed(stream)
            self._done()
            return False
        if 200 <= step.status < 300:
            line = {
                "id": msg_id,
                "body": parsed,
                "attempt_at": int(headers["webhook-timestamp"]),
                "received_at": time.time(),
                "path": request.target.decode(),
            }
            print(json.dumps(line), flush=True)
        else:
            say(f"answered {step.status} to {msg_id}")
        await _answer(conn, stream, step.status, "ok" if step.status < 300 else "planned")
        self._done()
        return conn.our_state is h11.DONE


async def _next(conn: h11.Connection, stream: trio.SocketStream) -> Any:
    """The next h11 event; ``None`` once the peer has closed."""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.ConnectionClosed):
            return None
        else:
            return event


async def _answer(conn: h11.Connection, stream: trio.SocketStream, status: int, text: str) -> None:
    data = text.encode()
    headers = [("content-type", "text/plain"), ("content-length", str(len(data)))]
    await stream.send_all(
        conn.send(h11.Response(status_code=status, headers=headers))
        + conn.send(h11.Data(data=data))
        + conn.send(h11.EndOfMessage())
    )


async def _until_closed(stream: trio.SocketStream) -> None:
    with trio.move_on_after(HANG_MAX_S):
        with contextlib.suppress(trio.BrokenResourceError):  # a reset is a close too
            while await stream.receive_some(65536):
                pass


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.receiver", description=__doc__)
    parser.add_argument("--secret", required=True, help="whsec_ then base64")
    parser.add_argument("--plan", default="", help="e.g. 500x2,hang:3,refuse:60s,ok")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        receiver = Receiver(Webhook(args.secret), Plan(parse_plan(args.plan)))
    except ValueError as e:  # binascii.Error for the secret is one too
        parser.error(str(e))
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(receiver.run, args.port)


# The test side: a receiver process, what it printed, and waits on it.


class ReceiverProcess:
    """A running receiver: its URL, the deliveries it printed and its stderr lines, growing."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.port = 0
        self.deliveries: list[dict[str, Any]] = []
        self.log: list[str] = []
        self._changed = trio.Event()

    def url(self, path: str = "/hooks") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def ids(self) -> list[str]:
        """The ids delivered, in the order they arrived, duplicates included."""
        return [d["id"] for d in self.deliveries]

    def logged(self, pattern: str) -> list[re.Match[str]]:
        return [m for line in self.log if (m := re.fullmatch(pattern, line))]

    async def wait(self, condition: Callable[[], bool]) -> None:
        """Until ``condition()`` holds, looked at each time the receiver prints a line."""
        while not condition():
            assert self.process.returncode is None, f"the receiver exited: {self.log}"
            await self._changed.wait()

    async def _read(self, stream: trio.abc.ReceiveStream, on_line: Callable[[str], None]) -> None:
        pending = b""
        while chunk := await stream.receive_some(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                on_line(line.decode())
            self._changed.set()
            self._changed = trio.Event()
        await self.process.wait()
        self._changed.set()

    def _stdout(self, line: str) -> None:
        if m := re.fullmatch(r"listening on (\d+)", line):
            self.port = int(m[1])
        else:
            self.deliveries.append(json.loads(line))


@contextlib.asynccontextmanager
async def receiver(secret: str, plan: str = "", port: int = 0) -> AsyncIterator[ReceiverProcess]:
    """A receiver process, listening by the time this yields; killed on the way out."""
    command = [sys.executable, "-m", "tests.receiver", "--secret", secret, "--plan", plan]
    process = await trio.lowlevel.open_process(
        [*command, "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        async with trio.open_nursery() as nursery:
            started = ReceiverProcess(process)
            assert process.stdout is not None and process.stderr is not None
            nursery.start_soon(started._read, process.stdout, started._stdout)
            nursery.start_soon(started._read, process.stderr, started.log.append)
            await started.wait(lambda: started.port != 0)
            yield started
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


if __name__ == "__main__":
    main()
