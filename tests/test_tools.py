"""Every tool and every token case through a real in-memory MCP client, on the sandbox emulator."""

from __future__ import annotations

import functools
import inspect
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp_harness import Box as Harness
from mcp_harness import box, sandbox_settings

from sms_mcp.server import build_server
from sms_mcp.wire.sandbox import SandboxTransport

NOTIFY = {
    "phone_numbers": ["+86 139 1234 5678"],
    "sign_name": "速通科技",
    "template_code": "SMS_900000002",
    "template_param": {"name": "王女士", "order_no": "20261125001", "date": "11月27日"},
}


def with_harness(test: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Run the test inside a connected client, in both protocol eras: 2026-07-28 ("auto") and the 2025-11-25
    handshake most hosts still speak. (A yield fixture would enter the client's cancel scopes in one task and
    leave them in another.)"""
    sig = inspect.signature(test)
    params = [p for p in sig.parameters.values() if p.name != "h"]
    extra = [inspect.Parameter("tmp_path", inspect.Parameter.KEYWORD_ONLY, annotation=Path),
             inspect.Parameter("era", inspect.Parameter.KEYWORD_ONLY, annotation=str)]

    @functools.wraps(test)
    async def wrapper(*args: Any, tmp_path: Path, era: str, **kwargs: Any) -> None:
        async with box(tmp_path, era) as h:
            await test(h, *args, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=params + extra)  # type: ignore[attr-defined]
    return pytest.mark.parametrize("era", ["auto", "legacy"])(wrapper)


@with_harness
async def test_tools_are_declared_with_titles_annotations_and_schemas(h: Harness) -> None:
    tools = {t.name: t for t in (await h.client.list_tools()).tools}
    assert set(tools) == {"list_signs", "list_templates", "send_sms", "send_batch_sms", "query_details",
                          "query_statistics", "qualification"}
    for name, tool in tools.items():
        assert tool.title and tool.description and tool.output_schema, name
        assert "ctx" not in tool.input_schema["properties"], name
        if name.startswith("send_"):
            assert tool.annotations.read_only_hint is False
            assert tool.annotations.destructive_hint is True
            assert tool.annotations.idempotent_hint is False
            assert "confirm_token" in tool.input_schema["properties"]
        else:
            assert tool.annotations.read_only_hint is True
    assert "never guess" in tools["list_signs"].description.lower()
    batch_items = tools["send_batch_sms"].input_schema["properties"]["recipients"]
    assert batch_items["type"] == "array"  # a list of recipient objects, not parallel arrays


@with_harness
async def test_list_signs_filters_by_status_and_says_sandbox(h: Harness) -> None:
    approved = await h.ok("list_signs", {})
    assert [s["sign_name"] for s in approved["signs"]] == ["速通科技", "速通验证", "SuTong"]
    assert approved["backend"] == "sandbox" and "no real SMS" in approved["notice"]
    everything = await h.ok("list_signs", {"status": "all"})
    by_name = {s["sign_name"]: s for s in everything["signs"]}
    assert by_name["星河商城"]["status"] == "reviewing"
    assert by_name["月光书店"]["status"] == "rejected"
    assert by_name["月光书店"]["reason"] == "文件不能证明信息真实性，请重新上传。"
    assert by_name["旧品牌"]["status"] == "cancelled"
    assert by_name["旧品牌"]["raw_status"] == "AUDIT_STATE_CANCEL"
    page = await h.ok("list_signs", {"status": "all", "page_size": 2, "page_index": 2})
    assert page["total_count"] == 6 and len(page["signs"]) == 2


@with_harness
async def test_list_templates_normalises_types_statuses_and_variables(h: Harness) -> None:
    everything = await h.ok("list_templates", {"status": "all"})
    by_code = {t["template_code"]: t for t in everything["templates"]}
    assert by_code["SMS_900000001"]["type"] == "verification"
    assert by_code["SMS_900000002"]["variables"] == ["name", "order_no", "date"]
    assert by_code["SMS_900000004"]["type"] == "international"
    assert by_code["SMS_900000009"]["type"] == "digital"
    assert by_code["SMS_900000007"]["status"] == "cancelled"
    assert by_code["SMS_900000007"]["raw_status"] == "AUDIT_SATE_CANCEL"  # Alibaba's typo, normalised
    assert by_code["SMS_900000006"]["reason"] == "变量不符合规范"
    rejected = await h.ok("list_templates", {"status": "rejected"})
    assert [t["template_code"] for t in rejected["templates"]] == ["SMS_900000006"]


@with_harness
async def test_first_call_sends_nothing_and_returns_a_plan(h: Harness) -> None:
    plan = await h.ok("send_sms", NOTIFY)
    assert plan["status"] == "pending_confirmation"
    assert plan["confirm_token"] and len(plan["confirm_token"]) >= 32 and plan["expires_at"]
    p = plan["plan"]
    assert p["recipient_count"] == 1 and p["domestic_count"] == 1 and p["total_segments"] == 1
    assert p["previews"][0]["phone_number"] == "139****5678"
    assert p["previews"][0]["text"] == ("【速通科技】尊敬的王女士，您的订单20261125001已发货，预计11月27日送达，"
                                        "请保持电话畅通。")
    assert "13912345678" not in str(plan)  # masked everywhere in the result
    assert h.sent() == []


@with_harness
async def test_confirm_sends_once_and_replay_sends_nothing(h: Harness) -> None:
    plan = await h.ok("send_sms", NOTIFY)
    sent = await h.ok("send_sms", {**NOTIFY, "confirm_token": plan["confirm_token"]})
    assert sent["status"] == "accepted" and sent["biz_id"] and sent["request_id"]
    assert sent["replayed"] is False and sent["confirm_token"] is None
    assert "not delivered" in sent["message"].lower()
    assert len(h.sent()) == 1
    assert h.sent()[0]["out_id"] == plan["plan_id"]  # every send carries an OutId
    again = await h.ok("send_sms", {**NOTIFY, "confirm_token": plan["confirm_token"]})
    assert again["replayed"] is True and again["biz_id"] == sent["biz_id"]
    assert len(h.sent()) == 1


@with_harness
async def test_equivalent_number_spellings_are_the_same_arguments(h: Harness) -> None:
    plan = await h.ok("send_sms", NOTIFY)
    sent = await h.ok("send_sms", {**NOTIFY, "phone_numbers": ["13912345678"],
                                     "confirm_token": plan["confirm_token"]})
    assert sent["status"] == "accepted"


@pytest.mark.parametrize("change", [
    {"phone_numbers": ["13912345679"]},
    {"template_param": {"name": "李先生", "order_no": "20261125001", "date": "11月27日"}},
    {"sign_name": "速通验证"},
    {"out_id": "mine"},
])
@with_harness
async def test_token_with_changed_arguments_is_refused(h: Harness, change: dict[str, Any]) -> None:
    plan = await h.ok("send_sms", NOTIFY)
    text = await h.refused("send_sms", {**NOTIFY, **change, "confirm_token": plan["confirm_token"]})
    assert "sms_mcp.TOKEN_ARGUMENT_MISMATCH" in text and "nothing was sent" in text
    assert h.sent() == []
    # The plan is intact: the original arguments still confirm it.
    ok = await h.ok("send_sms", {**NOTIFY, "confirm_token": plan["confirm_token"]})
    assert ok["status"] == "accepted" and len(h.sent()) == 1


@with_harness
async def test_unknown_and_forged_tokens_are_refused(h: Harness) -> None:
    await h.ok("send_sms", NOTIFY)
    for token in ("smt_forged", "x" * 40):
        text = await h.refused("send_sms", {**NOTIFY, "confirm_token": token})
        assert "sms_mcp.UNKNOWN_TOKEN" in text
    assert h.sent() == []


@with_harness
async def test_token_of_another_tool_is_refused(h: Harness) -> None:
    plan = await h.ok("send_sms", NOTIFY)
    text = await h.refused("send_batch_sms", {
        "recipients": [{"phone_number": "13912345678", "sign_name": "速通科技",
                        "template_param": NOTIFY["template_param"]}],
        "template_code": "SMS_900000002", "confirm_token": plan["confirm_token"]})
    assert "TOKEN_ARGUMENT_MISMATCH" in text
    assert h.sent() == []


@with_harness
async def test_expired_token_is_refused(h: Harness) -> None:
    plan = await h.ok("send_sms", NOTIFY)
    with sqlite3.connect(h.data_dir / "ledger.sqlite3") as db:
        db.execute("UPDATE plans SET expires_at = 0 WHERE plan_id = ?", (plan["plan_id"],))
    text = await h.refused("send_sms", {**NOTIFY, "confirm_token": plan["confirm_token"]})
    assert "sms_mcp.TOKEN_EXPIRED" in text
    assert h.sent() == []


@with_harness
async def test_tokens_are_single_use_per_plan_and_not_stored_in_clear(h: Harness) -> None:
    first = await h.ok("send_sms", NOTIFY)
    second = await h.ok("send_sms", NOTIFY)
    assert first["confirm_token"] != second["confirm_token"] and first["plan_id"] != second["plan_id"]
    raw = (h.data_dir / "ledger.sqlite3").read_bytes()
    assert first["confirm_token"].encode() not in raw


@pytest.mark.parametrize(("args", "code"), [
    ({"sign_name": "不存在的签名"}, "isv.SMS_SIGNATURE_ILLEGAL"),
    ({"sign_name": "星河商城"}, "isv.SMS_SIGNATURE_ILLEGAL"),
    ({"template_code": "SMS_123"}, "isv.SMS_TEMPLATE_ILLEGAL"),
    ({"template_code": "SMS_900000006"}, "isv.SMS_TEMPLATE_ILLEGAL"),
    ({"phone_numbers": ["12345"]}, "isv.MOBILE_NUMBER_ILLEGAL"),
    ({"phone_numbers": ["+85291234567"]}, "isv.MOBILE_NUMBER_ILLEGAL"),
    ({"template_param": {"name": "王女士"}}, "isv.TEMPLATE_MISSING_PARAMETERS"),
    ({"template_param": {**NOTIFY["template_param"], "extra": "x"}}, "isv.INVALID_JSON_PARAM"),
    ({"template_param": {**NOTIFY["template_param"], "name": "王" * 36}}, "isv.PARAM_LENGTH_LIMIT"),
    ({"template_param": {**NOTIFY["template_param"], "name": "see https://evil.example"}},
     "isv.PARAM_NOT_SUPPORT_URL"),
    ({"template_code": "SMS_900000004", "template_param": {"code": "4821"}}, "isv.DOMESTIC_NUMBER_NOT_SUPPORTED"),
    ({"template_code": "SMS_900000003", "template_param": {"name": "王女士"}}, "sms_mcp.PROMOTIONAL_DISABLED"),
])
@with_harness
async def test_bad_sends_are_refused_with_code_and_next_step(h: Harness, args: dict[str, Any], code: str) -> None:
    text = await h.refused("send_sms", {**NOTIFY, **args})
    assert code in text and "Next step:" in text
    if "SIGN" in code:
        assert "list_signs" in text
    if "TEMPLATE_ILLEGAL" in code:
        assert "list_templates" in text
    assert h.sent() == []


@with_harness
async def test_schema_rejects_non_string_values_and_bad_types(h: Harness) -> None:
    result = await h.client.call_tool("send_sms", {**NOTIFY, "template_param": {"name": 1}})
    assert result.is_error
    result = await h.client.call_tool("send_sms", {**NOTIFY, "phone_numbers": []})
    assert result.is_error
    assert h.sent() == []


@with_harness
async def test_verification_code_flow(h: Harness) -> None:
    args = {"phone_numbers": ["13700001111"], "sign_name": "速通验证", "template_code": "SMS_900000001",
            "template_param": {"code": "4821"}}
    bad = await h.refused("send_sms", {**args, "template_param": {"code": "48a"}})
    assert "isv.TEMPLATE_PARAMS_ILLEGAL" in bad
    plan = await h.ok("send_sms", args)
    sent = await h.ok("send_sms", {**args, "confirm_token": plan["confirm_token"]})
    assert sent["status"] == "accepted"
    # Our own history already holds that send: the local pre-check refuses a second code within the minute,
    # before anything reaches Alibaba, and says when it can be tried again.
    local = await h.refused("send_sms", args)
    assert "isv.BUSINESS_LIMIT_CONTROL" in local and "Local flow-control pre-check" in local and "after" in local
    assert len(h.sent()) == 1


@with_harness
async def test_alibaba_flow_control_is_a_rejected_result(h: Harness) -> None:
    """Another sender on the same account (not in our ledger) used the number's minute: Alibaba refuses."""
    args = {"phone_numbers": ["13700002222"], "sign_name": "速通验证", "template_code": "SMS_900000001",
            "template_param": {"code": "4821"}}
    other = h.transport.core.handle("SendSms", {"PhoneNumbers": "13700002222", "SignName": "速通验证",
                                                "TemplateCode": "SMS_900000001", "TemplateParam": '{"code":"1111"}'})
    assert other["Code"] == "OK"
    plan = await h.ok("send_sms", args)
    second = await h.ok("send_sms", {**args, "confirm_token": plan["confirm_token"]})
    assert second["status"] == "rejected" and second["error_code"] == "isv.BUSINESS_LIMIT_CONTROL"
    assert "Do not resend" in second["next_step"]
    assert second["chunks"][0]["state"] == "rejected"
    assert len(h.sent()) == 1


@with_harness
async def test_international_send_counts_gsm7_segments(h: Harness) -> None:
    args = {"phone_numbers": ["+852 9123 4567", "+1 415 555 2671"], "sign_name": "SuTong",
            "template_code": "SMS_900000004", "template_param": {"code": "4821"}}
    plan = await h.ok("send_sms", args)
    p = plan["plan"]
    assert p["international_count"] == 2 and p["domestic_count"] == 0
    assert p["previews"][0]["text"].startswith("[SuTong]Your verification code is 4821.")
    assert p["previews"][0]["segments"] == 1
    sent = await h.ok("send_sms", {**args, "confirm_token": plan["confirm_token"]})
    assert sent["status"] == "accepted"
    assert sorted(m["phone_number"] for m in h.sent()) == ["14155552671", "85291234567"]


@with_harness
async def test_duplicates_are_removed_and_reported(h: Harness) -> None:
    plan = await h.ok("send_sms", {**NOTIFY, "phone_numbers": ["13912345678", "+8613912345678",
                                                                 "0086 13912345678", "13700001111"]})
    assert plan["plan"]["recipient_count"] == 2
    assert plan["plan"]["duplicates_removed"] == ["139****5678", "139****5678"]


@with_harness
async def test_long_text_bills_several_segments(h: Harness) -> None:
    long_name = "王" * 35
    plan = await h.ok("send_sms", {**NOTIFY, "template_param": {"name": long_name, "order_no": "1" * 35,
                                                                   "date": "十一月二十七日"}})
    preview = plan["plan"]["previews"][0]
    assert preview["length"] > 70 and preview["segments"] == -(-preview["length"] // 67)


@with_harness
async def test_batch_send_two_steps(h: Harness) -> None:
    recipients = [
        {"phone_number": "13912345678", "sign_name": "速通科技",
         "template_param": {"name": "王女士", "order_no": "A1", "date": "周一"}},
        {"phone_number": "13700001111", "sign_name": "速通科技",
         "template_param": {"name": "李先生", "order_no": "A2", "date": "周二"}},
    ]
    args = {"recipients": recipients, "template_code": "SMS_900000002"}
    plan = await h.ok("send_batch_sms", args)
    assert plan["status"] == "pending_confirmation" and plan["plan"]["action"] == "SendBatchSms"
    assert [p["text"] for p in plan["plan"]["previews"]][1].startswith("【速通科技】尊敬的李先生")
    assert h.sent() == []
    sent = await h.ok("send_batch_sms", {**args, "confirm_token": plan["confirm_token"]})
    assert sent["status"] == "accepted"
    contents = sorted(m["content"] for m in h.sent())
    assert len(contents) == 2 and "李先生" in contents[1] + contents[0]
    missing = await h.refused("send_batch_sms", {**args, "recipients": [
        {**recipients[0], "template_param": {"name": "王女士"}}]})
    assert "isv.TEMPLATE_MISSING_PARAMETERS" in missing
    unknown_field = await h.client.call_tool("send_batch_sms", {**args, "recipients": [
        {**recipients[0], "priority": "high"}]})
    assert unknown_field.is_error
    assert len(h.sent()) == 2


@with_harness
async def test_query_details_by_plan_and_by_number(h: Harness) -> None:
    args = {**NOTIFY, "phone_numbers": ["13912345678", "13900000001", "13900000003"]}
    plan = await h.ok("send_sms", args)
    not_sent = await h.refused("query_details", {"plan_id": plan["plan_id"]})
    assert "PLAN_NOT_SENT" in not_sent
    await h.ok("send_sms", {**args, "confirm_token": plan["confirm_token"]})
    report = await h.ok("query_details", {"plan_id": plan["plan_id"]})
    by_number = {r["phone_number"]: r for r in report["records"]}
    assert by_number["139****5678"]["status"] == "delivered"
    assert by_number["139****0001"]["status"] == "failed" and by_number["139****0001"]["err_code"] == "MN:0001"
    assert by_number["139****0003"]["status"] == "pending"
    assert report["summary"] == {"delivered": 1, "failed": 1, "pending": 1}
    one = await h.ok("query_details", {"phone_number": "13912345678"})
    assert one["total_count"] == 1 and one["records"][0]["content"].startswith("【速通科技】")
    unknown = await h.refused("query_details", {"plan_id": "plan_nope"})
    assert "UNKNOWN_PLAN" in unknown
    bad_date = await h.refused("query_details", {"phone_number": "13912345678", "send_date": "20261399"})
    assert "isv.INVALID_PARAMETERS" in bad_date


@with_harness
async def test_query_statistics_counts_sends(h: Harness) -> None:
    from sms_mcp.core.service import china_today

    plan = await h.ok("send_sms", {**NOTIFY, "phone_numbers": ["13912345678", "13900000001"]})
    await h.ok("send_sms", {**NOTIFY, "phone_numbers": ["13912345678", "13900000001"],
                              "confirm_token": plan["confirm_token"]})
    today = china_today()
    stats = await h.ok("query_statistics", {"start_date": today, "end_date": today})
    assert stats["days"] == [{"date": today, "total_count": 2, "delivered": 1, "failed": 1, "pending": 0}]
    intl = await h.ok("query_statistics", {"start_date": today, "end_date": today, "scope": "international"})
    assert intl["days"] == []
    wrong = await h.refused("query_statistics", {"start_date": today, "end_date": "20000101"})
    assert "isv.INVALID_PARAMETERS" in wrong


@with_harness
async def test_qualification_list_and_masked_detail(h: Harness) -> None:
    listing = await h.ok("qualification", {})
    by_id = {r["group_id"]: r for r in listing["records"]}
    assert by_id[10001]["status"] == "approved" and by_id[10001]["use_by_self"] is True
    assert by_id[10002]["status"] == "rejected" and by_id[10002]["audit_remark"] == "营业执照已过期"
    assert by_id[10003]["status"] == "reviewing"
    assert by_id[10001]["legal_person_name"] == "张*"
    detail = await h.ok("qualification", {"group_id": 10002})
    d = detail["detail"]
    assert d["status"] == "rejected" and d["raw_status"] == "FAILED"
    assert "*" in d["legal_person_id_number"] and "*" in d["admin_phone"] and "*" in d["admin_id_number"]
    assert d["audit_remark"] == "营业执照已过期"
    approved = await h.ok("qualification", {"status": "approved"})
    assert [r["group_id"] for r in approved["records"]] == [10001]


async def test_read_only_policy_refuses_sends(tmp_path: Path) -> None:
    settings = sandbox_settings(tmp_path, SMS_MCP_READ_ONLY="true")
    transport = SandboxTransport.from_settings(settings)
    async with Client(build_server(settings, transport)) as client:
        result = await client.call_tool("send_sms", NOTIFY)
        assert result.is_error and "READ_ONLY" in result.content[0].text
        assert not (await client.call_tool("list_signs", {})).is_error
        assert transport.core.messages() == []


async def test_state_survives_a_restart(tmp_path: Path) -> None:
    settings = sandbox_settings(tmp_path)
    async with Client(build_server(settings)) as client:
        plan = (await client.call_tool("send_sms", NOTIFY)).structured_content
        sent = (await client.call_tool("send_sms", {**NOTIFY, "confirm_token": plan["confirm_token"]}))
        assert sent.structured_content["status"] == "accepted"
    async with Client(build_server(settings)) as client:  # a new server process would see the same
        again = await client.call_tool("send_sms", {**NOTIFY, "confirm_token": plan["confirm_token"]})
        assert again.structured_content["replayed"] is True
        report = await client.call_tool("query_details", {"plan_id": plan["plan_id"]})
        assert report.structured_content["summary"]["delivered"] == 1
