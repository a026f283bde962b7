"""The ledger contract (tests/ledger_contract.py) run against the PostgreSQL adapter, on a real PostgreSQL server
(tests/pg_server.py): every test gets a new empty database, and each ``make_ledger()`` is a separate adapter
instance with its own connection pool, as separate replicas would have."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from ledger_contract import *  # noqa: F403
from pg_server import PostgresServer

from sms_mcp.ledger.postgres import PostgresLedger


@pytest.fixture
async def make_ledger(pg_server: PostgresServer) -> AsyncIterator[Callable[[], Awaitable[PostgresLedger]]]:
    url = pg_server.create_database()
    opened: list[PostgresLedger] = []

    async def factory() -> PostgresLedger:
        ledger = await PostgresLedger.open(url)
        opened.append(ledger)
        return ledger

    yield factory
    for ledger in opened:
        await ledger.aclose()
