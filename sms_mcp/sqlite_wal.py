"""Switching a SQLite file to WAL when several processes may open it at the same moment.

``PRAGMA journal_mode=WAL`` needs an exclusive lock for an instant. When two processes open a new file together,
SQLite can answer "database is locked" at once, without calling the busy handler (the switch happens while the
connection's first read lock is being upgraded, where waiting could deadlock), so ``busy_timeout`` does not help.
The ledger and the emulator both open their files from several processes (replicas, ``serve`` beside
``emulator``), so the switch is retried here with a short backoff until the connection's own busy timeout.
"""

from __future__ import annotations

import sqlite3
import time


def enable_wal(db: sqlite3.Connection, timeout: float) -> None:
    """``PRAGMA journal_mode=WAL`` on ``db``, retried while another connection holds the lock (up to ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL").fetchone()
            return
        except sqlite3.OperationalError as err:
            if ("locked" not in str(err) and "busy" not in str(err)) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
