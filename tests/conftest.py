"""Shared fixtures. ``no_unexpected_errors``: a server test fails if trackerd logged an ERROR (an
exception the server caught at a boundary, such as a client's handling going wrong), even when
every client saw what it expected. Server test modules use it through ``pytestmark``."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


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
