"""Raw protocol abuse: malformed tools/call requests, unbounded echoes, and values that are not what was typed."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp.types import CallToolResult, TextContent
from mcp_harness import box

from sms_mcp.protocol_guards import (
    ECHO_LIMIT,
    RESULT_TEXT_LIMIT,
    answer_for_unreadable_request,
    bound_result,
    bounded,
    bounded_names,
)

ARGS = {
    "phone_numbers": ["13912345678"],
    "sign_name": "速通科技",
    "template_code": "SMS_900000002",
    "template_param": {"name": "王女士", "order_no": "A100", "date": "周三"},
}


class RawSession:
    """`sms-mcp serve` as a subprocess, spoken to line by line (2025-11-25 handshake)."""

    def __init__(self, tmp_path: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ALIBABA_CLOUD_", "SMS_MCP_"))}
        env.update({"SMS_MCP_DATA_DIR": str(tmp_path / "data"), "SMS_MCP_BACKEND": "sandbox", "HOME": str(tmp_path),
                    "SMS_MCP_SANDBOX_RECEIPT_DELAY": "0"})
        self.proc = subprocess.Popen([sys.executable, "-m", "sms_mcp", "serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.next_id = 0
        init = self.request("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                           "clientInfo": {"name": "raw", "version": "1"}})
        assert "result" in init, init
        self.notify("notifications/initialized")

    def _write(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(message) + "\n").encode())
        self.proc.stdin.flush()

    def notify(self, method: str) -> None:
        self._write({"jsonrpc": "2.0", "method": method})

    def request(self, method: str, params: Any) -> dict[str, Any]:
        self.next_id += 1
        self._write({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            assert line, "the server closed stdout"
            answer = json.loads(line)
            if answer.get("id") == self.next_id:
                return answer

    def close(self) -> str:
        """End the session (stdin closed); the server's stderr."""
        try:
            _, err = self.proc.communicate(timeout=20)  # closes stdin: the session ends
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
        return err.decode("utf-8", "replace")


def test_malformed_tools_call_gets_a_json_rpc_error_and_no_traceback(tmp_path: Path) -> None:
    session = RawSession(tmp_path)
    try:
        for params in ({"name": {"a": 1}, "arguments": {}}, {"name": ["send_sms"], "arguments": {}},
                       {"name": None}, {"name": 7, "arguments": []}, {"name": "send_sms", "arguments": "x"},
                       {"name": "send_sms", "arguments": ["a"]}, ["send_sms"], "send_sms", {}):
            answer = session.request("tools/call", params)
            assert "error" in answer, (params, answer)
            assert answer["error"]["code"] == -32602, (params, answer)  # invalid params, not 0
            assert len(answer["error"]["message"]) < 2000
        # The session survives every one of them.
        listed = session.request("tools/call", {"name": "list_signs", "arguments": {}})
        assert listed["result"]["isError"] is False
    finally:
        stderr = session.close()
    assert "Traceback" not in stderr and "TypeError" not in stderr, stderr[-3000:]


async def test_twenty_thousand_unknown_arguments_give_a_bounded_answer(tmp_path: Path) -> None:
    async with box(tmp_path) as b:
        text = await b.refused("send_sms", {**ARGS, **{f"extra_{i}": i for i in range(20_000)}})
        assert "[sms_mcp.UNKNOWN_ARGUMENT]" in text and "20,000 in all" in text
        assert len(text) < 1000
        text = await b.refused("list_signs", {"k" * 1_000_000: 1})
        assert "[sms_mcp.UNKNOWN_ARGUMENT]" in text and len(text) < 1000 and "1,000,000 characters" in text
        assert b.sent() == []


async def test_a_megabyte_template_param_key_is_echoed_bounded(tmp_path: Path) -> None:
    async with box(tmp_path) as b:
        huge = "变" * 1_000_000
        text = await b.refused("send_sms", {**ARGS, "template_param": {**ARGS["template_param"], huge: "x"}})
        assert "INVALID_JSON_PARAM" in text and len(text) < 1000 and "1,000,000 characters" in text
        many = {f"v{i}": "x" for i in range(5000)}
        text = await b.refused("send_sms", {**ARGS, "template_param": {**ARGS["template_param"], **many}})
        assert len(text) < 1000 and "5,000 in all" in text


async def test_an_unknown_tool_name_is_echoed_bounded(tmp_path: Path) -> None:
    async with box(tmp_path) as b:
        text = await b.refused("x" * 500_000, {})
        assert "Unknown tool" in text and len(text) < 1000


