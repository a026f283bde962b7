"""SIGTERM on a real ``sms-mcp serve --http``: a send in flight finishes and its caller gets the answer; a send
longer than the grace is cut off at the bound and is reconciled afterwards, never resent; a draining replica
refuses new tool calls and fails readiness."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

import anyio
import httpx2
import pytest
from http_support import SMS_ARGS, Gateway, gateway_env, mcp_client

from sms_mcp.config import Settings
from sms_mcp.emulator.http import EmulatorServer
from sms_mcp.http.app import build_gateway
from sms_mcp.wire.sandbox import SandboxTransport

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _sigterm_once_alibaba_has_the_call(gw: Gateway, emu: EmulatorServer) -> threading.Thread:
    """SIGTERM as soon as the emulator has taken the delayed SendSms (its one-shot fault is consumed then)."""

    def fire() -> None:
        deadline = time.monotonic() + 60
        while any(f["kind"] == "delay_before" for f in emu.faults.snapshot()) and time.monotonic() < deadline:
            time.sleep(0.02)
        gw.proc.send_signal(signal.SIGTERM)

    thread = threading.Thread(target=fire, daemon=True)
    thread.start()
    return thread


async def test_in_flight_send_finishes_on_sigterm(tmp_path: Path, emu: EmulatorServer) -> None:
    env = gateway_env(tmp_path, emu, SMS_MCP_SHUTDOWN_GRACE_SECONDS="15", SMS_MCP_READ_TIMEOUT="30",
                      SMS_MCP_RECONCILE_GRACE_SECONDS="40")
    gw = Gateway(tmp_path, env).wait_ready()
    try:
        before = len(emu.core.messages())
        async with mcp_client(gw.url, None, mode="auto") as client:
            plan = await client.call_tool("send_sms", SMS_ARGS)
            emu.faults.add("delay_before", action="SendSms", seconds=2, count=1)
            _sigterm_once_alibaba_has_the_call(gw, emu)
            started = time.monotonic()
            sent = await client.call_tool("send_sms", {**SMS_ARGS, "confirm_token":
                                                       plan.structured_content["confirm_token"]})  # type: ignore[index]
        assert not sent.is_error, sent.content
        assert sent.structured_content["status"] in ("accepted", "sent")  # type: ignore[index]
        assert time.monotonic() - started >= 1.9  # it really was in flight when the signal came
        gw.proc.wait(20)
        assert gw.proc.returncode in (-signal.SIGTERM, 128 + signal.SIGTERM)
        assert len(emu.core.messages()) == before + 1
        assert "draining: 1 send(s) in flight" in gw.stderr()
    finally:
        gw.stop()


async def test_send_longer_than_the_grace_is_cut_and_reconciled_not_resent(
        tmp_path: Path, emu: EmulatorServer) -> None:
    args = {**SMS_ARGS, "phone_numbers": ["13800138077"]}  # Alibaba allows one code per number and minute
    env = gateway_env(tmp_path, emu, SMS_MCP_SHUTDOWN_GRACE_SECONDS="1", SMS_MCP_READ_TIMEOUT="30",
                      SMS_MCP_RECONCILE_GRACE_SECONDS="40")
    gw = Gateway(tmp_path, env).wait_ready()
    before = len(emu.core.messages())
    try:
        async with mcp_client(gw.url, None, mode="auto") as client:
            plan = await client.call_tool("send_sms", args)
            plan_id = plan.structured_content["plan_id"]  # type: ignore[index]
            emu.faults.add("delay_before", action="SendSms", seconds=6, count=1)
            _sigterm_once_alibaba_has_the_call(gw, emu)
            started = time.monotonic()
            with pytest.raises(Exception):  # noqa: B017 - cut off: an error result or a closed connection
                result = await client.call_tool("send_sms", {**args, "confirm_token":
                                                             plan.structured_content["confirm_token"]})  # type: ignore[index]
                assert not result.is_error, "the cut-off call must not look like a success"
                raise AssertionError("unreachable")
        gw.proc.wait(20)
        assert time.monotonic() - started < 6, "the grace bound was not applied"
    finally:
        gw.stop()
    await anyio.sleep(6)  # the emulator finishes its delayed request: Alibaba did get the call
    assert len(emu.core.messages()) == before + 1
    # Another replica on the same ledger: reconciles the plan from Alibaba's records, sends nothing.
    again = Gateway(tmp_path, env, name="gw2").wait_ready()
    try:
        async with mcp_client(again.url, None, mode="auto") as client:
            report = await client.call_tool("query_details", {"plan_id": plan_id})
            assert not report.is_error, report.content
            reconciled = report.structured_content["reconciled"]  # type: ignore[index]
            assert [(r["before"], r["after"]) for r in reconciled] == [("unknown", "accepted")]
            resent = await client.call_tool("send_sms", {**args, "confirm_token":
                                                         plan.structured_content["confirm_token"]})  # type: ignore[index]
            assert (resent.structured_content or {}).get("replayed") is True, resent.content
    finally:
        again.stop()
    assert len(emu.core.messages()) == before + 1


async def test_draining_replica_refuses_tool_calls_and_fails_readiness(tmp_path: Path) -> None:
    settings = Settings.from_env({"SMS_MCP_DATA_DIR": str(tmp_path), "SMS_MCP_BACKEND": "sandbox"})
    gateway = build_gateway(settings, "127.0.0.1", 8000, transport=SandboxTransport.from_settings(settings))
    transport = httpx2.ASGITransport(app=gateway.app)
    async with gateway.server.session_manager.run():  # the app's lifespan, as uvicorn would run it
        async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http:
            assert (await http.get("/readyz")).status_code == 200
            gateway.drain.begin()
            ready = await http.get("/readyz")
            assert ready.status_code == 503 and "shutting down" in ready.json()["problems"]
            body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
                "name": "list_signs", "arguments": {}, "_meta": {
                    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                    "io.modelcontextprotocol/clientCapabilities": {}}}}
            response = await http.post("/mcp", json=body, headers={
                "accept": "application/json, text/event-stream", "mcp-protocol-version": "2026-07-28",
                "mcp-method": "tools/call", "mcp-name": "list_signs"})
            result = response.json()["result"]
            assert result["isError"] is True
            assert result["content"][0]["text"].startswith("[sms_mcp.SHUTTING_DOWN]")


async def test_session_era_send_finishes_even_though_its_sse_reply_is_cut(
        tmp_path: Path, emu: EmulatorServer) -> None:
    """The SDK ends session-era SSE replies at shutdown; the send itself is shielded and still finishes, so a
    repeated confirmation (on any replica) returns the recorded result instead of an unknown outcome."""
    args = {**SMS_ARGS, "phone_numbers": ["13800138078"]}
    env = gateway_env(tmp_path, emu, SMS_MCP_SHUTDOWN_GRACE_SECONDS="15", SMS_MCP_READ_TIMEOUT="30",
                      SMS_MCP_RECONCILE_GRACE_SECONDS="40")
    gw = Gateway(tmp_path, env).wait_ready()
    before = len(emu.core.messages())
    try:
        async with mcp_client(gw.url, None, mode="legacy") as client:
            plan = await client.call_tool("send_sms", args)
            token = plan.structured_content["confirm_token"]  # type: ignore[index]
            emu.faults.add("delay_before", action="SendSms", seconds=2, count=1)
            _sigterm_once_alibaba_has_the_call(gw, emu)
            try:
                await client.call_tool("send_sms", {**args, "confirm_token": token})
            except Exception:
                pass  # cut off (or, if the SDK drained it, answered): either way the send must have finished
        gw.proc.wait(20)
    finally:
        gw.stop()
    assert len(emu.core.messages()) == before + 1
    again = Gateway(tmp_path, env, name="gw2").wait_ready()
    try:
        async with mcp_client(again.url, None, mode="auto") as client:
            replay = await client.call_tool("send_sms", {**args, "confirm_token": token})
    finally:
        again.stop()
    assert not replay.is_error, replay.content
    assert replay.structured_content["replayed"] is True  # type: ignore[index]
    assert replay.structured_content["status"] == "accepted"  # type: ignore[index]
    assert len(emu.core.messages()) == before + 1
