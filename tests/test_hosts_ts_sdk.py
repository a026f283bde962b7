"""The TypeScript MCP SDK (@modelcontextprotocol/sdk 1.32.2, the client most Node hosts embed) as a client of
`sms-mcp serve` over stdio: both steps of a send, a tampered token, and elicitation answered accept / decline /
cancel by a "human" in the client. The client runs in Node (tests/ts_sdk_client.cjs); this test drives it one
JSON line at a time and checks the sandbox's own records.
"""

from __future__ import annotations

import json
import os
import re
import select
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from host_tools import SERVER, clean_env, located, system_node

SEND = {"phone_numbers": ["13712345678", "13712345679"], "sign_name": "速通科技", "template_code": "SMS_900000002",
        "template_param": {"name": "王女士", "order_no": "A100", "date": "周三"}}
DRIVER = Path(__file__).parent / "ts_sdk_client.cjs"


class TsClient:
    def __init__(self, proc: subprocess.Popen[str], data_dir: Path) -> None:
        self.proc = proc
        self.data_dir = data_dir
        self.hello = self._read()
        assert self.hello.get("ready"), self.hello

    def _read(self, timeout: float = 120) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, "the TS SDK client did not answer in time"
        line = self.proc.stdout.readline()
        assert line, f"the TS SDK client exited (rc={self.proc.poll()})"
        return json.loads(line)

    def _send(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command, ensure_ascii=False) + "\n")
        self.proc.stdin.flush()
        answer = self._read()
        assert answer["ok"], answer
        return answer

    def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        return self._send({"call": tool, "arguments": arguments})

    def ok(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        answer = self.call(tool, arguments)
        assert answer["isError"] is False, answer["text"]
        return answer["structured"]

    def refused(self, tool: str, arguments: dict[str, Any]) -> str:
        answer = self.call(tool, arguments)
        assert answer["isError"] is True, answer
        return answer["text"]

    def human_answers(self, action: str, content: dict[str, Any] | None = None) -> None:
        self._send({"elicit": action, "content": content})

    def elicitations(self) -> list[str]:
        return self._send({"peek": True})["elicitations"]

    def sent(self) -> list[str]:
        db = self.data_dir / "sandbox.sqlite3"
        with sqlite3.connect(db) as conn:
            return [row[0] for row in conn.execute("SELECT phone_number FROM messages ORDER BY id")]

    def plan_state(self, plan_id: str) -> str:
        with sqlite3.connect(self.data_dir / "ledger.sqlite3") as conn:
            return conn.execute("SELECT state FROM plans WHERE plan_id = ?", (plan_id,)).fetchone()[0]


@contextmanager
def ts_client(tmp_path: Path, confirm_mode: str = "token") -> Iterator[TsClient]:
    node_modules = located("SMS_MCP_HOST_TOOLS").parent
    if not (node_modules / "@modelcontextprotocol" / "sdk").exists():
        pytest.fail(f"@modelcontextprotocol/sdk missing under {node_modules}: .ci/run installs it")
    data_dir = tmp_path / "data"
    server_env = clean_env(tmp_path, SMS_MCP_DATA_DIR=str(data_dir), SMS_MCP_BACKEND="sandbox",
                           SMS_MCP_SANDBOX_RECEIPT_DELAY="0", SMS_MCP_CONFIRM_MODE=confirm_mode)
    env = {**os.environ, "SMS_MCP_SERVER_ENV": json.dumps(server_env)}
    proc = subprocess.Popen([system_node(), str(DRIVER), str(node_modules), SERVER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        yield TsClient(proc, data_dir)
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({"close": True}) + "\n")
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def tampered(token: str) -> list[str]:
    """Tokens one edit away from the real one: last character changed, truncated, extended, prefix only."""
    last = "A" if token[-1] != "A" else "B"
    return [token[:-1] + last, token[:-1], token + "x", token.split("_")[0] + "_"]


def test_ts_sdk_client_both_steps_and_tampered_tokens(tmp_path: Path) -> None:
    with ts_client(tmp_path) as client:
        assert client.hello["sdk"] == "1.32.2" and client.hello["server"]["name"] == "sms-mcp"
        signs = client.ok("list_signs", {})
        assert signs["backend"] == "sandbox" and {s["sign_name"] for s in signs["signs"]} >= {"速通科技"}
        plan = client.ok("send_sms", SEND)
        assert plan["status"] == "pending_confirmation" and plan["confirm_token"].startswith("smt_")
        for forged in tampered(plan["confirm_token"]):
            text = client.refused("send_sms", {**SEND, "confirm_token": forged})
            assert "UNKNOWN_TOKEN" in text and plan["confirm_token"] not in text, text
        assert client.sent() == []  # no forged token sent anything
        sent = client.ok("send_sms", {**SEND, "confirm_token": plan["confirm_token"]})
        assert sent["status"] == "accepted" and sent["plan_id"] == plan["plan_id"]
        again = client.ok("send_sms", {**SEND, "confirm_token": plan["confirm_token"]})
        assert again["replayed"] is True and again["biz_id"] == sent["biz_id"]
        assert sorted(client.sent()) == ["13712345678", "13712345679"]  # one send, both recipients, once
        assert client.elicitations() == []  # token mode asks nobody


def test_ts_sdk_client_elicitation_accept_sends(tmp_path: Path) -> None:
    with ts_client(tmp_path, "elicit") as client:
        plan = client.ok("send_sms", SEND)
        client.human_answers("accept", {"send": True})
        sent = client.ok("send_sms", {**SEND, "confirm_token": plan["confirm_token"]})
        assert sent["status"] == "accepted"
        asked = client.elicitations()
        assert len(asked) == 1 and "137****5678" in asked[0] and "13712345678" not in asked[0]
        assert sorted(client.sent()) == ["13712345678", "13712345679"]


def test_ts_sdk_client_elicitation_decline_cancels_the_plan(tmp_path: Path) -> None:
    with ts_client(tmp_path, "elicit") as client:
        plan = client.ok("send_sms", SEND)
        client.human_answers("decline")
        result = client.ok("send_sms", {**SEND, "confirm_token": plan["confirm_token"]})
        assert result["status"] == "cancelled" and client.sent() == []
        assert client.plan_state(plan["plan_id"]) == "cancelled"
        client.human_answers("accept", {"send": True})  # a later yes cannot revive it
        assert "PLAN_CANCELLED" in client.refused("send_sms", {**SEND, "confirm_token": plan["confirm_token"]})
        assert client.sent() == []


def test_ts_sdk_client_elicitation_cancel_leaves_the_plan_awaiting_confirmation(tmp_path: Path) -> None:
    """Issue 13, finding 4: *cancel* (dismissed, no choice made; what headless hosts answer) is not a "no". Nothing
    is sent, the plan keeps waiting, the result says the human did not answer, and the same token works later."""
    with ts_client(tmp_path, "elicit") as client:
        plan = client.ok("send_sms", SEND)
        client.human_answers("cancel")
        answer = client.call("send_sms", {**SEND, "confirm_token": plan["confirm_token"]})
        said = json.dumps(answer["structured"], ensure_ascii=False) if answer["structured"] else answer["text"]
        assert re.search(r"(did not|didn't|no) (answer|respon)|not answered", said, re.I), said
        assert client.sent() == []
        assert client.plan_state(plan["plan_id"]) != "cancelled"
        client.human_answers("accept", {"send": True})
        sent = client.ok("send_sms", {**SEND, "confirm_token": plan["confirm_token"]})
        assert sent["status"] == "accepted" and sorted(client.sent()) == ["13712345678", "13712345679"]
