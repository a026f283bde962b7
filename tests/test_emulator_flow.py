"""EmulatorCore: flow-control windows (moved with a fake clock) and delivery-receipt transitions."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from sms_mcp.emulator.core import EmulatorCore

CST = timezone(timedelta(hours=8))
SHIP = {
    "SignName": "速通科技",
    "TemplateCode": "SMS_900000002",
    "TemplateParam": json.dumps({"name": "张三", "order_no": "SO1", "date": "明天"}, ensure_ascii=False),
}
MINUTE = "触发分钟级流控Permits:1"
HOUR = "触发小时级流控Permits:5"
DAY10 = "触发天级流控Permits:10"
DAY50 = "触发天级流控Permits:50"


def at(clock: Any, hh: int, mm: int, ss: int, day: int = 1) -> None:
    """Set the fake clock to 2025-09-<day> hh:mm:ss UTC+8."""
    clock.now = datetime(2025, 9, day, hh, mm, ss, tzinfo=CST).timestamp()


def code(emu: EmulatorCore, phone: str = "13800138000", sign: str = "速通科技", value: str = "1234") -> dict[str, Any]:
    return emu.handle(
        "SendSms",
        {
            "PhoneNumbers": phone,
            "SignName": sign,
            "TemplateCode": "SMS_900000001",
            "TemplateParam": f'{{"code":"{value}"}}',
        },
    )


def assert_limited(emu: EmulatorCore, body: dict[str, Any], message: str, stored: int) -> None:
    assert body["Code"] == "isv.BUSINESS_LIMIT_CONTROL", body
    assert body["Message"] == message
    assert "BizId" not in body
    assert len(emu.messages()) == stored


# ---------------------------------------------------------------- verification codes


def test_one_code_per_natural_minute(emulator: EmulatorCore, clock) -> None:
    at(clock, 10, 0, 30)
    assert code(emulator)["Code"] == "OK"
    at(clock, 10, 0, 59)
    assert_limited(emulator, code(emulator), MINUTE, stored=1)
    # 10:01:00 is a new natural minute although only 30 s have passed: the window is not rolling.
    at(clock, 10, 1, 0)
    assert code(emulator)["Code"] == "OK"
    assert len(emulator.messages()) == 2


def test_minute_window_is_per_number_and_per_signature(emulator: EmulatorCore, clock) -> None:
    assert code(emulator, "13800138000")["Code"] == "OK"
    assert code(emulator, "13700137000")["Code"] == "OK"
    assert code(emulator, "13800138000", sign="速通验证")["Code"] == "OK"
    assert_limited(emulator, code(emulator, "+8613800138000"), MINUTE, stored=3)


def test_minute_window_counts_every_verification_template_of_the_signature(emulator: EmulatorCore) -> None:
    emulator.add_template(
        "SMS_900000110", "注册验证码", 0, "您的注册码为${code}。", variables={"code": "numberCaptcha"}
    )
    assert code(emulator)["Code"] == "OK"
    body = emulator.handle(
        "SendSms",
        {
            "PhoneNumbers": "13800138000",
            "SignName": "速通科技",
            "TemplateCode": "SMS_900000110",
            "TemplateParam": '{"code":"5678"}',
        },
    )
    assert_limited(emulator, body, MINUTE, stored=1)


def test_five_codes_per_natural_hour(emulator: EmulatorCore, clock) -> None:
    for minute in range(5):
        at(clock, 10, minute, 30)
        assert code(emulator)["Code"] == "OK"
    at(clock, 10, 59, 59)
    assert_limited(emulator, code(emulator), HOUR, stored=5)
    at(clock, 11, 0, 0)
    assert code(emulator)["Code"] == "OK"


def test_ten_codes_per_rolling_24_hours(emulator: EmulatorCore, clock) -> None:
    for hour in (10, 11):
        for minute in range(5):
            at(clock, hour, minute, 30)
            assert code(emulator)["Code"] == "OK"
    at(clock, 12, 0, 30)
    assert_limited(emulator, code(emulator), DAY10, stored=10)
    # Calendar day changes do not reset it: the window is the last 24 h.
    at(clock, 10, 0, 29, day=2)
    assert_limited(emulator, code(emulator), DAY10, stored=10)
    # Exactly 24 h after the first code, that code leaves the window.
    at(clock, 10, 0, 30, day=2)
    assert code(emulator)["Code"] == "OK"


def test_same_number_twice_in_one_call_hits_the_minute_limit(emulator: EmulatorCore) -> None:
    assert_limited(emulator, code(emulator, "13800138000,13800138000"), MINUTE, stored=0)


def test_limited_number_rejects_the_whole_multi_number_call(emulator: EmulatorCore, clock) -> None:
    assert code(emulator, "13700137000")["Code"] == "OK"
    clock.advance(10)
    assert_limited(emulator, code(emulator, "13800138000,13700137000,13600136000"), MINUTE, stored=1)
    assert [m["phone_number"] for m in emulator.messages()] == ["13700137000"]


def test_rejected_sends_do_not_consume_permits(emulator: EmulatorCore) -> None:
    assert code(emulator, value="12")["Code"] == "isv.TEMPLATE_PARAMS_ILLEGAL"
    assert code(emulator)["Code"] == "OK"


def test_batch_sends_are_flow_controlled(emulator: EmulatorCore) -> None:
    assert code(emulator, "13800138000")["Code"] == "OK"
    body = emulator.handle(
        "SendBatchSms",
        {
            "PhoneNumberJson": '["13700137000","13800138000"]',
            "SignNameJson": '["速通科技","速通科技"]',
            "TemplateCode": "SMS_900000001",
            "TemplateParamJson": '[{"code":"1111"},{"code":"2222"}]',
        },
    )
    assert_limited(emulator, body, MINUTE, stored=1)


# ---------------------------------------------------------------- notifications and promotions


def ship(emu: EmulatorCore, phone: str = "13800138000", template: str = "SMS_900000002") -> dict[str, Any]:
    params = dict(SHIP)
    if template == "SMS_900000003":
        params["TemplateParam"] = '{"name":"张三"}'
    return emu.handle("SendSms", {"PhoneNumbers": phone, **params, "TemplateCode": template})


def test_fifty_notifications_per_template_per_rolling_day(emulator: EmulatorCore, clock) -> None:
    for _ in range(50):
        assert ship(emulator)["Code"] == "OK"
        clock.advance(60)
    assert_limited(emulator, ship(emulator), DAY50, stored=50)
    # Another template, or another number, has its own allowance.
    assert ship(emulator, template="SMS_900000003")["Code"] == "OK"
    assert ship(emulator, phone="13700137000")["Code"] == "OK"
    # 24 h after the first notification it leaves the window.
    at(clock, 10, 0, 30, day=2)
    assert ship(emulator)["Code"] == "OK"


def test_fifty_promotions_per_rolling_day(emulator: EmulatorCore) -> None:
    numbers = ",".join(["13800138000"] * 50)
    assert ship(emulator, numbers, template="SMS_900000003")["Code"] == "OK"
    assert_limited(emulator, ship(emulator, template="SMS_900000003"), DAY50, stored=50)


def test_fifty_one_copies_in_one_call_are_rejected_together(emulator: EmulatorCore) -> None:
    assert_limited(emulator, ship(emulator, ",".join(["13800138000"] * 51)), DAY50, stored=0)


def test_international_sends_have_no_per_number_minute_limit(emulator: EmulatorCore) -> None:
    for value in ("1111", "2222"):
        body = emulator.handle(
            "SendSms",
            {
                "PhoneNumbers": "85291234567",
                "SignName": "SuTong",
                "TemplateCode": "SMS_900000004",
                "TemplateParam": f'{{"code":"{value}"}}',
            },
        )
        assert body["Code"] == "OK"


# ---------------------------------------------------------------- receipts


def details(emu: EmulatorCore, phone: str) -> list[dict[str, Any]]:
    body = emu.handle(
        "QuerySendDetails", {"PhoneNumber": phone, "SendDate": "20250901", "PageSize": "50", "CurrentPage": "1"}
    )
    return body["SmsSendDetailDTOs"]["SmsSendDetailDTO"]


def test_receipt_transitions(emulator: EmulatorCore, clock) -> None:
    at(clock, 10, 0, 30)
    assert ship(emulator, "13800138000,13900000001,13900000002,13900000003")["Code"] == "OK"
    waiting = {"SendStatus": 1, "ErrCode": "", "ReceiveDate": ""}
    for phone in ("13800138000", "13900000001", "13900000002", "13900000003"):
        [row] = details(emulator, phone)
        assert {k: row[k] for k in waiting} == waiting
        assert row["SendDate"] == "2025-09-01 10:00:30"
    clock.advance(2.9)
    assert details(emulator, "13800138000")[0]["SendStatus"] == 1
    clock.advance(0.1)  # send time + receipt_delay (3 s)
    expected = {
        "13800138000": (3, "DELIVERED", "2025-09-01 10:00:33"),
        "13900000001": (2, "MN:0001", "2025-09-01 10:00:33"),
        "13900000002": (2, "MK:100D", "2025-09-01 10:00:33"),
        "13900000003": (1, "", ""),
    }
    for phone, want in expected.items():
        [row] = details(emulator, phone)
        assert (row["SendStatus"], row["ErrCode"], row["ReceiveDate"]) == want
    clock.advance(86400 * 3)
    assert details(emulator, "13900000003")[0]["SendStatus"] == 1
    assert [(m["phone_number"], m["send_status"], m["err_code"]) for m in emulator.messages()] == [
        ("13800138000", 3, "DELIVERED"),
        ("13900000001", 2, "MN:0001"),
        ("13900000002", 2, "MK:100D"),
        ("13900000003", 1, ""),
    ]


def test_receipt_delay_is_fixed_at_send_time(clock) -> None:
    fast = EmulatorCore(None, receipt_delay=0.0, clock=clock)
    try:
        assert ship(fast)["Code"] == "OK"
        assert fast.messages()[0]["send_status"] == 3
    finally:
        fast.close()


@pytest.mark.parametrize("delay", [1.0, 30.0])
def test_receive_date_is_send_time_plus_delay(clock, delay: float) -> None:
    core = EmulatorCore(None, receipt_delay=delay, clock=clock)
    try:
        at(clock, 23, 59, 50)
        assert ship(core)["Code"] == "OK"
        clock.advance(delay)
        [row] = details(core, "13800138000")
        expected = datetime.fromtimestamp(clock.now, CST).strftime("%Y-%m-%d %H:%M:%S")
        assert (row["SendStatus"], row["ReceiveDate"]) == (3, expected)
    finally:
        core.close()
