"""The ledger: every plan's life in SQLite (WAL, synchronous commits), shared safely by server processes.

A plan is ``prepared`` (token issued) until one confirmation claims it (``sending``; or ``cancelled`` when the
human declined). A plan holds one or more *chunks* — the API-sized requests it needs — each with its own OutId
and life: ``pending`` -> ``sending`` (the intent, written *before* the API call) -> ``accepted`` | ``rejected``
| ``unknown``; reconciliation later settles ``unknown`` into ``accepted`` or ``not_sent``.

Exactly-once comes from two conditional UPDATEs: ``prepared -> sending`` for the plan and ``pending -> sending``
for each chunk. Whatever the number of concurrent confirmations (threads or processes), each chunk is claimed
by exactly one of them, and only the claimant calls the API for it. A chunk left ``sending`` by a process that
died is ``unknown``: never resent, only reconciled. Tokens are stored as SHA-256 hashes only.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS plans (
    plan_id     TEXT PRIMARY KEY,
    token_hash  TEXT NOT NULL UNIQUE,
    tool        TEXT NOT NULL,
    args_hash   TEXT NOT NULL,
    state       TEXT NOT NULL,
    created_at  REAL NOT NULL,
    expires_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    sent_at     REAL,
    plan_json   TEXT NOT NULL,
    content_hash TEXT
);
CREATE INDEX IF NOT EXISTS plans_args ON plans(args_hash);
CREATE TABLE IF NOT EXISTS chunks (
    plan_id       TEXT NOT NULL,
    chunk_no      INTEGER NOT NULL,
    state         TEXT NOT NULL,
    action        TEXT NOT NULL,
    params_json   TEXT NOT NULL,
    recipients    TEXT NOT NULL,
    out_id        TEXT NOT NULL,
    owner         TEXT,
    claimed_at    REAL,
    biz_id        TEXT,
    request_id    TEXT,
    error_code    TEXT,
    error_message TEXT,
    updated_at    REAL NOT NULL,
    PRIMARY KEY (plan_id, chunk_no)
);
CREATE TABLE IF NOT EXISTS sends (
    number        TEXT NOT NULL,
    sign_name     TEXT NOT NULL,
    template_code TEXT NOT NULL,
    template_type TEXT NOT NULL,
    sent_at       REAL NOT NULL,
    plan_id       TEXT NOT NULL,
    chunk_no      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sends_number ON sends(number, sign_name);
CREATE INDEX IF NOT EXISTS sends_time ON sends(sent_at);
"""

CHUNK_FINAL = frozenset({"accepted", "rejected", "unknown", "not_sent"})
OWNER = f"{socket.gethostname()}:{os.getpid()}"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class PlanRow:
    plan_id: str
    tool: str
    args_hash: str
    state: str
    created_at: float
    expires_at: float
    sent_at: float | None
    plan: dict[str, Any]


@dataclass(frozen=True)
class ChunkRow:
    plan_id: str
    chunk_no: int
    state: str
    action: str
    params: dict[str, str]
    recipients: list[dict[str, str]]  # [{number, sign_name}] in wire form
    out_id: str
    owner: str | None
    claimed_at: float | None
    biz_id: str | None
    request_id: str | None
    error_code: str | None
    error_message: str | None


@dataclass(frozen=True)
class NewChunk:
    action: str
    params: dict[str, str]
    recipients: list[dict[str, str]]
    out_id: str


