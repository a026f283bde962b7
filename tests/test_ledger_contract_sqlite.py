"""The ledger contract (tests/ledger_contract.py) run against the SQLite adapter, plus SQLite-only behaviour."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from ledger_contract import *  # noqa: F403

from sms_mcp.ledger.sqlite import SqliteLedger


@pytest.fixture
async def make_ledger(tmp_path: Path) -> AsyncIterator[Callable[[], Awaitable[SqliteLedger]]]:
    opened: list[SqliteLedger] = []

    async def factory() -> SqliteLedger:
        ledger = await SqliteLedger.open(tmp_path / "ledger.sqlite3")
        opened.append(ledger)
        return ledger

    yield factory
    for ledger in opened:
        await ledger.aclose()