@pytest.mark.parametrize("literal", ["null", " null ", "NULL"])
async def test_the_text_null_as_confirm_token_does_not_prepare_a_new_plan(tmp_path: Path, literal: str) -> None:
    async with box(tmp_path) as b:
        plan = await b.ok("send_sms", ARGS)
        result = await b.client.call_tool("send_sms", {**ARGS, "confirm_token": literal})
        text = "".join(getattr(c, "text", "") for c in result.content)
        if literal.strip() == "null":  # what JSON pre-parsing would have turned into None
            assert result.is_error and "[sms_mcp.LITERAL_NULL]" in text and "confirm_token" in text
        else:  # any other text is just a wrong token
            assert result.is_error and "UNKNOWN_TOKEN" in text
        assert b.sent() == []
        with __import__("sqlite3").connect(tmp_path / "ledger.sqlite3") as db:
            assert db.execute("SELECT COUNT(*) FROM plans").fetchone()[0] == 1  # no second plan
        sent = await b.ok("send_sms", {**ARGS, "confirm_token": plan["confirm_token"]})
        assert sent["status"] == "accepted"


async def test_the_text_null_as_out_id_or_plan_id_is_refused(tmp_path: Path) -> None:
    async with box(tmp_path) as b:
        assert "[sms_mcp.LITERAL_NULL] send_sms: out_id" in await b.refused("send_sms", {**ARGS, "out_id": "null"})
        assert "LITERAL_NULL" in await b.refused("query_details", {"plan_id": "null"})
        assert (await b.ok("send_sms", {**ARGS, "out_id": "nullish"}))["status"] == "pending_confirmation"


def test_bounded_helpers() -> None:
    assert bounded("abc") == "abc"
    long = bounded("a" * 10_000)
    assert len(long) < ECHO_LIMIT + 40 and "10,000 characters" in long
    names = bounded_names([f"name{i}" for i in range(1000)])
    assert len(names) < ECHO_LIMIT + 60 and "1,000 in all" in names
    assert bounded_names(["a", "b"]) == "a, b"


async def test_oversized_values_come_back_bounded(tmp_path: Path) -> None:
    async with box(tmp_path) as b:
        for args in ({**ARGS, "sign_name": "s" * 1_000_000}, {**ARGS, "phone_numbers": ["1" * 1_000_000]},
                     {**ARGS, "phone_numbers": ["1"] * 200_000}, {**ARGS, "template_param": {"name": "x" * 1_000_000}},
                     {**ARGS, "template_code": "<" * 100_000}, {**ARGS, "out_id": "o" * 1_000_000}):
            text = await b.refused("send_sms", args)
            assert len(text) < 1000, text[:200]
        assert b.sent() == []


def test_unreadable_requests_are_answered_and_everything_else_is_left_to_the_sdk() -> None:
    answer = answer_for_unreadable_request('{"jsonrpc":"2.0","id":5,"method":"tools/call","params":["x"]}')
    assert answer is not None and answer.id == 5 and answer.error.code == -32602
    answer = answer_for_unreadable_request('{"jsonrpc":"1.0","id":"a","method":"ping"}')
    assert answer is not None and answer.id == "a" and answer.error.code == -32600
    for line in ('{"jsonrpc":"2.0","id":1,"method":"ping"}', "not json", "[1, 2]", '{"method":"x","params":[1]}',
                 '{"jsonrpc":"2.0","id":true,"method":"ping","params":[]}', '{"id": 3}'):
        assert answer_for_unreadable_request(line) is None, line


def test_bound_result_cuts_only_long_error_texts() -> None:
    long = CallToolResult(content=[TextContent(type="text", text="e" * 100_000)], is_error=True)
    cut = bound_result(long)
    assert len(cut.content[0].text) < RESULT_TEXT_LIMIT + 50 and "100,000 characters" in cut.content[0].text
    fine = CallToolResult(content=[TextContent(type="text", text="e" * 100_000)], is_error=False)
    assert bound_result(fine) is fine


def test_lone_surrogates_in_raw_arguments_are_refused_and_the_session_lives(tmp_path: Path) -> None:
    """JSON may carry a lone surrogate ("\\ud800") where UTF-8 has none: in a key, a value, a name. Every such call
    is refused (a tool error or a JSON-RPC error), nothing is stored or sent, and no traceback is printed."""
    bad = "x\ud800"
    cases = [
        {**ARGS, "template_param": {**ARGS["template_param"], bad: "1"}},
        {**ARGS, "template_param": {**ARGS["template_param"], "name": bad}},
        {**ARGS, "sign_name": bad},
        {**ARGS, "phone_numbers": [bad]},
        {**ARGS, "out_id": bad},
        {**ARGS, "confirm_token": "smt_" + bad},
        {**ARGS, bad: "1"},
    ]
    session = RawSession(tmp_path)
    try:
        for arguments in cases:
            answer = session.request("tools/call", {"name": "send_sms", "arguments": arguments})
            refused = "error" in answer or answer["result"]["isError"] is True
            assert refused, answer
            text = json.dumps(answer, ensure_ascii=False)
            assert "Traceback" not in text and "surrogates not allowed" not in text and len(text) < 4000, text
        honest = session.request("tools/call", {"name": "send_sms", "arguments": ARGS})
        assert honest["result"]["isError"] is False, honest
    finally:
        stderr = session.close()
    assert "Traceback" not in stderr, stderr[-3000:]
    with sqlite3.connect(tmp_path / "data" / "sandbox.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0