def _owner_alive(owner: str | None) -> bool:
    """Is the process that claimed a chunk still running? (Only answerable for this host.)"""
    if not owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return True  # another machine on a shared disk: trust the staleness timeout instead
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    try:  # a killed process its parent has not reaped yet still answers kill(0): it is a zombie, not alive
        with open(f"/proc/{int(pid)}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


class Ledger:
    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._lock = threading.Lock()
        # isolation_level=None: explicit BEGIN IMMEDIATE where writers must serialise across processes.
        self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an intent or outcome, once written, survives a crash
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(plans)")}
        if "content_hash" not in columns:  # a ledger written by 0.1.0 before this column existed
            self._db.execute("ALTER TABLE plans ADD COLUMN content_hash TEXT")
        self._db.execute("CREATE INDEX IF NOT EXISTS plans_content ON plans(content_hash)")
        try:
            os.chmod(self.path, 0o600)  # it holds full phone numbers
        except OSError:
            pass

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ helpers
    def _write(self, sql: str, args: tuple[Any, ...]) -> int:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(sql, args)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return cur.rowcount

    @staticmethod
    def _plan(row: sqlite3.Row | None) -> PlanRow | None:
        if row is None:
            return None
        return PlanRow(
            plan_id=row["plan_id"], tool=row["tool"], args_hash=row["args_hash"], state=row["state"],
            created_at=row["created_at"], expires_at=row["expires_at"], sent_at=row["sent_at"],
            plan=json.loads(row["plan_json"]),
        )

    @staticmethod
    def _chunk(row: sqlite3.Row) -> ChunkRow:
        return ChunkRow(
            plan_id=row["plan_id"], chunk_no=row["chunk_no"], state=row["state"], action=row["action"],
            params=json.loads(row["params_json"]), recipients=json.loads(row["recipients"]),
            out_id=row["out_id"], owner=row["owner"], claimed_at=row["claimed_at"], biz_id=row["biz_id"],
            request_id=row["request_id"], error_code=row["error_code"], error_message=row["error_message"],
        )

    # ------------------------------------------------------------------ plans
    def create(
        self, *, plan_id: str, token: str, tool: str, args_hash: str, ttl: float, plan: dict[str, Any],
        content_hash: str | None = None,
        chunks: list[NewChunk],
    ) -> None:
        now = self._clock()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO plans (plan_id, token_hash, tool, args_hash, content_hash, state, created_at, "
                    "expires_at, updated_at, plan_json) VALUES (?, ?, ?, ?, ?, 'prepared', ?, ?, ?, ?)",
                    (plan_id, token_hash(token), tool, args_hash, content_hash, now, now + ttl, now,
                     json.dumps(plan, ensure_ascii=False)),
                )
                self._db.executemany(
                    "INSERT INTO chunks (plan_id, chunk_no, state, action, params_json, recipients, out_id, "
                    "updated_at) VALUES (?, ?, 'pending', ?, ?, ?, ?, ?)",
                    [(plan_id, n, c.action, json.dumps(c.params, ensure_ascii=False),
                      json.dumps(c.recipients, ensure_ascii=False), c.out_id, now)
                     for n, c in enumerate(chunks, start=1)],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def by_token(self, token: str) -> PlanRow | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM plans WHERE token_hash = ?", (token_hash(token),)).fetchone()
        return self._plan(row)

    def get(self, plan_id: str) -> PlanRow | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM plans WHERE plan_id = ?", (plan_id,)).fetchone()
        return self._plan(row)

    def claim(self, plan_id: str) -> bool:
        """The confirmation: ``prepared -> sending``. True for exactly one caller, ever, per plan."""
        now = self._clock()
        return self._write(
            "UPDATE plans SET state = 'sending', updated_at = ?, sent_at = ? "
            "WHERE plan_id = ? AND state = 'prepared' AND expires_at > ?",
            (now, now, plan_id, now),
        ) == 1

    def cancel(self, plan_id: str) -> bool:
        """The human declined: ``prepared -> cancelled``; nothing will ever be sent for this plan."""
        return self._write(
            "UPDATE plans SET state = 'cancelled', updated_at = ? WHERE plan_id = ? AND state = 'prepared'",
            (self._clock(), plan_id),
        ) == 1

    def unreconciled_like(self, content_hash: str) -> str | None:
        """A plan sending the same messages (same recipients in any order, signatures, template and values;
        whatever its out_id) whose outcome is still unknown: it may have been sent."""
        with self._lock:
            row = self._db.execute(
                "SELECT p.plan_id FROM plans p JOIN chunks c ON c.plan_id = p.plan_id "
                "WHERE p.content_hash = ? AND c.state IN ('unknown', 'sending') LIMIT 1", (content_hash,),
            ).fetchone()
        return row[0] if row else None

    # ------------------------------------------------------------------ chunks
    def chunks(self, plan_id: str) -> list[ChunkRow]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM chunks WHERE plan_id = ? ORDER BY chunk_no", (plan_id,))
            return [self._chunk(r) for r in rows.fetchall()]

    def chunk(self, plan_id: str, chunk_no: int) -> ChunkRow:
        with self._lock:
            row = self._db.execute("SELECT * FROM chunks WHERE plan_id = ? AND chunk_no = ?",
                                   (plan_id, chunk_no)).fetchone()
        return self._chunk(row)

    def claim_chunk(
        self, plan_id: str, chunk_no: int, sends: list[tuple[str, str, str, str]], *,
        daily_limit: int | None = None, day_start: float = 0.0,
    ) -> bool:
        """Write the intent: ``pending -> sending``, before the API call. True for exactly one caller.

        In the same transaction the chunk's messages ``(number, sign, template code, template type)`` are
        counted against the flow-control and daily budgets: from here on they may reach a handset.

        With ``daily_limit``, a chunk that would take today's sends (since ``day_start``) past it is not
        claimed but ``rejected`` (``sms_mcp.DAILY_LIMIT``), decided in this same transaction: a check made
        earlier (at confirmation) cannot see other confirmations that are concurrently between their check and
        their claim, so without this two plans could both pass and exceed the limit."""
        now = self._clock()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if daily_limit is not None:
                    used = int(self._db.execute("SELECT COUNT(*) FROM sends WHERE sent_at >= ?",
                                                (day_start,)).fetchone()[0])
                    if used + len(sends) > daily_limit:
                        self._db.execute(
                            "UPDATE chunks SET state = 'rejected', error_code = 'sms_mcp.DAILY_LIMIT', "
                            "error_message = ?, updated_at = ? WHERE plan_id = ? AND chunk_no = ? "
                            "AND state = 'pending'",
                            (f"{len(sends)} message(s) would exceed the daily limit of {daily_limit} (UTC+8 day, "
                             f"SMS_MCP_DAILY_LIMIT); {used} are used. Nothing was sent.", now, plan_id, chunk_no),
                        )
                        self._db.execute("COMMIT")
                        return False
                cur = self._db.execute(
                    "UPDATE chunks SET state = 'sending', owner = ?, claimed_at = ?, updated_at = ? "
                    "WHERE plan_id = ? AND chunk_no = ? AND state = 'pending'",
                    (OWNER, now, now, plan_id, chunk_no),
                )
                if cur.rowcount == 1:
                    self._db.executemany(
                        "INSERT INTO sends (number, sign_name, template_code, template_type, sent_at, plan_id, "
                        "chunk_no) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [(n, s, t, ty, now, plan_id, chunk_no) for n, s, t, ty in sends],
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return cur.rowcount == 1

    def settle_chunk(
        self, plan_id: str, chunk_no: int, state: str, *, expect: tuple[str, ...] = ("sending",),
        biz_id: str | None = None, request_id: str | None = None, error_code: str | None = None,
        error_message: str | None = None,
    ) -> bool:
        """Record a chunk's outcome; ``expect`` names the states it may leave (a guard against races)."""
        if state not in CHUNK_FINAL:
            raise ValueError(state)
        now = self._clock()
        marks = ",".join("?" * len(expect))
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(
                    f"UPDATE chunks SET state = ?, biz_id = COALESCE(?, biz_id), request_id = COALESCE(?, "
                    f"request_id), error_code = ?, error_message = ?, updated_at = ? "
                    f"WHERE plan_id = ? AND chunk_no = ? AND state IN ({marks})",
                    (state, biz_id, request_id, error_code, error_message, now, plan_id, chunk_no, *expect),
                )
                if cur.rowcount == 1 and state in ("rejected", "not_sent"):
                    # Nothing reached the handsets: free the flow-control and daily-limit budget again.
                    self._db.execute("DELETE FROM sends WHERE plan_id = ? AND chunk_no = ?", (plan_id, chunk_no))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return cur.rowcount == 1

    def expire_orphans(self, plan_id: str, stale_after: float) -> None:
        """Chunks left ``sending`` by a dead process (or for longer than any call can take) are ``unknown``."""
        now = self._clock()
        for chunk in self.chunks(plan_id):
            if chunk.state != "sending":
                continue
            if not _owner_alive(chunk.owner) or (chunk.claimed_at or 0) + stale_after < now:
                self.settle_chunk(plan_id, chunk.chunk_no, "unknown", error_code="sms_mcp.OUTCOME_UNKNOWN",
                                  error_message="The sending process stopped before it recorded an answer.")

    # ------------------------------------------------------------------ history (policy)
    def sends_since(self, since: float, number: str | None = None, sign_name: str | None = None,
                    template_code: str | None = None) -> int:
        sql, args = "SELECT COUNT(*) FROM sends WHERE sent_at >= ?", [since]
        for column, value in (("number", number), ("sign_name", sign_name), ("template_code", template_code)):
            if value is not None:
                sql += f" AND {column} = ?"
                args.append(value)
        with self._lock:
            return int(self._db.execute(sql, args).fetchone()[0])

    def recent_sends(self, since: float, numbers: list[str]) -> list[tuple[str, str, str, float]]:
        """``(number, sign_name, template_code, sent_at)`` of these numbers since a time, in one indexed query
        (reading the whole day instead made a prepare's cost grow with the day's traffic)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT number, sign_name, template_code, sent_at FROM sends "
                "WHERE number IN (SELECT value FROM json_each(?)) AND sent_at >= ?",
                (json.dumps(sorted(set(numbers))), since),
            ).fetchall()
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    def states(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM chunks GROUP BY state").fetchall()
        return {r[0]: r[1] for r in rows}
