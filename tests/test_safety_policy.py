"""Operator policy (environment only): daily limit, allow-list, promotional switch, read-only, local flow control,
checked when a plan is prepared AND again when it is confirmed; and the audit log's privacy."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp_harness import box

from sms_mcp.config import Settings
from sms_mcp.core.errors import SmsError
from sms_mcp.core.service import SmsService
from sms_mcp.emulator.core import EmulatorCore
from sms_mcp.wire.sandbox import SandboxTransport

ERAS = pytest.mark.parametrize("era", ["auto", "legacy"])
PARAMS = {"name": "王女士", "order_no": "P4001", "date": "周六"}
CHINA = timezone(timedelta(hours=8))


def notify(*nums: str) -> dict[str, Any]:
    return {"phone_numbers": list(nums), "sign_name": "速通科技", "template_code": "SMS_900000002",
            "template_param": PARAMS}


def code(number: str, value: str = "4821") -> dict[str, Any]:
    return {"phone_numbers": [number], "sign_name": "速通验证", "template_code": "SMS_900000001",
            "template_param": {"code": value}}


PROMO = {"phone_numbers": ["13700004001"], "sign_name": "速通科技", "template_code": "SMS_900000003",
         "template_param": {"name": "王女士"}}


# ------------------------------------------------------------------------------------------ daily limit


@ERAS
async def test_daily_limit_counts_messages_across_plans(tmp_path: Path, era: str) -> None:
    async with box(tmp_path, era, SMS_MCP_DAILY_LIMIT="3") as b:
        assert (await b.send(notify("13700004001", "13700004002")))["status"] == "accepted"
        text = await b.refused("send_sms", notify("13700004003", "13700004004"))
        assert "[sms_mcp.DAILY_LIMIT]" in text and "2 of the 3" in text and "nothing was sent" in text
        assert (await b.send(notify("13700004003")))["status"] == "accepted"
        assert "DAILY_LIMIT" in await b.refused("send_sms", notify("13700004005"))
        batch = {"recipients": [{"phone_number": "13700004005", "sign_name": "速通科技", "template_param": PARAMS}],
                 "template_code": "SMS_900000002"}
        assert "DAILY_LIMIT" in await b.refused("send_batch_sms", batch)
        assert len(b.sent()) == 3


@ERAS
async def test_daily_limit_is_checked_again_at_confirmation(tmp_path: Path, era: str) -> None:
    async with box(tmp_path, era, SMS_MCP_DAILY_LIMIT="2") as b:
        first = await b.ok("send_sms", notify("13700004011", "13700004012"))
        second = await b.ok("send_sms", notify("13700004013"))  # fits at preparation: nothing used yet
        await b.ok("send_sms", {**notify("13700004011", "13700004012"), "confirm_token": first["confirm_token"]})
        text = await b.refused("send_sms", {**notify("13700004013"), "confirm_token": second["confirm_token"]})
        assert "[sms_mcp.DAILY_LIMIT]" in text
        assert len(b.sent()) == 2


@ERAS
async def test_concurrent_confirmations_cannot_exceed_the_daily_limit(tmp_path: Path, era: str) -> None:
    """Each confirmation passes the check on its own; together they must not exceed the limit."""
    nums = [f"137000040{i:02d}" for i in range(20, 26)]
    async with box(tmp_path, era, SMS_MCP_DAILY_LIMIT="2") as b:
        plans = [(n, await b.ok("send_sms", notify(n))) for n in nums]
        results: list[tuple[bool, dict[str, Any] | None, str]] = []

        async def confirm(number: str, plan: dict[str, Any]) -> None:
            r = await b.client.call_tool("send_sms", {**notify(number), "confirm_token": plan["confirm_token"]})
            results.append((bool(r.is_error), r.structured_content,
                            "".join(getattr(c, "text", "") for c in r.content)))

        async with anyio.create_task_group() as tg:
            for number, plan in plans:
                tg.start_soon(confirm, number, plan)
        assert len(b.sent()) == 2
        accepted = [r for r in results if not r[0] and r[1] and r[1]["status"] == "accepted"]
        assert len(accepted) == 2
        for is_error, content, text in results:
            if (content or {}).get("status") == "accepted":
                continue
            # Refused before claiming (ToolError) or, when the race was lost after the check, rejected locally.
            assert "DAILY_LIMIT" in text or (content and content["status"] == "rejected"
                                             and content["error_code"] == "sms_mcp.DAILY_LIMIT"
                                             and "nothing was sent" in content["message"]), (is_error, text)


def service(tmp_path: Path, clock: Any, emulator: EmulatorCore, **env: str) -> SmsService:
    settings = Settings.from_env({"SMS_MCP_DATA_DIR": str(tmp_path), **env})
    return SmsService(settings, SandboxTransport(emulator), clock=clock)


async def send(svc: SmsService, args: dict[str, Any]) -> str:
    plan = await svc.send_sms(**args)
    result = await svc.send_sms(**args, confirm_token=plan.confirm_token)
    return result.status


async def test_daily_limit_resets_at_midnight_utc8(tmp_path: Path, clock: Any, emulator: EmulatorCore) -> None:
    clock.now = datetime(2025, 9, 1, 23, 59, 0, tzinfo=CHINA).timestamp()
    svc = service(tmp_path, clock, emulator, SMS_MCP_DAILY_LIMIT="1")
    assert await send(svc, notify("13700004031")) == "accepted"
    with pytest.raises(SmsError) as refused:
        await svc.send_sms(**notify("13700004032"))
    assert refused.value.code == "sms_mcp.DAILY_LIMIT"
    clock.now = datetime(2025, 9, 2, 0, 0, 1, tzinfo=CHINA).timestamp()  # 16:00 UTC: a new day in UTC+8
    assert await send(svc, notify("13700004032")) == "accepted"
    assert len(emulator.messages()) == 2


async def test_rejected_sends_do_not_use_the_daily_budget(tmp_path: Path, clock: Any, emulator: EmulatorCore) -> None:
    svc = service(tmp_path, clock, emulator, SMS_MCP_DAILY_LIMIT="1")
    # Another sender on the account used this number's minute: Alibaba refuses our code.
    other = emulator.handle("SendSms", {"PhoneNumbers": "13700004041", "SignName": "速通验证",
                                        "TemplateCode": "SMS_900000001", "TemplateParam": '{"code":"1111"}'})
    assert other["Code"] == "OK"
    assert await send(svc, code("13700004041")) == "rejected"
    assert await send(svc, notify("13700004042")) == "accepted"  # the refused message cost nothing


# ------------------------------------------------------------------------------------------ allow-list


@ERAS
async def test_allow_list_exact_numbers_and_prefixes(tmp_path: Path, era: str) -> None:
    async with box(tmp_path, era, SMS_MCP_ALLOWED_NUMBERS="13700004101, +86137000042*;+852*") as b:
        for allowed in (["13700004101"], ["+86 137 0000 4101"], ["13700004205"], ["+85291234567"]):
            template = {"template_code": "SMS_900000004", "sign_name": "SuTong", "template_param": {"code": "4821"}} \
                if allowed[0].startswith("+852") else {}
            plan = await b.ok("send_sms", {**notify(*allowed), **template})
            assert plan["status"] == "pending_confirmation"
        text = await b.refused("send_sms", notify("13700004101", "13700004102", "13800004205"))
        assert "[sms_mcp.NUMBER_NOT_ALLOWED]" in text
        assert "137****4102" in text and "138****4205" in text and "137****4101" not in text
        assert "13700004102" not in text  # masked
        batch = {"recipients": [{"phone_number": "13700004102", "sign_name": "速通科技", "template_param": PARAMS}],
                 "template_code": "SMS_900000002"}
        assert "NUMBER_NOT_ALLOWED" in await b.refused("send_batch_sms", batch)
        assert b.sent() == []


@ERAS
async def test_tightened_allow_list_refuses_confirming_an_earlier_plan(tmp_path: Path, era: str) -> None:
    args = notify("13700004111", "13700004112")
    async with box(tmp_path, era, SMS_MCP_ALLOWED_NUMBERS="13700004111,13700004112") as b:
        plan = await b.ok("send_sms", args)
    async with box(tmp_path, era, SMS_MCP_ALLOWED_NUMBERS="13700004111") as b:  # the operator restarted
        text = await b.refused("send_sms", {**args, "confirm_token": plan["confirm_token"]})
        assert "[sms_mcp.NUMBER_NOT_ALLOWED]" in text and "137****4112" in text
        assert b.sent() == []


@ERAS
async def test_lowered_recipient_cap_refuses_confirming_an_earlier_plan(tmp_path: Path, era: str) -> None:
    args = notify("13700004121", "13700004122", "13700004123")
    async with box(tmp_path, era) as b:
        plan = await b.ok("send_sms", args)
    async with box(tmp_path, era, SMS_MCP_MAX_RECIPIENTS="2") as b:
        text = await b.refused("send_sms", {**args, "confirm_token": plan["confirm_token"]})
        assert "validation error" in text or "TOO_MANY_RECIPIENTS" in text
        assert b.sent() == []


# ------------------------------------------------------------------------------------------ promotional


@ERAS
async def test_promotional_templates_need_the_operator_switch(tmp_path: Path, era: str) -> None:
    async with box(tmp_path, era) as b:
        text = await b.refused("send_sms", PROMO)
        assert "[sms_mcp.PROMOTIONAL_DISABLED]" in text and "SMS_MCP_ALLOW_PROMOTIONAL" in text
        batch = {"recipients": [{"phone_number": "13700004001", "sign_name": "速通科技",
                                 "template_param": {"name": "王女士"}}], "template_code": "SMS_900000003"}
        assert "PROMOTIONAL_DISABLED" in await b.refused("send_batch_sms", batch)
        assert b.sent() == []
    async with box(tmp_path, era, SMS_MCP_ALLOW_PROMOTIONAL="true") as b:
        assert (await b.send(PROMO))["status"] == "accepted"
        assert len(b.sent()) == 1


@ERAS
async def test_promotional_switch_turned_off_refuses_confirming_an_earlier_plan(tmp_path: Path, era: str) -> None:
    async with box(tmp_path, era, SMS_MCP_ALLOW_PROMOTIONAL="true") as b:
        plan = await b.ok("send_sms", PROMO)
    async with box(tmp_path, era) as b:
        text = await b.refused("send_sms", {**PROMO, "confirm_token": plan["confirm_token"]})
        assert "[sms_mcp.PROMOTIONAL_DISABLED]" in text
        assert b.sent() == []


# ------------------------------------------------------------------------------------------ local flow control


async def test_verification_codes_one_per_natural_minute(tmp_path: Path, clock: Any, emulator: EmulatorCore) -> None:
    svc = service(tmp_path, clock, emulator)  # the conftest clock starts at 10:00:30 UTC+8
    assert await send(svc, code("13700004201")) == "accepted"
    clock.advance(20)  # 10:00:50: same minute
    with pytest.raises(SmsError) as refused:
        await svc.send_sms(**code("13700004201"))
    assert refused.value.code == "isv.BUSINESS_LIMIT_CONTROL"
    assert "1 per minute" in refused.value.message and "10:01:00" in refused.value.next_step
    assert await send(svc, code("13700004202")) == "accepted"  # per number
    clock.advance(10)  # 10:01:00: a new natural minute, although only 30 s passed
    assert await send(svc, code("13700004201")) == "accepted"
    assert len(emulator.messages()) == 3


async def test_verification_codes_five_per_natural_hour_and_ten_per_day(
    tmp_path: Path, clock: Any, emulator: EmulatorCore
) -> None:
    svc = service(tmp_path, clock, emulator)
    for _ in range(5):
        assert await send(svc, code("13700004211")) == "accepted"
        clock.advance(60)
    with pytest.raises(SmsError) as hourly:  # 10:05:30
        await svc.send_sms(**code("13700004211"))
    assert "5 per hour" in hourly.value.message and "11:00:00" in hourly.value.next_step
    clock.now = datetime(2025, 9, 1, 11, 0, 0, tzinfo=CHINA).timestamp()
    for _ in range(5):
        assert await send(svc, code("13700004211")) == "accepted"
        clock.advance(60)
    clock.now = datetime(2025, 9, 1, 12, 0, 0, tzinfo=CHINA).timestamp()
    with pytest.raises(SmsError) as daily:
        await svc.send_sms(**code("13700004211"))
    assert "10 per day" in daily.value.message and "2025-09-02 10:00:30" in daily.value.next_step
    assert len(emulator.messages()) == 10


async def test_notifications_fifty_per_day_per_template(tmp_path: Path, clock: Any, emulator: EmulatorCore) -> None:
    svc = service(tmp_path, clock, emulator)
    for _ in range(50):
        assert await send(svc, notify("13700004221")) == "accepted"
    with pytest.raises(SmsError) as refused:
        await svc.send_sms(**notify("13700004221"))
    assert refused.value.code == "isv.BUSINESS_LIMIT_CONTROL" and "50 per day" in refused.value.message
    clock.advance(86_401)  # "after" the oldest send's 24 h
    assert await send(svc, notify("13700004221")) == "accepted"


@ERAS
async def test_flow_control_is_checked_again_at_confirmation(tmp_path: Path, era: str) -> None:
    async with box(tmp_path, era) as b:
        first = await b.ok("send_sms", code("13700004231", "1111"))
        second = await b.ok("send_sms", code("13700004231", "2222"))  # both fit while nothing was sent
        await b.ok("send_sms", {**code("13700004231", "1111"), "confirm_token": first["confirm_token"]})
        text = await b.refused("send_sms", {**code("13700004231", "2222"), "confirm_token": second["confirm_token"]})
        assert "isv.BUSINESS_LIMIT_CONTROL" in text and "Local flow-control pre-check" in text
        assert len(b.sent()) == 1


# ------------------------------------------------------------------------------------------ audit log


@pytest.fixture
def numbers_used() -> Iterator[list[str]]:
    yield ["13700004301", "13700004302", "13700004303", "+85291234567"]


@ERAS
async def test_audit_log_is_masked_and_has_no_tokens(tmp_path: Path, era: str, numbers_used: list[str]) -> None:
    tokens: list[str] = []
    async with box(tmp_path, era, SMS_MCP_DAILY_LIMIT="100") as b:
        plan = await b.ok("send_sms", notify(*numbers_used[:3]))
        tokens.append(plan["confirm_token"])
        await b.ok("send_sms", {**notify(*numbers_used[:3]), "confirm_token": plan["confirm_token"]})
        await b.ok("query_details", {"plan_id": plan["plan_id"]})
        intl = {"phone_numbers": [numbers_used[3]], "sign_name": "SuTong", "template_code": "SMS_900000004",
                "template_param": {"code": "4821"}}
        plan2 = await b.ok("send_sms", intl)
        tokens.append(plan2["confirm_token"])
        await b.ok("send_sms", {**intl, "confirm_token": plan2["confirm_token"]})
        await b.refused("send_sms", {**intl, "confirm_token": "smt_forged"})
    lines = (tmp_path / "audit.jsonl").read_text(encoding="utf-8").splitlines()
    entries = [json.loads(line) for line in lines]
    assert [e["event"] for e in entries if e["plan_id"] == plan["plan_id"]] == ["prepared", "confirmed", "accepted"]
    prepared = next(e for e in entries if e["event"] == "prepared" and e["plan_id"] == plan["plan_id"])
    assert prepared["numbers"] == ["137****4301", "137****4302", "137****4303"]
    raw = "\n".join(lines)
    for number in numbers_used:
        digits = number.lstrip("+")
        assert digits not in raw and digits[-8:] not in raw
    for token in tokens:
        assert token not in raw and token[4:20] not in raw
    assert "4821" not in raw  # no message text (it may carry codes)
    assert (tmp_path / "audit.jsonl").stat().st_mode & 0o077 == 0  # owner-only
