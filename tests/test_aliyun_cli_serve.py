"""The AI-mode lifecycle through a real ``sms-mcp serve`` process (``SMS_MCP_BACKEND=cli``), on every exit path.

Each test drives the server over stdio with raw JSON-RPC (initialize 2025-11-25, initialized, tools/list) so it
knows the server is serving before it pulls the trigger, then checks that ``~/.aliyun/ai-mode.json`` ends with
``"enabled": false``, that the stand-in logged ``configure ai-mode disable``, and that the process left within 3 s.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aliyun_standin import REPO_ROOT, Standin, setup

from sms_mcp.wire.base import AGENT_USER_AGENT

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

EXIT_WITHIN = 3.0


class Server:
    """``python -m sms_mcp serve`` with a line reader on stdout."""

    def __init__(self, standin: Standin, tmp_path: Path, **env: str) -> None:
        self.standin = standin
        self.stderr_path = tmp_path / "serve.stderr"
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sms_mcp", "serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=REPO_ROOT,
            env={
                **standin.env,
                "SMS_MCP_BACKEND": "cli",
                "SMS_MCP_DATA_DIR": str(tmp_path / "data"),
                "SMS_MCP_ALIYUN_BIN": str(standin.bin),
                "SMS_MCP_LOG_LEVEL": "INFO",
                **env,
            },
        )
        # Read in the calling thread with select(): no reader thread may hold stdout when a test closes it.
        self._buffer = b""

    def _next_line(self, deadline: float) -> bytes | None:
        """One stdout line; b"" at EOF; None at the deadline."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return b""
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(message) + "\n").encode())
        self.proc.stdin.flush()

    def response(self, request_id: int, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            line = self._next_line(deadline)
            if line is None:
                raise AssertionError(f"no response to request {request_id}; stderr:\n{self.stderr()}") from None
            if not line:
                raise AssertionError(f"stdout closed before response {request_id}; stderr:\n{self.stderr()}")
            message = json.loads(line)
            if message.get("id") == request_id:
                return message

    def handshake(self) -> list[str]:
        """initialize + initialized + tools/list; returns the tool names (the server is serving)."""
        self.send(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "test", "version": "0"},
                },
            }
        )
        init = self.response(1)
        assert init["result"]["protocolVersion"] == "2025-11-25", init
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        self.send({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
        tools = [tool["name"] for tool in self.response(2)["result"]["tools"]]
        assert tools
        return tools

    def wait_exit(self) -> int:
        try:
            code = self.proc.wait(timeout=EXIT_WITHIN)
        except subprocess.TimeoutExpired as timeout:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"sms-mcp serve did not exit within {EXIT_WITHIN}s; stderr:\n{self.stderr()}"
            ) from timeout
        return code

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        self._stderr.close()


@pytest.fixture
def standin(tmp_path: Path) -> Standin:
    return setup(tmp_path)


@pytest.fixture
def serve(standin: Standin, tmp_path: Path):  # type: ignore[no-untyped-def]
    servers: list[Server] = []

    def start(**env: str) -> Server:
        server = Server(standin, tmp_path, **env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def _disables(standin: Standin) -> list[dict[str, Any]]:
    return [r for r in standin.records() if r["argv"] == ["configure", "ai-mode", "disable"]]


def assert_cleaned_up(standin: Standin, server: Server) -> None:
    assert standin.ai_mode() == {"enabled": False, "user_agent": AGENT_USER_AGENT}, server.stderr()
    assert len(_disables(standin)) == 1, server.stderr()
    for record in standin.records():
        assert record["stdin"] == "devnull" and record["env"]["ALIBABA_CLOUD_CLI_AI_MODE"] == "1"


def _serving(standin: Standin, server: Server) -> None:
    tools = server.handshake()
    assert "send_sms" in tools
    assert standin.ai_mode()["enabled"] is True
    assert _disables(standin) == []


def test_stdin_eof(standin: Standin, serve) -> None:  # type: ignore[no-untyped-def]
    server = serve()
    _serving(standin, server)
    # One real tool call goes through the CLI, compliant, while serving.
    server.send({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "list_signs", "arguments": {}}})
    result = server.response(3)["result"]
    assert not result.get("isError"), result
    assert "速通科技" in json.dumps(result, ensure_ascii=False)
    (call,) = [r for r in standin.records() if r["argv"][:1] == ["dysmsapi"]]
    assert call["argv"][1] == "query-sms-sign-list" and "--cli-ai-mode" in call["argv"]
    assert call["argv"][call["argv"].index("--user-agent") + 1] == AGENT_USER_AGENT
    assert server.proc.stdin is not None
    server.proc.stdin.close()
    assert server.wait_exit() == 0
    assert_cleaned_up(standin, server)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal(standin: Standin, serve, signum: int) -> None:  # type: ignore[no-untyped-def]
    server = serve()
    _serving(standin, server)
    server.proc.send_signal(signum)
    server.wait_exit()
    assert_cleaned_up(standin, server)


def test_second_signal_during_shutdown(standin: Standin, serve) -> None:  # type: ignore[no-untyped-def]
    # `disable` takes a while, so the second signal lands while the cleanup is running.
    server = serve(STANDIN_HANG="disable", STANDIN_HANG_SECONDS="0.7")
    _serving(standin, server)
    server.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + EXIT_WITHIN
    while not _disables(standin) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _disables(standin), "the cleanup never started"
    server.proc.send_signal(signal.SIGINT)
    server.wait_exit()
    assert_cleaned_up(standin, server)


def test_startup_failure_after_ai_mode_enabled(standin: Standin, serve) -> None:  # type: ignore[no-untyped-def]
    # Keep stdin open and silent: the failure alone must end the process.
    server = serve(STANDIN_FAIL="set-user-agent")
    assert server.wait_exit() != 0
    assert [r["argv"][2] for r in standin.records() if r["argv"][:2] == ["configure", "ai-mode"]] == [
        "enable",
        "set-user-agent",
        "disable",
    ]
    assert standin.ai_mode()["enabled"] is False
    assert "set-user-agent" in server.stderr()


def test_unhandled_error_while_serving(standin: Standin, serve) -> None:  # type: ignore[no-untyped-def]
    """The client stops reading (closes its end of our stdout) but keeps stdin open: the next response cannot
    be written. No tool result can carry that error: it is unhandled by construction."""
    server = serve()
    _serving(standin, server)
    assert server.proc.stdout is not None
    server.proc.stdout.close()
    server.send({"jsonrpc": "2.0", "id": 3, "method": "tools/list"})
    assert server.wait_exit() != 0
    assert_cleaned_up(standin, server)
