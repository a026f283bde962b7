"""Shared test fixtures. Keep this generic; feature-specific fixtures belong in their own test files."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from sms_mcp.emulator.core import EmulatorCore

#: 2025-09-01 10:00:30 in UTC+8: half-way through a minute, so "the next minute" is an explicit step.
START = datetime(2025, 9, 1, 10, 0, 30, tzinfo=timezone(timedelta(hours=8))).timestamp()


class FakeClock:
    """A clock tests move by hand: ``clock()`` returns the current time, ``advance(seconds)`` moves it."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def emulator(clock: FakeClock) -> Iterator[EmulatorCore]:
    """An in-memory emulator with the demo account, a 3 s receipt delay and the fake clock."""
    core = EmulatorCore(None, receipt_delay=3.0, clock=clock)
    yield core
    core.close()
