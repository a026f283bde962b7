"""The lifecycle state machine of tests/test_lifecycle_stateful.py, run on the PostgreSQL ledger: two server
instances, each with its own adapter (its own connection pool) on one database, as two replicas would be; the
same rules (prepare, confirm/replay, decline, dismiss, an owner dying between any two transitions, time,
restart, reconcile) and the same invariants against the messages the emulator recorded."""

from __future__ import annotations

from typing import Any

import psycopg
import test_lifecycle_stateful as stateful
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test
from pg_server import PostgresServer

from sms_mcp.core.service import SmsService
from sms_mcp.ledger.postgres import PostgresLedger
from sms_mcp.wire.sandbox import SandboxTransport


def test_lifecycle_invariants_hold_on_postgres(pg_server: PostgresServer) -> None:
    url = pg_server.create_database()

    class OnPostgres(stateful.Lifecycle):
        def __init__(self) -> None:
            with psycopg.connect(url, autocommit=True) as conn:  # every example starts from an empty ledger
                conn.execute("DROP TABLE IF EXISTS sends, chunks, plans, schema_version CASCADE")
            super().__init__()

        def _service(self) -> SmsService:
            ledger: Any = self.loop.run_until_complete(PostgresLedger.open(url))
            ledger.close = lambda: self.loop.run_until_complete(ledger.aclose())  # the machine closes synchronously
            return SmsService(self.settings, SandboxTransport(self.core), ledger, clock=self.clock,
                              lease_seconds=stateful.LEASE, max_wait=0.05)

    run_state_machine_as_test(OnPostgres, settings=settings(
        max_examples=25, stateful_step_count=30, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
