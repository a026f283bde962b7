"""`sms-mcp serve` as a real subprocess over stdio, as hosts start it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

ARGS = {
    "phone_numbers": ["13912345678"],
    "sign_name": "速通科技",
    "template_code": "SMS_900000002",
    "template_param": {"name": "王女士", "order_no": "A100", "date": "周三"},
}


def server_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALIBABA_CLOUD_", "SMS_MCP_"))}
    env.update({"SMS_MCP_DATA_DIR": str(tmp_path / "data"), "SMS_MCP_SANDBOX_RECEIPT_DELAY": "0",
                "HOME": str(tmp_path), "ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true"})
    return env


@pytest.mark.parametrize("era", ["auto", "legacy"])
async def test_whole_flow_over_stdio(tmp_path: Path, era: str) -> None:
    params = StdioServerParameters(command=sys.executable, args=["-m", "sms_mcp", "serve"],
                                   env=server_env(tmp_path))
    async with Client(params, mode=era) as client:  # type: ignore[arg-type]
        tools = {t.name for t in (await client.list_tools()).tools}
        assert len(tools) == 7
        signs = await client.call_tool("list_signs", {})
        assert signs.structured_content["backend"] == "sandbox"  # auto without credentials
        plan = (await client.call_tool("send_sms", ARGS)).structured_content
        assert plan["status"] == "pending_confirmation"
        sent = (await client.call_tool("send_sms", {**ARGS, "confirm_token": plan["confirm_token"]}))
        assert sent.structured_content["status"] == "accepted"
        bad = await client.call_tool("send_sms", {**ARGS, "confirm_token": "smt_forged"})
        assert bad.is_error and "UNKNOWN_TOKEN" in bad.content[0].text
        report = (await client.call_tool("query_details", {"plan_id": plan["plan_id"]})).structured_content
        assert report["summary"]["delivered"] == 1


def _start(tmp_path: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "sms_mcp", "serve"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=server_env(tmp_path))
    assert proc.stdin and proc.stdout
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    proc.stdin.write((json.dumps(init) + "\n").encode())
    proc.stdin.flush()
    answer = json.loads(proc.stdout.readline())  # serving: every byte on stdout is protocol
    assert answer["id"] == 1 and "result" in answer
    return proc


@pytest.mark.parametrize("how", ["eof", "sigterm", "sigint", "double-signal"])
def test_shutdown_paths_exit_cleanly_and_run_the_lifespan(tmp_path: Path, how: str) -> None:
    proc = _start(tmp_path)
    assert proc.stdin
    if how == "eof":
        proc.stdin.close()
    elif how == "sigterm":
        proc.send_signal(signal.SIGTERM)
    elif how == "sigint":
        proc.send_signal(signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
    try:
        rc = proc.wait(timeout=10)
    finally:
        proc.kill()
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert rc == 0, stderr
    assert "Traceback" not in stderr
    # The lifespan's cleanup ran: closing the last connection checkpoints and removes SQLite's WAL files,
    # which a process that died without cleanup leaves behind (see the SIGKILL control below).
    data = tmp_path / "data"
    assert (data / "sandbox.sqlite3").exists() and (data / "ledger.sqlite3").exists()
    assert not (data / "sandbox.sqlite3-wal").exists() and not (data / "ledger.sqlite3-wal").exists()


def test_sigkill_control_leaves_wal_files(tmp_path: Path) -> None:
    """The control for the assertion above: without cleanup the WAL files stay."""
    proc = _start(tmp_path)
    proc.kill()
    proc.wait(timeout=10)
    assert (tmp_path / "data" / "ledger.sqlite3-wal").exists()


def test_stdout_carries_only_protocol_and_logs_go_to_stderr(tmp_path: Path) -> None:
    proc = _start(tmp_path)
    assert proc.stdin and proc.stdout and proc.stderr
    proc.stdin.close()
    rest = proc.stdout.read().decode()
    proc.wait(timeout=10)
    assert rest.strip() == ""
    assert "backend sandbox" in proc.stderr.read().decode()
