"""The test kit's own promises, where a broken one would make other tests flake.

``capped`` on a MockClock: CI once failed test_limits at start-up because getaddrinfo's thread
took over 10 ms of real time, the mock clock jumped to the next deadline, and that deadline was
the cap. The cap there is real time now."""

from __future__ import annotations

import time

import pytest
import trio
from trio.testing import MockClock

from tests.serverkit import CAP_S, capped, real_time_cap


@capped
async def test_a_slow_thread_on_the_mock_clock_is_not_a_hang(clock: MockClock) -> None:
    """All tasks wait on a thread for 50 ms of real time: the clock may jump, the cap may not."""
    await trio.to_thread.run_sync(time.sleep, 0.05)
    assert trio.current_time() < CAP_S  # no deadline but the cap's could have moved it


async def test_the_real_time_cap_still_stops_a_hang(clock: MockClock) -> None:
    """The watchdog cancels a test that never ends, after real seconds, not virtual ones."""
    started = time.monotonic()
    with real_time_cap(0.2) as scope:
        await trio.sleep_forever()
    assert scope.cancelled_caught
    assert time.monotonic() - started == pytest.approx(0.2, abs=2.0)
