"""The real agent hosts, OpenClaw and Claude Code, with their own MCP clients driving `sms-mcp`: no LLM, no
network. A scripted model server on loopback (tests/scripted_model.py) plays the model; the host runs its agent
loop, calls sms-mcp's tools through its MCP client and feeds the results back, and the test checks both what the
host sent back to the "model" and what the sandbox recorded.

OpenClaw 2026.9.6 runs on Node 24 (SMS_MCP_NODE24), Claude Code 2.1.332 is a native binary; both are installed by
.ci/run (tests/host_tools.py).
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from host_tools import REPO, SERVER, clean_env, located, run

SEND = {"phone_numbers": ["13712345678"], "sign_name": "速通科技", "template_code": "SMS_900000002",
        "template_param": {"name": "王女士", "order_no": "A100", "date": "周三"}}
SKILL_DIR = REPO / "skills" / "sms-mcp"


def script(prefix: str) -> list[dict[str, Any]]:
    """List the signatures, prepare the send, confirm it with the plan's token, report."""
    return [
        {"tool": f"{prefix}list_signs", "arguments": {}},
        {"tool": f"{prefix}send_sms", "arguments": SEND},
        {"tool": f"{prefix}send_sms", "arguments": {**SEND, "confirm_token": {"from_last_result": "confirm_token"}}},
        {"text": "Sent: the SMS was accepted by Alibaba (sandbox)."},
    ]


@contextmanager
def scripted_model(tmp: Path, steps: list[dict[str, Any]]) -> Iterator[tuple[str, Path]]:
    """The scripted model server as a subprocess: yields (base URL, request log)."""
    (tmp / "script.json").write_text(json.dumps(steps, ensure_ascii=False), encoding="utf-8")
    log = tmp / "model-requests.jsonl"
    proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / "scripted_model.py"), "--script",
                             str(tmp / "script.json"), "--log", str(log)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.fullmatch(r"scripted model listening on (http://127\.0\.0\.1:\d+)\n", line)
        assert match, line
        yield match.group(1), log
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def model_requests(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()] if log.exists() else []


def structured(text: str) -> dict[str, Any]:
    """sms-mcp's result object inside whatever a host wrapped it in: OpenClaw hands the model a JSON envelope
    (after a security preamble) whose text field holds `structuredContent:` and the JSON; Claude Code the JSON."""
    found = _find_result(text, depth=0)
    assert found is not None, f"no sms-mcp result in {text[:1500]!r}"
    return found


def _find_result(value: Any, depth: int) -> dict[str, Any] | None:
    if depth > 6:
        return None
    if isinstance(value, dict):
        if "backend" in value and "notice" in value:
            return value
        values: list[Any] = list(value.values())
    elif isinstance(value, list):
        values = value
    elif isinstance(value, str):
        values = []
        decoder = json.JSONDecoder()
        for start in (m.start() for m in re.finditer(r"\{", value)):
            try:
                obj, _ = decoder.raw_decode(value, start)
            except ValueError:
                continue
            values.append(obj)
            break  # the first complete JSON object holds everything after it
    else:
        return None
    for item in values:
        found = _find_result(item, depth + 1)
        if found is not None:
            return found
    return None


def sandbox_messages(data_dir: Path) -> list[tuple[str, str]]:
    """(phone, sign) of every message the sandbox accepted, read straight from its database."""
    db = data_dir / "sandbox.sqlite3"
    assert db.exists(), f"the server did not use {data_dir}"
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT phone_number, sign_name FROM messages ORDER BY id").fetchall()


