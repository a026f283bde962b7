"""Adapters of the ledger port (:class:`sms_mcp.core.ports.LedgerPort`): SQLite, the embedded default."""

from __future__ import annotations

from sms_mcp.config import Settings
from sms_mcp.core.ports import LedgerPort

LEDGER_FILE = "ledger.sqlite3"


async def open_ledger(settings: Settings) -> LedgerPort:
    """The configured ledger, opened (created or migrated); raises LedgerUnavailable with one clear line."""
    from sms_mcp.ledger.sqlite import SqliteLedger

    return await SqliteLedger.open(settings.data_dir / LEDGER_FILE)
