"""EmulatorCore storage: persistence across instances, concurrent threads, and the sandbox transport."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from sms_mcp.config import Settings
from sms_mcp.emulator.core import EmulatorCore
from sms_mcp.wire.base import GatewayError, Transport
from sms_mcp.wire.sandbox import SandboxTransport

SHIP_PARAM = json.dumps({"name": "张三", "order_no": "SO1", "date": "明天"}, ensure_ascii=False)


def ship(core: EmulatorCore, phone: str) -> dict:
    return core.handle(
        "SendSms",
        {"PhoneNumbers": phone, "SignName": "速通科技", "TemplateCode": "SMS_900000002", "TemplateParam": SHIP_PARAM},
    )


def verification(core: EmulatorCore, phone: str = "13800138000") -> dict:
    return core.handle(
        "SendSms",
        {
            "PhoneNumbers": phone,
            "SignName": "速通科技",
            "TemplateCode": "SMS_900000001",
            "TemplateParam": '{"code":"1234"}',
        },
    )


def details(core: EmulatorCore, phone: str, biz_id: str) -> list[dict]:
    body = core.handle(
        "QuerySendDetails",
        {"PhoneNumber": phone, "SendDate": "20250901", "PageSize": "10", "CurrentPage": "1", "BizId": biz_id},
    )
    return body["SmsSendDetailDTOs"]["SmsSendDetailDTO"]


# ---------------------------------------------------------------- persistence


def test_receipt_sent_by_one_instance_is_queried_by_the_next(tmp_path: Path, clock) -> None:
    db = tmp_path / "sandbox.sqlite3"
    first = EmulatorCore(db, receipt_delay=3.0, clock=clock)
    biz_id = ship(first, "13800138000")["BizId"]
    first.close()
    clock.advance(60)
    second = EmulatorCore(db, receipt_delay=3.0, clock=clock)
    try:
        [row] = details(second, "13800138000", biz_id)
        assert (row["SendStatus"], row["ErrCode"]) == (3, "DELIVERED")
        assert second.messages()[0]["biz_id"] == biz_id
    finally:
        second.close()


def test_demo_account_is_seeded_once(tmp_path: Path, clock) -> None:
    db = tmp_path / "sandbox.sqlite3"
    first = EmulatorCore(db, clock=clock)
    first.add_template("SMS_900000130", "自定义", 1, "您的${item}已到货。")
    first.close()
    second = EmulatorCore(db, clock=clock)
    try:
        assert second.handle("QuerySmsSignList", {})["TotalCount"] == 6
        assert second.handle("QuerySmsTemplateList", {})["TotalCount"] == 10
        assert second.handle("QuerySmsQualificationRecord", {})["Data"]["Total"] == 3
    finally:
        second.close()


def test_flow_control_is_shared_by_two_open_instances(tmp_path: Path, clock) -> None:
    db = tmp_path / "shared.sqlite3"
    a = EmulatorCore(db, clock=clock)
    b = EmulatorCore(db, clock=clock)
    try:
        assert verification(a)["Code"] == "OK"
        assert verification(b)["Message"] == "触发分钟级流控Permits:1"
        assert len(a.messages()) == len(b.messages()) == 1
    finally:
        a.close()
        b.close()


def test_receipt_delay_is_per_message_not_per_reader(tmp_path: Path, clock) -> None:
    db = tmp_path / "sandbox.sqlite3"
    slow = EmulatorCore(db, receipt_delay=100.0, clock=clock)
    fast = EmulatorCore(db, receipt_delay=0.0, clock=clock)
    try:
        biz_id = ship(slow, "13800138000")["BizId"]
        assert details(fast, "13800138000", biz_id)[0]["SendStatus"] == 1
        clock.advance(100)
        assert details(fast, "13800138000", biz_id)[0]["SendStatus"] == 3
    finally:
        slow.close()
        fast.close()


def test_another_process_sees_the_same_store(tmp_path: Path) -> None:
    db = tmp_path / "sandbox.sqlite3"
    script = (
        "import json, sys\n"
        "from sms_mcp.emulator.core import EmulatorCore\n"
        "core = EmulatorCore(sys.argv[1], receipt_delay=0)\n"
        "body = core.handle('SendSms', {'PhoneNumbers': '13900000002', 'SignName': '速通科技',\n"
        "    'TemplateCode': 'SMS_900000002', 'TemplateParam': sys.argv[2]})\n"
        "print(json.dumps(body))\n"
        "core.close()\n"
    )
    here = EmulatorCore(db)  # open while the other process writes
    try:
        done = subprocess.run(
            [sys.executable, "-c", script, str(db), SHIP_PARAM], capture_output=True, text=True, timeout=60, check=True
        )
        body = json.loads(done.stdout)
        assert body["Code"] == "OK"
        [msg] = here.messages()
        assert (msg["biz_id"], msg["phone_number"], msg["send_status"], msg["err_code"]) == (
            body["BizId"],
            "13900000002",
            2,
            "MK:100D",
        )
    finally:
        here.close()


def test_close_is_idempotent_and_final(clock) -> None:
    core = EmulatorCore(None, clock=clock)
    core.close()
    core.close()
    with pytest.raises(RuntimeError):
        core.handle("QuerySmsSignList", {})


# ---------------------------------------------------------------- threads


def run_threads(count: int, target) -> None:
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def wrapped(i: int) -> None:
        try:
            barrier.wait()
            target(i)
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def test_concurrent_sends_from_threads(emulator: EmulatorCore) -> None:
    results: list[str] = []

    def work(i: int) -> None:
        for j in range(10):
            body = ship(emulator, f"1380000{i:02d}{j:02d}")
            results.append(body["Code"])
            emulator.handle("QuerySmsSignList", {})

    run_threads(8, work)
    assert results == ["OK"] * 80
    messages = emulator.messages()
    assert len(messages) == 80
    assert len({m["biz_id"] for m in messages}) == 80


def test_concurrent_verification_codes_to_one_number_admit_exactly_one(emulator: EmulatorCore) -> None:
    codes: list[str] = []
    run_threads(12, lambda i: codes.append(verification(emulator)["Code"]))
    assert sorted(codes) == ["OK"] + ["isv.BUSINESS_LIMIT_CONTROL"] * 11
    assert len(emulator.messages()) == 1


def test_concurrent_instances_on_one_file_admit_exactly_one(tmp_path: Path, clock) -> None:
    db = tmp_path / "shared.sqlite3"
    cores = [EmulatorCore(db, clock=clock) for _ in range(4)]
    codes: list[str] = []
    try:
        run_threads(8, lambda i: codes.append(verification(cores[i % 4])["Code"]))
    finally:
        for core in cores:
            core.close()
    assert codes.count("OK") == 1
    assert codes.count("isv.BUSINESS_LIMIT_CONTROL") == 7


# ---------------------------------------------------------------- sandbox transport


def test_sandbox_transport_from_settings(tmp_path: Path) -> None:
    data_dir = tmp_path / "deeper" / "sms-mcp"
    transport = SandboxTransport.from_settings(Settings(data_dir=data_dir, sandbox_receipt_delay=7.5))
    try:
        assert isinstance(transport, Transport)
        assert transport.name == "sandbox"
        assert (data_dir / "sandbox.sqlite3").is_file()
        assert transport.core.db_path == data_dir / "sandbox.sqlite3"
        assert transport.core.receipt_delay == 7.5
    finally:
        transport.core.close()


async def test_sandbox_transport_calls_and_persists(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, sandbox_receipt_delay=0.0)
    transport = SandboxTransport.from_settings(settings)
    await transport.start()
    body = await transport.call(
        "SendSms",
        {
            "PhoneNumbers": "13900000001",
            "SignName": "速通科技",
            "TemplateCode": "SMS_900000002",
            "TemplateParam": SHIP_PARAM,
        },
    )
    assert body["Code"] == "OK"
    with pytest.raises(GatewayError) as caught:
        await transport.call("GetSmsSign", {"SignName": "nope"})
    assert caught.value.code == "SignatureNotFound"
    await transport.aclose()
    await transport.aclose()  # safe twice

    again = SandboxTransport.from_settings(settings)
    try:
        # The real clock is in use here: take the UTC+8 date from the stored send time, not from "now".
        sent = again.core.messages()[0]["send_time"]
        today = datetime.fromtimestamp(sent, timezone(timedelta(hours=8))).strftime("%Y%m%d")
        found = await again.call(
            "QuerySendDetails",
            {
                "PhoneNumber": "13900000001",
                "SendDate": today,
                "PageSize": "10",
                "CurrentPage": "1",
                "BizId": body["BizId"],
            },
        )
        [row] = found["SmsSendDetailDTOs"]["SmsSendDetailDTO"]
        assert (row["SendStatus"], row["ErrCode"]) == (2, "MN:0001")
    finally:
        await again.aclose()