def check_the_conversation(requests: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    """The model saw sms-mcp's tool results in order: signs, a plan, an accepted send; returns them."""
    final = max(requests, key=lambda r: len(r["tool_results"]))
    results = [structured(text) for text in final["tool_results"]]
    assert len(results) == 3, final["tool_results"]
    signs, plan, sent = results
    assert {s["sign_name"] for s in signs["signs"]} >= {"速通科技"} and signs["backend"] == "sandbox"
    assert plan["status"] == "pending_confirmation" and plan["confirm_token"].startswith("smt_")
    assert sent["status"] == "accepted" and sent["biz_id"] and sent["plan_id"] == plan["plan_id"]
    called = [r["answer"] for r in requests if "tool" in r["answer"]]
    assert len(called) == 3
    assert not [r for r in requests if r["answer"].get("text", "").startswith("SCRIPT ERROR")]
    return results


# ----------------------------------------------------------------------------------------------- OpenClaw
def openclaw_env(home: Path) -> dict[str, str]:
    node24 = located("SMS_MCP_NODE24")
    return clean_env(home, node24.parent, OPENCLAW_HIDE_BANNER="1")


def openclaw(home: Path, *args: str, ok: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return run([str(located("SMS_MCP_OPENCLAW")), *args], env=openclaw_env(home), ok=ok, timeout=timeout,
               cwd=home)


def test_openclaw_skill_is_ready_and_visible_without_accesskeys(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    installed = openclaw(home, "skills", "install", str(SKILL_DIR), "--as", "sms-mcp")
    assert "Installed sms-mcp" in installed.stdout + installed.stderr
    info = openclaw(home, "skills", "info", "sms-mcp").stdout
    assert "Visible to model: yes" in info, info
    assert "Ready" in info and "✗" not in info and "Needs setup" not in info, info
    # It installed just the skill: no checkout, tests or .git came along.
    target = next(p for p in home.rglob("SKILL.md") if p.parent.name == "sms-mcp")
    copied = sorted(str(p.relative_to(target.parent)) for p in target.parent.rglob("*") if p.is_file())
    assert [c for c in copied if not c.startswith(".openclaw/")] == ["SKILL.md"], copied
    assert sum(p.stat().st_size for p in target.parent.rglob("*") if p.is_file()) < 64_000


def test_openclaw_registration_without_accesskeys_then_its_agent_sends_in_two_steps(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    data_dir = home / ".local" / "share" / "sms-mcp"  # the server's default data dir under this HOME
    # The README's credential-free registration: probed by OpenClaw before saving, then checked.
    openclaw(home, "mcp", "add", "sms", "--command", "sms-mcp")
    doctor = openclaw(home, "mcp", "doctor", "sms", "--probe")
    assert re.search(r"sms: ok", doctor.stdout), doctor.stdout
    probe = openclaw(home, "mcp", "probe", "sms")
    assert "7 tools" in probe.stdout, probe.stdout
    # The README's registration with AccessKeys, with the variables unset: OpenClaw passes `${…}` literally,
    # and sms-mcp must stay on the sandbox and say why (issue 13, finding 1).
    openclaw(home, "mcp", "unset", "sms")
    openclaw(home, "mcp", "add", "sms", "--command", "sms-mcp",
             "--env", "ALIBABA_CLOUD_ACCESS_KEY_ID=${ALIBABA_CLOUD_ACCESS_KEY_ID}",
             "--env", "ALIBABA_CLOUD_ACCESS_KEY_SECRET=${ALIBABA_CLOUD_ACCESS_KEY_SECRET}")
    config_path = home / ".openclaw" / "openclaw.json"
    config = json.loads(config_path.read_text())
    assert config["mcp"]["servers"]["sms"]["env"]["ALIBABA_CLOUD_ACCESS_KEY_ID"] == "${ALIBABA_CLOUD_ACCESS_KEY_ID}"

    with scripted_model(tmp_path, script("sms__")) as (url, log):
        config["models"] = {"mode": "merge", "providers": {"scripted": {
            "baseUrl": f"{url}/v1", "apiKey": "scripted-key", "api": "openai-completions",
            "models": [{"id": "scripted-1", "name": "Scripted", "input": ["text"], "reasoning": False,
                        "contextWindow": 128000, "maxTokens": 4096,
                        "cost": {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0}}]}}}
        config.setdefault("agents", {}).setdefault("defaults", {})["model"] = {"primary": "scripted/scripted-1"}
        config_path.write_text(json.dumps(config, indent=2))
        agent = openclaw(home, "agent", "--local", "--agent", "main", "--session-id", "sms-ci", "--message",
                         "Send the shipping notice for order A100 to 13712345678.", "--json", timeout=300)
        requests = model_requests(log)

    out = json.loads(agent.stdout)
    assert [p["text"] for p in out["payloads"]] == ["Sent: the SMS was accepted by Alibaba (sandbox)."], out
    signs, plan, sent = check_the_conversation(requests, "sms__")
    # Placeholders counted as absent: the sandbox, and the model is told which variables were ignored.
    for result in (signs, plan, sent):
        assert result["backend"] == "sandbox"
        for variable in ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET"):
            assert variable in result["notice"]
    assert sandbox_messages(data_dir) == [("13712345678", "速通科技")]  # exactly one SMS, to the right number


# ----------------------------------------------------------------------------------------------- Claude Code
def claude_env(home: Path, **extra: str) -> dict[str, str]:
    # No telemetry, no update check, MCP tools offered directly (not deferred behind Claude Code's tool search).
    return clean_env(home, CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1", DISABLE_AUTOUPDATER="1",
                     DISABLE_TELEMETRY="1", ENABLE_TOOL_SEARCH="false", **extra)


def test_claude_code_add_list_and_a_headless_run_through_both_steps(tmp_path: Path) -> None:
    claude = str(located("SMS_MCP_CLAUDE"))
    home = tmp_path / "home"
    project = home / "project"
    project.mkdir(parents=True)
    data_dir = home / ".local" / "share" / "sms-mcp"
    # The README's command (credential-free form), then Claude Code's own health check.
    run([claude, "mcp", "add", "sms", "--", "sms-mcp"], env=claude_env(home), cwd=project)
    listed = run([claude, "mcp", "list"], env=claude_env(home), cwd=project)
    assert re.search(r"^sms: .*sms-mcp.* - ✔ Connected$", listed.stdout, re.M), listed.stdout

    tools = "mcp__sms__list_signs,mcp__sms__send_sms"
    with scripted_model(tmp_path, script("")) as (url, log):
        env = claude_env(home, ANTHROPIC_BASE_URL=url, ANTHROPIC_API_KEY="sk-ant-scripted")
        headless = run([claude, "-p", "Send the shipping notice for order A100 to 13712345678.",
                        "--allowedTools", tools, "--output-format", "json"], env=env, cwd=project, timeout=300)
        requests = model_requests(log)
    out = json.loads(headless.stdout)
    assert out["is_error"] is False and out["result"] == "Sent: the SMS was accepted by Alibaba (sandbox).", out
    assert out["permission_denials"] == []
    check_the_conversation(requests, "mcp__sms__")
    assert {r["answer"]["tool"] for r in requests if "tool" in r["answer"]} == {"mcp__sms__list_signs",
                                                                               "mcp__sms__send_sms"}
    assert sandbox_messages(data_dir) == [("13712345678", "速通科技")]


def test_the_server_command_is_the_installed_console_script() -> None:
    """Both hosts launch `sms-mcp` from PATH (OpenClaw strips PYTHONPATH): it must be the one under test."""
    assert Path(SERVER).exists()
    version = run([SERVER, "--version"]).stdout.strip()
    assert re.search(r"\d+\.\d+\.\d+", version), version
