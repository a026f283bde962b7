"""Signature nonces that survive a restart: the emulator's replay protection kept with its data directory.

Alibaba refuses a reused ``SignatureNonce`` for as long as the request's timestamp is accepted (15 minutes). An
in-memory cache forgets every nonce when the emulator restarts, so a captured signed ``SendSms`` replayed after a
restart on the same data directory would be accepted and record a second message. :class:`SqliteNonceCache`
keeps them in ``DATA_DIR/emulator-nonces.sqlite3`` until their window has passed; several emulator processes on
one data directory share it (WAL journal, busy timeout, one ``BEGIN IMMEDIATE`` per check).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sms_mcp.emulator.signing import NonceCache
from sms_mcp.sqlite_wal import enable_wal

NONCE_FILE = "emulator-nonces.sqlite3"


class SqliteNonceCache(NonceCache):
    """Same contract as :class:`sms_mcp.emulator.signing.NonceCache`, persisted in a SQLite file."""

    def __init__(self, path: Path, ttl: float, clock: Callable[[], float] = time.time) -> None:
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._next_prune = 0.0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._conn.execute("PRAGMA busy_timeout = 30000")
        enable_wal(self._conn, 30.0)
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS nonces (key_id TEXT NOT NULL, nonce TEXT NOT NULL, expires_at REAL NOT NULL, "
            "PRIMARY KEY (key_id, nonce))"
        )

    def check_and_add(self, key_id: str, nonce: str, stamp: float) -> bool:
        """True if the nonce is new (and remember it until ``stamp`` leaves the window), False if it was used."""
        now = self._clock()
        expiry = max(stamp + self._ttl, now) + 1.0
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                if now >= self._next_prune:
                    conn.execute("DELETE FROM nonces WHERE expires_at <= ?", (now,))
                    self._next_prune = now + 30.0
                row = conn.execute("SELECT expires_at FROM nonces WHERE key_id = ? AND nonce = ?",
                                   (key_id, nonce)).fetchone()
                if row is not None and row[0] > now:
                    conn.execute("COMMIT")
                    return False
                conn.execute("INSERT OR REPLACE INTO nonces (key_id, nonce, expires_at) VALUES (?, ?, ?)",
                             (key_id, nonce, expiry))
                conn.execute("COMMIT")
                return True
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()
