"""The whole stack on the real Alibaba path: MCP client -> server -> domain -> openapi backend (Alibaba's SDK,
signing, HTTP) -> the signature-verifying HTTP emulator on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from alibabacloud_credentials.client import Client as CredentialClient
from alibabacloud_credentials.models import Config as CredentialConfig
from mcp import Client

from sms_mcp.config import Settings
from sms_mcp.emulator.http import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET, EmulatorServer
from sms_mcp.server import build_server
from sms_mcp.wire.openapi import OpenApiTransport

NOTIFY = {
    "phone_numbers": ["+86 138 0000 7001"],
    "sign_name": "速通科技",
    "template_code": "SMS_900000002",
    "template_param": {"name": "王女士", "order_no": "20261125001", "date": "11月27日"},
}


@asynccontextmanager
async def connected(
    emu: EmulatorServer, data_dir: Path, *, secret: str = DEMO_ACCESS_KEY_SECRET, era: str = "auto"
) -> AsyncIterator[Client]:
    settings = Settings.from_env(
        {"SMS_MCP_DATA_DIR": str(data_dir), "SMS_MCP_BACKEND": "openapi", "SMS_MCP_ENDPOINT": emu.url}
    )
    credential = CredentialClient(
        CredentialConfig(type="access_key", access_key_id=DEMO_ACCESS_KEY_ID, access_key_secret=secret)
    )
    transport = OpenApiTransport(settings, credential=credential)
    async with Client(build_server(settings, transport), mode=era) as client:  # type: ignore[arg-type]
        yield client


async def call(client: Client, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


def sent_to(emu: EmulatorServer, digits: str) -> list[dict[str, Any]]:
    return [m for m in emu.core.messages() if m["phone_number"] == digits]


@pytest.mark.parametrize("era", ["auto", "legacy"])
async def test_two_step_send_over_the_real_alibaba_path(emu: EmulatorServer, tmp_path: Path, era: str) -> None:
    number = "1380000700" + ("1" if era == "auto" else "2")
    args = {**NOTIFY, "phone_numbers": [number]}
    async with connected(emu, tmp_path, era=era) as client:
        signs = await call(client, "list_signs", {})
        assert signs["backend"] == "openapi"
        assert "速通科技" in [s["sign_name"] for s in signs["signs"]]

        plan = await call(client, "send_sms", args)
        assert plan["status"] == "pending_confirmation"
        assert sent_to(emu, number) == []  # the first step sends nothing

        sent = await call(client, "send_sms", {**args, "confirm_token": plan["confirm_token"]})
        assert sent["status"] == "accepted" and sent["biz_id"] and sent["backend"] == "openapi"
        recorded = sent_to(emu, number)
        assert len(recorded) == 1 and recorded[0]["out_id"] == plan["plan_id"]
        assert "王女士" in recorded[0]["content"]

        again = await call(client, "send_sms", {**args, "confirm_token": plan["confirm_token"]})
        assert again["replayed"] is True and len(sent_to(emu, number)) == 1

        report = await call(client, "query_details", {"plan_id": plan["plan_id"]})
        assert report["backend"] == "openapi"
        assert [r["status"] for r in report["records"]] == ["delivered"]


async def test_dropped_connection_after_the_send_is_unknown_and_never_resent(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    number = "13800007003"
    args = {**NOTIFY, "phone_numbers": [number]}
    emu.faults.add("drop_after", action="SendSms", count=1)
    async with connected(emu, tmp_path) as client:
        plan = await call(client, "send_sms", args)
        result = await call(client, "send_sms", {**args, "confirm_token": plan["confirm_token"]})
        assert result["status"] == "unknown"
        assert result["error_code"] == "sms_mcp.OUTCOME_UNKNOWN"
        assert len(sent_to(emu, number)) == 1  # it did send, exactly once

        replay = await call(client, "send_sms", {**args, "confirm_token": plan["confirm_token"]})
        assert replay["replayed"] is True and replay["status"] == "unknown"
        assert len(sent_to(emu, number)) == 1

        report = await call(client, "query_details", {"plan_id": plan["plan_id"]})
        assert [r["status"] for r in report["records"]] == ["delivered"]  # reconciled from the receipts


async def test_throttled_send_is_rejected_and_nothing_is_sent(emu: EmulatorServer, tmp_path: Path) -> None:
    number = "13800007004"
    args = {**NOTIFY, "phone_numbers": [number]}
    emu.faults.add("throttle", action="SendSms", count=1)
    async with connected(emu, tmp_path) as client:
        plan = await call(client, "send_sms", args)
        result = await call(client, "send_sms", {**args, "confirm_token": plan["confirm_token"]})
        assert result["status"] == "rejected" and result["error_code"] == "Throttling.User"
    assert sent_to(emu, number) == []


async def test_wrong_secret_is_reported_as_a_credential_problem(emu: EmulatorServer, tmp_path: Path) -> None:
    async with connected(emu, tmp_path, secret="definitely-wrong") as client:
        result = await client.call_tool("list_signs", {})
    assert result.is_error
    text = "".join(getattr(c, "text", "") for c in result.content)
    assert "SignatureDoesNotMatch" in text
    assert "AccessKey" in text and "sign name" in text
    assert "definitely-wrong" not in text
