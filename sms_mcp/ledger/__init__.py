"""Adapters of the ledger port (:class:`sms_mcp.core.ports.LedgerPort`): SQLite, the embedded default."""
