"""Several processes opening the same new ledger (and emulator store) at the same instant all open it: SQLite's
"database is locked" on the switch to WAL is waited out, not surfaced (replicas start together in practice)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

OPEN_LEDGER = """
import sys, time, anyio
from pathlib import Path
from sms_mcp.ledger.sqlite import SqliteLedger
from sms_mcp.emulator.core import EmulatorCore

async def main() -> None:
    while time.time() < float(sys.argv[2]):  # every process starts opening at the same instant
        pass
    ledger = await SqliteLedger.open(Path(sys.argv[1]) / "ledger.sqlite3")
    await ledger.aclose()
    EmulatorCore(db_path=Path(sys.argv[1]) / "sandbox.sqlite3")
    print("opened")

anyio.run(main)
"""


def test_processes_opening_one_new_ledger_together_all_succeed(tmp_path: Path) -> None:
    for round_no in range(3):
        folder = tmp_path / f"round{round_no}"
        folder.mkdir()
        start = str(time.time() + 2.0)
        procs = [subprocess.Popen([sys.executable, "-c", OPEN_LEDGER, str(folder), start], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(6)]
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0 and out.strip() == "opened", err[-2000:]
