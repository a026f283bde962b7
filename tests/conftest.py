"""Shared test fixtures. Keep this generic; feature-specific fixtures belong in their own test files."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from http_support import AuthorizationServer
from pg_server import PostgresServer, postgres_for_tests

from sms_mcp.emulator.core import EmulatorCore
from sms_mcp.emulator.http import EmulatorServer

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


PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests talk to 127.0.0.1 only: no proxy may stand in between."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def emulator_server() -> Iterator[EmulatorServer]:
    """The HTTP emulator on a free loopback port, one per test module (demo AccessKey, instant receipts)."""
    with EmulatorServer(receipt_delay=0.0) as server:
        yield server


@pytest.fixture
def emu(emulator_server: EmulatorServer) -> Iterator[EmulatorServer]:
    """The module's emulator with no fault left over from another test."""
    emulator_server.faults.clear()
    yield emulator_server
    emulator_server.faults.clear()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server of the tests' own (tests/pg_server.py), one per session. Skipped where the machine
    has no PostgreSQL binaries, except under CI, where that is a failure (.ci/run installs them)."""
    with postgres_for_tests() as server:
        yield server


@pytest.fixture(scope="module")
def idp() -> Iterator[AuthorizationServer]:
    """An OAuth authorization server on loopback (a JWKS whose keys the tests own; they mint the tokens)."""
    with AuthorizationServer() as server:
        yield server
