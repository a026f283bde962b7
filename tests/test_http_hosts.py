"""Real clients over HTTP against a real ``sms-mcp serve --http``: the Inspector CLI (``--transport http
--header``) and Claude Code (``claude mcp add --transport http … --header``, then ``claude mcp list``). The Python
SDK's HTTP client is exercised by every other test_http_* module. The Node tools are pinned and installed by
.ci/run into .ci/node; elsewhere point SMS_MCP_HOST_TOOLS (and SMS_MCP_CLAUDE) at them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from http_support import SMS_ARGS, Gateway, api_key_entry, gateway_env

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes")

REPO = Path(__file__).resolve().parent.parent
TOOLS = Path(os.environ.get("SMS_MCP_HOST_TOOLS", REPO / ".ci" / "node" / "node_modules" / ".bin"))
SENDER_KEY = "smsk_" + "s" * 43
READER_KEY = "smsk_" + "r" * 43


def tool(path: Path) -> str:
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} missing: .ci/run installs the hosts' tools")
        pytest.skip(f"{path.name} not installed (set SMS_MCP_HOST_TOOLS or run .ci/run)")
    return str(path)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("gw-hosts")
    env = gateway_env(tmp, None, SMS_MCP_API_KEYS=",".join([api_key_entry("sender", SENDER_KEY),
                                                           api_key_entry("reader", READER_KEY, "sms.read")]))
    gw = Gateway(tmp, env)
    try:
        yield gw.wait_ready()
    finally:
        gw.stop()


def _isolated(tmp: Path) -> dict[str, str]:
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMS_MCP_", "ALIBABA_CLOUD_", "ANTHROPIC_"))}
    env.update(HOME=str(home), CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1", DISABLE_AUTOUPDATER="1",
               NO_PROXY="127.0.0.1,localhost")
    return env


def run(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, cwd=cwd,
                          stdin=subprocess.DEVNULL)


def test_inspector_cli_over_http(gateway: Gateway, tmp_path: Path) -> None:
    inspector = tool(TOOLS / "inspector")
    env = _isolated(tmp_path)

    def call(key: str, *args: str) -> dict[str, object]:
        proc = run([inspector, "--cli", gateway.url, "--transport", "http", "--header", f"Authorization: Bearer {key}",
                    *args, "--format", "json", "-q"], env, tmp_path)
        assert proc.stdout.strip(), proc.stderr[-2000:]
        return json.loads(proc.stdout)

    listed = call(SENDER_KEY, "--method", "tools/list")
    assert {"list_signs", "send_sms", "query_details"} <= {t["name"] for t in listed["result"]["tools"]}  # type: ignore[index, union-attr]
    signs = call(READER_KEY, "--method", "tools/call", "--tool-name", "list_signs")
    assert signs["result"]["isError"] is False and signs["result"]["structuredContent"]["signs"]  # type: ignore[index]
    refused = call(READER_KEY, "--method", "tools/call", "--tool-name", "send_sms",
                   "--tool-args-json", json.dumps(SMS_ARGS, ensure_ascii=False))
    assert refused["result"]["isError"] is True  # type: ignore[index]
    assert "[sms_mcp.INSUFFICIENT_SCOPE]" in refused["result"]["content"][0]["text"]  # type: ignore[index]
    # A wrong key gets no tools: the Inspector reports the 401 (it would start OAuth on a terminal).
    proc = run([inspector, "--cli", gateway.url, "--transport", "http", "--header",
                "Authorization: Bearer smsk_wrong", "--method", "tools/list", "--format", "json", "-q"], env,
               tmp_path)
    assert '"tools"' not in proc.stdout


def test_claude_code_connects_over_http_with_a_bearer_header(gateway: Gateway, tmp_path: Path) -> None:
    claude = tool(Path(os.environ["SMS_MCP_CLAUDE"]) if os.environ.get("SMS_MCP_CLAUDE") else TOOLS / "claude")
    env = _isolated(tmp_path)
    project = tmp_path / "project"
    project.mkdir()
    for name, key in (("sms", SENDER_KEY), ("sms-bad-key", "smsk_wrong")):
        added = run([claude, "mcp", "add", "--transport", "http", name, gateway.url, "--header",
                     f"Authorization: Bearer {key}"], env, project)
        assert added.returncode == 0, added.stderr[-2000:]
    listed = run([claude, "mcp", "list"], env, project)
    lines = {line.split(":", 1)[0]: line for line in listed.stdout.splitlines() if ": http" in line}
    assert "✔ Connected" in lines["sms"], listed.stdout
    assert "✘" in lines["sms-bad-key"] and "✔" not in lines["sms-bad-key"], listed.stdout
    assert SENDER_KEY not in listed.stdout
