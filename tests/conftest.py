"""Shared fixtures. ``no_unexpected_errors``: a server test fails if trackerd logged an ERROR (an
exception the server caught at a boundary, such as a client's handling going wrong), even when
every client saw what it expected. Server test modules use it through ``pytestmark``.

Every test gets a ``--data-dir`` of its own (``TRACKERD_DATA_DIR``, which the servers it starts,
in this process or as child processes, inherit): a server's database is never another test's,
and nothing is written into the checkout.

``clock``: a test that asks for it runs on ``trio.testing.MockClock`` (pytest-trio passes any
Clock fixture to ``trio.run``), so its timeouts and pacing take no real time and its timings
are exact.

Hypothesis runs derandomized (the same examples on every run, every machine) with no deadline
(speed is measured in benchmarks/, not asserted here), and prints the blob that reproduces a
failure. Set ``HYPOTHESIS_PROFILE=explore`` to search with fresh random examples instead."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from hypothesis import settings
from trio.testing import MockClock

settings.register_profile("fixed", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fixed"))


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "trackerd-data"
    monkeypatch.setenv("TRACKERD_DATA_DIR", str(folder))
    return folder


@pytest.fixture
def no_unexpected_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.INFO, logger="trackerd")
    yield
    errors = [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.get_records("call")
        if r.levelno >= logging.ERROR and r.name.startswith("trackerd")
    ]
    assert not errors, f"trackerd logged errors: {errors}"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A throwaway certificate authority for the TLS tests."""
    return trustme.CA()


@pytest.fixture
def tls_files(ca: trustme.CA, tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key, as PEM files."""
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    for blob in cert.cert_chain_pems:
        with certfile.open("ab") as f:
            f.write(blob.bytes())
    cert.private_key_pem.write_to_path(str(keyfile))
    return certfile, keyfile


@pytest.fixture
def clock() -> MockClock:
    """Virtual time that jumps to the next deadline once every task has been blocked for 10 ms
    of real time. Not 0: data written to a loopback socket is normally readable before the
    write returns, but a loaded machine may defer it by a moment, and a jump then would skip
    straight to the test's cap. Real sockets work as usual; worker threads (the capture) run
    on real time, so tests on this clock leave the capture idle."""
    return MockClock(autojump_threshold=0.01)
