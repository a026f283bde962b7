"""The hosts' own clients against `sms-mcp` on the sandbox: MCP Inspector CLI, mcporter, the MCPB validator;
plus the manifest and the OpenClaw skill (skills/sms-mcp/SKILL.md) checked against the real server.

The Node tools are installed by .ci/run into .ci/node (pinned versions); elsewhere point SMS_MCP_HOST_TOOLS at a
node_modules/.bin holding them (tests/host_tools.py: skipped only when unset and absent, never in CI).
OpenClaw, Claude Code and the TypeScript SDK client: tests/test_hosts_agents.py, tests/test_hosts_ts_sdk.py.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from host_tools import REPO, SERVER, host_tool, located, run
from mcp import Client

from sms_mcp.config import Settings
from sms_mcp.server import build_server

SKILL = REPO / "skills" / "sms-mcp" / "SKILL.md"
SEND = {"phone_numbers": ["13712345678"], "sign_name": "速通科技", "template_code": "SMS_900000002",
        "template_param": {"name": "王女士", "order_no": "A100", "date": "周三"}}


def tool_names() -> set[str]:
    import anyio

    async def names() -> set[str]:
        settings = Settings.from_env({"SMS_MCP_BACKEND": "sandbox", "SMS_MCP_DATA_DIR": "/nonexistent-unused"})
        async with Client(build_server(settings)) as client:
            return {t.name for t in (await client.list_tools()).tools}

    return anyio.run(names)


# ----------------------------------------------------------------------------------------------- Inspector
class Inspector:
    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.base = [host_tool("inspector"), "--cli", "-e", f"SMS_MCP_DATA_DIR={data_dir}", "-e",
                     "SMS_MCP_SANDBOX_RECEIPT_DELAY=0", "-e", "SMS_MCP_BACKEND=sandbox", SERVER]
        self.env = env

    def __call__(self, *args: str, ok: bool = True) -> dict[str, Any]:
        proc = run([*self.base, *args, "--format", "json", "-q"], env=self.env, ok=ok)
        return json.loads(proc.stdout)

    def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        out = self("--method", "tools/call", "--tool-name", name, "--tool-args-json", json.dumps(arguments))
        result = out["result"]
        assert result["isError"] is False, result
        return result["structuredContent"]


def test_inspector_lists_tools_and_calls_every_read_tool(tmp_path: Path) -> None:
    inspector = Inspector(tmp_path)
    listed = inspector("--method", "tools/list")
    tools = {t["name"]: t for t in listed["result"]["tools"]}
    assert set(tools) == tool_names()
    assert tools["send_sms"]["annotations"]["destructiveHint"] is True
    assert tools["list_signs"]["annotations"]["readOnlyHint"] is True
    signs = inspector.call("list_signs", {})
    assert signs["backend"] == "sandbox" and {s["sign_name"] for s in signs["signs"]} >= {"速通科技"}
    templates = inspector.call("list_templates", {"status": "all"})
    assert len(templates["templates"]) == 9
    stats = inspector.call("query_statistics", {"start_date": "20261101", "end_date": "20261125"})
    assert stats["scope"] == "domestic"
    details = inspector.call("query_details", {"phone_number": "13712345678"})
    assert details["records"] == []
    quals = inspector.call("qualification", {"group_id": 10001})
    assert quals["detail"]["status"] == "approved" and "*" in quals["detail"]["legal_person_id_number"]
    resources = inspector("--method", "resources/list")
    assert {r["uri"] for r in resources["result"]["resources"]} == {"sms://signs", "sms://templates"}
    prompt = inspector("--method", "prompts/get", "--prompt-name", "send_verification_code",
                       "--prompt-args", "phone_number=13712345678")
    assert "confirm_token" in prompt["result"]["messages"][0]["content"]["text"]


def test_inspector_two_step_send(tmp_path: Path) -> None:
    inspector = Inspector(tmp_path)
    plan = inspector.call("send_sms", SEND)
    assert plan["status"] == "pending_confirmation" and plan["confirm_token"]
    sent = inspector.call("send_sms", {**SEND, "confirm_token": plan["confirm_token"]})  # a new server process
    assert sent["status"] == "accepted" and sent["biz_id"]
    again = inspector.call("send_sms", {**SEND, "confirm_token": plan["confirm_token"]})
    assert again["replayed"] is True and again["biz_id"] == sent["biz_id"]
    refused = inspector("--method", "tools/call", "--tool-name", "send_sms", "--tool-args-json",
                        json.dumps({**SEND, "confirm_token": "smt_forged"}), ok=False)
    assert refused["result"]["isError"] is True and "UNKNOWN_TOKEN" in refused["result"]["content"][0]["text"]
    report = inspector.call("query_details", {"plan_id": plan["plan_id"]})
    assert report["summary"]["delivered"] == 1


# ----------------------------------------------------------------------------------------------- mcporter
def mcporter(data_dir: Path, name: str, arguments: dict[str, Any], ok: bool = True,
             base_env: dict[str, str] | None = None) -> Any:
    env = {**(base_env or os.environ), "SMS_MCP_DATA_DIR": str(data_dir), "SMS_MCP_SANDBOX_RECEIPT_DELAY": "0",
           "SMS_MCP_BACKEND": "sandbox", "HOME": str(data_dir)}
    proc = run([host_tool("mcporter"), "call", "--stdio", SERVER, name, "--args", json.dumps(arguments),
                "--output", "json"], env=env, ok=ok)
    return json.loads(proc.stdout) if ok else proc


def test_mcporter_read_and_two_step_send(tmp_path: Path) -> None:
    signs = mcporter(tmp_path, "list_signs", {})
    assert signs["backend"] == "sandbox" and signs["total_count"] == 3
    plan = mcporter(tmp_path, "send_sms", SEND)
    assert plan["status"] == "pending_confirmation"
    sent = mcporter(tmp_path, "send_sms", {**SEND, "confirm_token": plan["confirm_token"]})
    assert sent["status"] == "accepted"
    changed = mcporter(tmp_path, "send_sms", {**SEND, "phone_numbers": ["13712345679"],
                                              "confirm_token": plan["confirm_token"]}, ok=False)
    assert changed.returncode == 1 and "TOKEN_ARGUMENT_MISMATCH" in changed.stdout + changed.stderr


def test_inspector_and_mcporter_on_node24(tmp_path: Path) -> None:
    """CI's Node is 20 (below what both packages declare); they are also run on the Node 24 OpenClaw uses."""
    node24 = located("SMS_MCP_NODE24")
    env = {**os.environ, "PATH": f"{node24.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    assert run(["node", "--version"], env=env).stdout.startswith("v24.")  # the tools' `#!/usr/bin/env node`
    inspector = Inspector(tmp_path / "inspector", env)
    assert {t["name"] for t in inspector("--method", "tools/list")["result"]["tools"]} == tool_names()
    plan = inspector.call("send_sms", SEND)
    assert inspector.call("send_sms", {**SEND, "confirm_token": plan["confirm_token"]})["status"] == "accepted"
    plan = mcporter(tmp_path / "mcporter", "send_sms", SEND, base_env=env)
    sent = mcporter(tmp_path / "mcporter", "send_sms", {**SEND, "confirm_token": plan["confirm_token"]}, base_env=env)
    assert sent["status"] == "accepted"


# ----------------------------------------------------------------------------------------------- MCPB, SKILL.md
def test_manifest_validates_and_matches_the_server() -> None:
    run([host_tool("mcpb"), "validate", str(REPO / "manifest.json")])
    manifest = json.loads((REPO / "manifest.json").read_text())
    version = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert version and manifest["version"] == version.group(1)
    assert {t["name"] for t in manifest["tools"]} == tool_names()
    assert all(t["description"] for t in manifest["tools"])
    user_config = manifest["user_config"]
    assert user_config["access_key_id"]["sensitive"] and user_config["access_key_secret"]["sensitive"]
    env = manifest["server"]["mcp_config"]["env"]
    for variable in ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_REGION_ID",
                     "SMS_MCP_BACKEND", "SMS_MCP_ALLOWED_NUMBERS", "SMS_MCP_CONFIRM_MODE"):
        key = re.fullmatch(r"\$\{user_config\.(\w+)\}", env[variable])
        assert key and key.group(1) in user_config, variable


