"""The audit log: one JSON line per plan event in ``<data dir>/audit.jsonl``. Numbers are masked; no tokens,
no secrets, no message text (it may carry codes)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class AuditLog:
    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, event: str, plan_id: str, **fields: Any) -> None:
        entry = {"ts": round(self.clock(), 3), "event": event, "plan_id": plan_id, "pid": os.getpid(), **fields}
        line = json.dumps(entry, ensure_ascii=False, default=str) + "\n"
        with self._lock:
            # O_APPEND keeps lines from several server processes whole.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
