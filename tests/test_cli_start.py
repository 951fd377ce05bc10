"""What ``trackerd`` says when it cannot start, and only then: a port it cannot listen on."""

from __future__ import annotations

import errno
import functools
import logging
import socket
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import trio

from tests.serverkit import LOCAL, Synthetic
from trackerd import app, cli
from trackerd.app import ListenError


async def test_a_taken_port_is_a_listen_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenError, match=f"cannot listen on 127.0.0.1:{port}"):
            await app.run(replace(LOCAL, port=port), make_tracker=Synthetic)


@pytest.fixture
def root_logging() -> Iterator[None]:
    """``cli.main`` routes the root logger to stderr; give pytest its handlers back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


def test_an_oserror_after_start_up_is_not_reported_as_listening(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], root_logging: None
) -> None:
    real_run = app.run

    async def listens_then_fails(settings: Any, **kwargs: Any) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(real_run, settings, **kwargs))
            # Up and listening; now a fault that has nothing to do with listening.
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(app, "run", listens_then_fails)
    with pytest.raises(ExceptionGroup) as info:
        cli.main(["--host", "127.0.0.1", "--port", "0", "--source", "demo"])
    assert info.group_contains(OSError, match="No space left", depth=None)
    assert not info.group_contains(ListenError, depth=None)
    err = capsys.readouterr().err
    assert "listening on ws://127.0.0.1:" in err
    assert "cannot listen" not in err
