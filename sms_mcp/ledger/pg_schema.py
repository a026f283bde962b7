"""The PostgreSQL ledger's schema, versioned, and the migration that brings a database up to it on start.

Every replica runs :func:`migrate` when it starts. The migrations run in one transaction under a
transaction-scoped advisory lock, so when several replicas start at once exactly one applies each step and the
others wait, then see the new version and do nothing. PostgreSQL's DDL is transactional: a migration that fails
half-way leaves the database at the version it had. A database whose version is newer than this code knows is
refused (an old replica must not write into a schema it does not understand), with a message saying so.

Add a migration by appending ``(version, description, sql)`` to ``MIGRATIONS``; never edit a released one.
"""

from __future__ import annotations

from typing import Any

#: The key of the advisory lock migrations take (any constant; "sms-mcp" as a number).
MIGRATION_LOCK = 0x736D_732D_6D63_70

SCHEMA_V1 = """
-- Times are the domain's clock, in seconds since the epoch (the port's convention: the caller's clock decides).
-- What the caller wrote (the plan's summary, a chunk's API parameters, recipients and OutId) is kept as JSON
-- text with every non-ASCII character escaped, not JSONB: PostgreSQL's text and JSONB cannot hold NUL or an
-- unpaired surrogate, and the ledger must store exactly what will be (or was) sent, whatever it contains.
CREATE TABLE plans (
    plan_id             TEXT PRIMARY KEY,
    token_hash          TEXT NOT NULL UNIQUE,
    tool                TEXT NOT NULL,
    args_hash           TEXT NOT NULL,
    content_hash        TEXT,
    principal_subject   TEXT NOT NULL,
    principal_client    TEXT NOT NULL,
    template_code       TEXT NOT NULL,
    template_type       TEXT NOT NULL,
    state               TEXT NOT NULL,
    created_at          DOUBLE PRECISION NOT NULL,
    expires_at          DOUBLE PRECISION NOT NULL,
    updated_at          DOUBLE PRECISION NOT NULL,
    sent_at             DOUBLE PRECISION,
    owner               TEXT,
    lease_expires       DOUBLE PRECISION,
    summary             TEXT NOT NULL           -- JSON, ASCII-escaped (see below)
);
CREATE INDEX plans_content ON plans (content_hash);
CREATE TABLE chunks (
    plan_id             TEXT NOT NULL REFERENCES plans (plan_id) ON DELETE CASCADE,
    chunk_no            INTEGER NOT NULL,
    state               TEXT NOT NULL,
    body                TEXT NOT NULL,          -- JSON {action, params, recipients, out_id}, ASCII-escaped
    owner               TEXT,
    claimed_at          DOUBLE PRECISION,
    lease_expires       DOUBLE PRECISION,
    biz_id              TEXT,
    request_id          TEXT,
    error_code          TEXT,
    error_message       TEXT,
    updated_at          DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (plan_id, chunk_no)
);
-- The local mirror of Alibaba's per-number flow control and the daily budgets: one row per message that may
-- have reached a handset (written with the chunk's intent, deleted when the chunk is known not to have left).
CREATE TABLE sends (
    number              TEXT NOT NULL,
    sign_name           TEXT NOT NULL,
    template_code       TEXT NOT NULL,
    principal_subject   TEXT NOT NULL,
    sent_at             DOUBLE PRECISION NOT NULL,
    plan_id             TEXT NOT NULL,
    chunk_no            INTEGER NOT NULL
);
CREATE INDEX sends_number ON sends (number, sent_at);
CREATE INDEX sends_time ON sends (sent_at);
CREATE INDEX sends_principal ON sends (principal_subject, sent_at);
CREATE INDEX sends_chunk ON sends (plan_id, chunk_no);
"""

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (1, "plans, chunks and the sends mirror", SCHEMA_V1),
)

LATEST = MIGRATIONS[-1][0]


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer sms-mcp than this one."""


async def migrate(conn: Any) -> tuple[int, int]:
    """Bring the database up to ``LATEST``; returns ``(version before, version after)``.

    ``conn`` is a psycopg ``AsyncConnection`` in autocommit mode (the function opens its own transaction)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version INTEGER PRIMARY KEY, description TEXT NOT NULL,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        cur = await conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version")
        row = await cur.fetchone()
        before = int(next(iter(row.values())) if isinstance(row, dict) else row[0]) if row else 0
        if before > LATEST:
            raise SchemaTooNew(
                f"the ledger database is at schema version {before}, newer than this sms-mcp knows ({LATEST}); "
                "upgrade sms-mcp on this replica (never point an older release at a migrated ledger)"
            )
        for version, description, sql in MIGRATIONS:
            if version <= before:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_version (version, description) VALUES (%s, %s)",
                               (version, description))
    return before, LATEST
