"""The benchmark suite keeps working: ``python -m bench.run --smoke`` runs end to end and writes every row.

No timing thresholds here (the figures of a smoke run mean nothing); only that each measurement ran, produced a
plausible positive number, and that the report carries the machine, the versions and the reproduce command.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
ROW_IDS = ("1", "2", "2b", "3", "4a", "4b", "4c", "4d", "4e", "5", "6", "7a", "7b", "7c", "7d", "7e", "7f", "7g", "7h")
UNITS = {"ms": 1e-3, "s": 1.0, "MB": 1.0}
FIGURE = re.compile(r"^([0-9][0-9,]*\.?[0-9]*) (ms|s|MB)\b")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict, str]:
    tmp = tmp_path_factory.mktemp("bench")
    out, raw = tmp / "BENCH.md", tmp / "bench.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALIBABA_CLOUD_", "SMS_MCP_"))}
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--smoke", "--out", str(out), "--json", str(raw)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out.read_text(encoding="utf-8"), json.loads(raw.read_text(encoding="utf-8")), proc.stdout


def _rows(markdown: str) -> dict[str, list[str]]:
    rows = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] in ROW_IDS:
            rows[cells[0]] = cells
    return rows


def _seconds_or_mb(cell: str) -> float:
    match = FIGURE.match(cell)
    assert match, f"no figure in {cell!r}"
    return float(match.group(1).replace(",", "")) * UNITS[match.group(2)]


def test_every_row_is_in_the_file_and_on_stdout(smoke: tuple[str, dict, str]) -> None:
    markdown, _, stdout = smoke
    assert set(_rows(markdown)) == set(ROW_IDS)
    assert set(_rows(stdout)) == set(ROW_IDS)


def test_figures_are_plausible(smoke: tuple[str, dict, str]) -> None:
    rows = _rows(smoke[0])
    for row_id, cells in rows.items():
        _, _, ours, baseline, ratio, target, result = cells
        value = _seconds_or_mb(ours)
        assert 0 < value < 120, (row_id, ours)  # seconds (or MB): positive, and not absurd
        if baseline != "—":
            assert 0 < _seconds_or_mb(baseline) < 120, (row_id, baseline)
            assert ratio.endswith("×") and 0 < float(ratio[:-1]) < 1e4, (row_id, ratio)
        assert result in ("met", "**MISSED**", "info", "n/a (smoke size)"), (row_id, result)
        if target == "—":
            assert result == "info"
    # Memory is memory: a Python process serving MCP holds at least a few MB, and the two sides are comparable.
    rss_ours, rss_base = _seconds_or_mb(rows["5"][2]), _seconds_or_mb(rows["5"][3])
    assert 5 < rss_base < 2000 and 5 < rss_ours < 2000


def test_raw_samples_match_the_sizes(smoke: tuple[str, dict, str]) -> None:
    _, data, _ = smoke
    sizes, raw = data["sizes"], data["raw"]
    assert len(raw["start"]["times"]["sms"]) == len(raw["start"]["times"]["bare"]) == sizes["starts"]
    assert len(raw["read"]["sms"]) == sizes["read_calls"]
    assert len(raw["emulator"]["read"]["ours"]) == len(raw["emulator"]["read"]["sdk"]) == sizes["openapi_calls"]
    assert raw["emulator"]["batch_calls"] == math.ceil(sizes["batch_recipients"] / 100)
    assert raw["emulator"]["busy"]["sends"] >= sizes["batch_recipients"]  # the confirmed batch was recorded
    assert len(raw["emulator"]["cli"]["calls"]) == sizes["cli_calls"]
    assert len(raw["prepare"]["service"]) == len(raw["prepare"]["mcp"]) == sizes["prepare_reps"]
    net = raw["network"]
    assert net["rtt"] == pytest.approx(2 * sizes["net_one_way_ms"] / 1000)
    for client in ("ours", "sdk_async", "sdk_sync", "direct"):
        assert len(net["read"][client]) == len(net["read_cpu"][client]) == sizes["net_reads"]
    for client in ("ours", "transport", "sdk_async", "sdk_sync", "direct"):
        assert len(net["batch"][client]) == sizes["net_batch_reps"]
    assert net["batch_calls"] == math.ceil(sizes["batch_recipients"] / 100)
    # A cold pool opens one connection per call in flight at most, and reuses them: never one per call.
    assert all(1 <= h <= min(8, net["batch_calls"]) for h in net["handshakes"])
    # Through the proxy a read costs at least one round trip, whoever makes it: the delay is really there.
    assert min(min(net["read"][c]) for c in ("ours", "sdk_async", "sdk_sync")) >= net["rtt"]
    for row in data["rows"]:
        assert row["ours"] > 0 and math.isfinite(row["ours"])


def test_report_says_how_to_reproduce_and_where(smoke: tuple[str, dict, str]) -> None:
    markdown = smoke[0]
    assert "python -m bench.run --smoke" in markdown
    assert "smoke run" in markdown
    for label in ("| CPU |", "| cores |", "| Python |", "| OS |", "| mcp |", "| sms-mcp |",
                  "| alibabacloud-tea-openapi |", "| alibabacloud-dysmsapi20170525 |"):
        assert label in markdown, label
    assert "Python stand-in" in markdown  # the CLI row must not pass for a measure of the real aliyun
    assert "bench.latency_proxy" in markdown  # item 7 says how the distance was made
