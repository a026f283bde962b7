"""``python -m bench.ledger_throughput --smoke`` runs end to end: both ledgers (SQLite, and PostgreSQL on the
tests' server), both scenarios, plausible figures (no timing thresholds: smoke figures mean nothing)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from pg_server import PostgresServer

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_ledger_bench_smoke(tmp_path: Path, pg_server: PostgresServer) -> None:
    raw = tmp_path / "ledger.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALIBABA_CLOUD_", "SMS_MCP_"))}
    url = pg_server.create_database()  # the session's server (the bench starts its own without --ledger-url)
    argv = ["-m", "bench.ledger_throughput", "--smoke", "--ledger-url", url, "--json", str(raw)]
    proc = subprocess.run([sys.executable, *argv], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(raw.read_text())
    assert set(results) == {"SQLite", "PostgreSQL"}
    for scenarios in results.values():
        assert set(scenarios) == {"sequential", "16 concurrent"}
        for figures in scenarios.values():
            assert figures["plans"] == 8
            assert all(math.isfinite(figures[k]) and figures[k] > 0 for k in ("p50_ms", "p99_ms", "confirms_per_s"))
            assert figures["p99_ms"] >= figures["p50_ms"]
    assert "| sequential (8) | PostgreSQL |" in proc.stdout and pg_server.password not in proc.stdout
