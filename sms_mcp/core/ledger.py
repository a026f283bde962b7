"""The ledger: every plan's life in SQLite, shared safely by several server processes on one data dir.

States: ``prepared`` (token issued) -> ``sending`` (intent written *before* the API call) -> ``accepted`` |
``rejected`` | ``unknown``. The ``prepared -> sending`` step is one conditional UPDATE, so of any number of
concurrent confirmations (threads or processes) exactly one wins and performs the API call; the others read the
recorded result. Tokens are stored only as SHA-256 hashes: the database alone cannot confirm a plan.
"""

from __future__ import annotations

import hashlib
import json
import os
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
    wire_json   TEXT NOT NULL,
    result_json TEXT
);
CREATE INDEX IF NOT EXISTS plans_state ON plans(state);
"""

FINAL_STATES = frozenset({"accepted", "rejected", "unknown"})


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
    wire: dict[str, Any]
    result: dict[str, Any] | None


class Ledger:
    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._lock = threading.Lock()
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves so writers serialise across processes.
        self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an outcome, once recorded, survives a power cut
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.executescript(SCHEMA)
        try:
            os.chmod(self.path, 0o600)  # it holds full phone numbers
        except OSError:
            pass

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @staticmethod
    def _row(row: sqlite3.Row | None) -> PlanRow | None:
        if row is None:
            return None
        return PlanRow(
            plan_id=row["plan_id"],
            tool=row["tool"],
            args_hash=row["args_hash"],
            state=row["state"],
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            sent_at=row["sent_at"],
            plan=json.loads(row["plan_json"]),
            wire=json.loads(row["wire_json"]),
            result=json.loads(row["result_json"]) if row["result_json"] else None,
        )

    def create(
        self, *, plan_id: str, token: str, tool: str, args_hash: str, ttl: float,
        plan: dict[str, Any], wire: dict[str, Any],
    ) -> PlanRow:
        now = self._clock()
        with self._lock:
            self._db.execute(
                "INSERT INTO plans (plan_id, token_hash, tool, args_hash, state, created_at, expires_at, "
                "updated_at, plan_json, wire_json) VALUES (?, ?, ?, ?, 'prepared', ?, ?, ?, ?, ?)",
                (plan_id, token_hash(token), tool, args_hash, now, now + ttl, now,
                 json.dumps(plan, ensure_ascii=False), json.dumps(wire, ensure_ascii=False)),
            )
        row = self.get(plan_id)
        assert row is not None
        return row

    def by_token(self, token: str) -> PlanRow | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM plans WHERE token_hash = ?", (token_hash(token),)).fetchone()
        return self._row(row)

    def get(self, plan_id: str) -> PlanRow | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM plans WHERE plan_id = ?", (plan_id,)).fetchone()
        return self._row(row)

    def claim(self, plan_id: str) -> bool:
        """Write the intent: ``prepared -> sending``. True for exactly one caller, ever, per plan."""
        now = self._clock()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(
                    "UPDATE plans SET state = 'sending', updated_at = ?, sent_at = ? "
                    "WHERE plan_id = ? AND state = 'prepared' AND expires_at > ?",
                    (now, now, plan_id, now),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return cur.rowcount == 1

    def record(self, plan_id: str, state: str, result: dict[str, Any]) -> None:
        """Record the outcome of the one API call (durably, before the result is returned)."""
        if state not in FINAL_STATES:
            raise ValueError(state)
        with self._lock:
            self._db.execute(
                "UPDATE plans SET state = ?, result_json = ?, updated_at = ? WHERE plan_id = ?",
                (state, json.dumps(result, ensure_ascii=False), self._clock(), plan_id),
            )

    def count_states(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM plans GROUP BY state").fetchall()
        return {r[0]: r[1] for r in rows}
