"""Adapters of the ledger port (:class:`sms_mcp.core.ports.LedgerPort`): SQLite, the embedded default, and
PostgreSQL (``SMS_MCP_LEDGER_URL``), shared by the replicas of a team gateway."""

from __future__ import annotations

from sms_mcp.config import Settings
from sms_mcp.core.ports import LedgerPort

LEDGER_FILE = "ledger.sqlite3"


async def open_ledger(settings: Settings) -> LedgerPort:
    """The configured ledger, opened (created or migrated); raises LedgerUnavailable with one clear line."""
    if settings.ledger_url:
        from sms_mcp.ledger.postgres import PostgresLedger

        return await PostgresLedger.open(settings.ledger_url)
    from sms_mcp.ledger.sqlite import SqliteLedger

    return await SqliteLedger.open(settings.data_dir / LEDGER_FILE)