def test_skill_md_frontmatter_declares_what_it_uses() -> None:
    """The skill is usable without AccessKeys: nothing it requires is a credential (OpenClaw hides a skill whose
    `requires.env` is unmet), while the credentials are still declared, as optional, for ClawHub."""
    text = SKILL.read_text()
    front = text.split("---")[1]
    assert re.search(r"^name: sms-mcp$", front, re.M) and SKILL.parent.name == "sms-mcp"
    description = re.search(r"^description: (.+)$", front, re.M)
    assert description and len(description.group(1)) < 160
    metadata = json.loads(front.split("metadata:", 1)[1])
    openclaw = metadata["openclaw"]
    assert set(openclaw["requires"]) <= {"bins", "anyBins", "config"}, "a required env var hides the skill"
    assert "sms-mcp" in openclaw["requires"]["anyBins"] and openclaw["install"][0]["kind"] == "uv"
    declared = {v["name"]: v for v in openclaw["envVars"]}
    assert set(declared) == {"ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET"}
    assert all(v["required"] is False and v["description"] for v in declared.values())
    body = text.split("---", 2)[2]
    for must in ("list_signs", "confirm_token", "openclaw mcp add", "query_details", "not delivered", "sandbox"):
        assert must.lower() in body.lower(), must
    # The credential-free registration comes first.
    assert body.index("openclaw mcp add sms --command sms-mcp") < body.index("ALIBABA_CLOUD_ACCESS_KEY_ID=")


def test_the_skill_folder_holds_only_the_skill() -> None:
    """`openclaw skills install ./skills/sms-mcp` copies the folder: it must not drag the checkout along."""
    files = [p for p in SKILL.parent.rglob("*") if p.is_file()]
    assert [p.name for p in files] == ["SKILL.md"]
    assert not (REPO / "SKILL.md").exists()
    assert "skills/" in (REPO / ".mcpbignore").read_text().split()


def test_readme_host_commands_pin_the_versions_ci_runs() -> None:
    """Every `npx PKG` / `npm install -g PKG` in the README names a version, and it is the one .ci/run installs and
    the host tests run (an unpinned npx on an older Node silently installs an old release)."""
    text = (REPO / "README.md").read_text()
    readme = "\n".join(re.findall(r"```.*?```|`[^`\n]+`", text, re.S))  # the commands: code blocks and spans
    ci = (REPO / ".ci" / "run").read_text()
    pinned_in_ci = dict(re.findall(r"\s((?:@[\w.-]+/)?[\w.-]+)@(\d[\w.-]*)", ci))
    commands = re.findall(r"(?:npx|npm install -g) ((?:@[\w.-]+/)?[\w.-]+)(@[\w.-]+)?", readme)
    assert {name for name, _ in commands} >= {"openclaw", "@anthropic-ai/claude-code", "mcporter",
                                              "@modelcontextprotocol/inspector", "@anthropic-ai/mcpb"}
    for name, version in commands:
        assert version, f"README: {name} is not pinned"
        assert pinned_in_ci.get(name) == version[1:], (name, version, pinned_in_ci.get(name))
