"""``python -m bench.over_http --smoke`` runs end to end: both servers over Streamable HTTP, both scenarios, plausible
figures (no timing thresholds: a smoke run's figures mean nothing)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_http_bench_smoke(tmp_path: Path) -> None:
    raw = tmp_path / "http.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALIBABA_CLOUD_", "SMS_MCP_"))}
    proc = subprocess.run([sys.executable, "-m", "bench.over_http", "--smoke", "--json", str(raw)], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(raw.read_text())
    assert set(results) == {"sequential", "16 concurrent"}
    for servers in results.values():
        assert set(servers) == {"sms-mcp list_signs", "bare MCPServer echo"}
        for figures in servers.values():
            assert all(math.isfinite(figures[k]) and figures[k] > 0 for k in ("p50_ms", "p99_ms", "calls_per_s"))
            assert figures["p99_ms"] >= figures["p50_ms"]
    assert "| sequential (32) | sms-mcp list_signs |" in proc.stdout
