"""Conformance: Alibaba's own Dysmsapi SDK models parse every emulator body, and the key fields survive."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from alibabacloud_dysmsapi20170525 import models

from sms_mcp.emulator.core import EmulatorCore

SHIP_PARAM = json.dumps({"name": "张三", "order_no": "SO1", "date": "明天"}, ensure_ascii=False)


def parse(model: type, body: dict[str, Any]) -> Any:
    parsed = model().from_map(body)
    # Round trip: what the SDK hands to a caller must still carry every field the emulator sent, with the same
    # value (a key the SDK does not model, or a shape it cannot read, would be lost or changed here).
    mapped = parsed.to_map()
    assert {k: mapped.get(k) for k in body} == body
    return parsed


def test_send_sms(emulator: EmulatorCore) -> None:
    body = emulator.handle(
        "SendSms",
        {
            "PhoneNumbers": "13800138000",
            "SignName": "速通科技",
            "TemplateCode": "SMS_900000002",
            "TemplateParam": SHIP_PARAM,
        },
    )
    parsed = parse(models.SendSmsResponseBody, body)
    assert (parsed.code, parsed.message, parsed.biz_id, parsed.request_id) == (
        "OK",
        "OK",
        body["BizId"],
        body["RequestId"],
    )


def test_send_sms_business_error(emulator: EmulatorCore) -> None:
    body = emulator.handle("SendSms", {"PhoneNumbers": "1", "SignName": "速通科技", "TemplateCode": "SMS_900000002"})
    parsed = parse(models.SendSmsResponseBody, body)
    assert parsed.code == "isv.MOBILE_NUMBER_ILLEGAL" and parsed.biz_id is None


def test_send_batch_sms(emulator: EmulatorCore) -> None:
    body = emulator.handle(
        "SendBatchSms",
        {
            "PhoneNumberJson": '["13800138000"]',
            "SignNameJson": '["速通科技"]',
            "TemplateCode": "SMS_900000002",
            "TemplateParamJson": f"[{SHIP_PARAM}]",
        },
    )
    parsed = parse(models.SendBatchSmsResponseBody, body)
    assert parsed.code == "OK" and parsed.biz_id == body["BizId"]


def test_query_send_details(emulator: EmulatorCore, clock) -> None:
    emulator.handle(
        "SendSms",
        {
            "PhoneNumbers": "13800138000,13900000001",
            "SignName": "速通科技",
            "TemplateCode": "SMS_900000002",
            "TemplateParam": SHIP_PARAM,
            "OutId": "o-1",
        },
    )
    clock.advance(10)
    body = emulator.handle(
        "QuerySendDetails", {"PhoneNumber": "13800138000", "SendDate": "20250901", "PageSize": "10", "CurrentPage": "1"}
    )
    parsed = parse(models.QuerySendDetailsResponseBody, body)
    assert parsed.total_count == "1"
    [dto] = parsed.sms_send_detail_dtos.sms_send_detail_dto
    assert (dto.send_status, dto.err_code, dto.phone_num, dto.out_id, dto.template_code) == (
        3,
        "DELIVERED",
        "13800138000",
        "o-1",
        "SMS_900000002",
    )
    assert dto.content.startswith("【速通科技】")
    assert dto.receive_date and dto.send_date


def test_query_send_statistics(emulator: EmulatorCore, clock) -> None:
    emulator.handle(
        "SendSms",
        {
            "PhoneNumbers": "13800138000,13900000003",
            "SignName": "速通科技",
            "TemplateCode": "SMS_900000002",
            "TemplateParam": SHIP_PARAM,
        },
    )
    clock.advance(10)
    body = emulator.handle(
        "QuerySendStatistics",
        {"IsGlobe": "1", "StartDate": "20250901", "EndDate": "20250901", "PageIndex": "1", "PageSize": "10"},
    )
    parsed = parse(models.QuerySendStatisticsResponseBody, body)
    assert parsed.data.total_size == 1
    [row] = parsed.data.target_list
    assert (row.total_count, row.responded_success_count, row.responded_fail_count, row.no_responded_count) == (
        2,
        1,
        0,
        1,
    )
    assert row.send_date == "20250901"


def test_query_sms_sign_list(emulator: EmulatorCore) -> None:
    parsed = parse(models.QuerySmsSignListResponseBody, emulator.handle("QuerySmsSignList", {}))
    assert parsed.total_count == 6 and parsed.current_page == 1 and parsed.page_size == 10
    first = parsed.sms_sign_list[0]
    assert (first.sign_name, first.audit_status, first.business_type) == ("速通科技", "AUDIT_STATE_PASS", "通用类型")
    # The lowercase wire key is the one the SDK maps; a capitalised one would be silently dropped.
    assert first.authorization_letter_audit_pass is True
    assert parsed.sms_sign_list[4].reason.reject_info == "文件不能证明信息真实性，请重新上传。"


def test_query_sms_template_list(emulator: EmulatorCore) -> None:
    parsed = parse(models.QuerySmsTemplateListResponseBody, emulator.handle("QuerySmsTemplateList", {}))
    assert parsed.total_count == 9
    by_code = {t.template_code: t for t in parsed.sms_template_list}
    assert (by_code["SMS_900000001"].outer_template_type, by_code["SMS_900000001"].template_type) == (0, 2)
    assert by_code["SMS_900000007"].audit_status == "AUDIT_SATE_CANCEL"
    assert by_code["SMS_900000006"].reason.reject_info == "变量不符合规范"
    assert by_code["SMS_900000004"].signature_name == "SuTong"


def test_get_sms_sign(emulator: EmulatorCore) -> None:
    parsed = parse(models.GetSmsSignResponseBody, emulator.handle("GetSmsSign", {"SignName": "月光书店"}))
    assert (parsed.sign_name, parsed.sign_status) == ("月光书店", 2)
    assert parsed.audit_info.reject_info == "文件不能证明信息真实性，请重新上传。"
    assert parsed.authorization_letter_audit_pass is False
    assert isinstance(parsed.file_url_list, list) and parsed.file_url_list
    assert {d.operator_code for d in parsed.sign_isp_register_detail_list} == {"mobile", "unicom", "telecom"}


@pytest.mark.parametrize("code", ["SMS_900000001", "SMS_900000009"])
def test_get_sms_template(emulator: EmulatorCore, code: str) -> None:
    parsed = parse(models.GetSmsTemplateResponseBody, emulator.handle("GetSmsTemplate", {"TemplateCode": code}))
    assert parsed.template_code == code
    assert isinstance(parsed.template_status, str) and isinstance(parsed.template_type, str)
    assert json.loads(parsed.variable_attribute)
    assert parsed.file_url_list.file_url == []
    assert parsed.audit_info is not None


def test_query_sms_qualification_record(emulator: EmulatorCore) -> None:
    parsed = parse(models.QuerySmsQualificationRecordResponseBody, emulator.handle("QuerySmsQualificationRecord", {}))
    assert parsed.success is True and parsed.data.total == 3
    assert [(r.group_id, r.state_name, r.use_by_self) for r in parsed.data.list] == [
        (10001, "PASS", "true"),
        (10002, "NOT_PASS", "false"),
        (10003, "INIT", "true"),
    ]
    assert parsed.data.list[1].audit_remark == "营业执照已过期"


def test_query_single_sms_qualification(emulator: EmulatorCore) -> None:
    body = emulator.handle("QuerySingleSmsQualification", {"QualificationGroupId": "10001"})
    parsed = parse(models.QuerySingleSmsQualificationResponseBody, body)
    assert parsed.success is True
    data = parsed.data
    assert (data.qualification_group_id, data.state, data.use_by_self, data.legal_person_name) == (
        10001,
        "PASSED",
        True,
        "张三",
    )
    assert data.business_license_pics[0].pic_url.startswith("https://")
    assert data.admin_phone_no and data.legal_person_idcard_no


QUALIFICATION_ERROR_CASES: list[tuple[str, dict[str, str], Callable[[], Any]]] = [
    ("QuerySmsQualificationRecord", {"PageSize": "99"}, models.QuerySmsQualificationRecordResponseBody),
    ("QuerySmsSignList", {"PageSize": "99"}, models.QuerySmsSignListResponseBody),
    (
        "QuerySendStatistics",
        {"IsGlobe": "9", "StartDate": "20250901", "EndDate": "20250901", "PageIndex": "1", "PageSize": "1"},
        models.QuerySendStatisticsResponseBody,
    ),
]


@pytest.mark.parametrize(("action", "params", "model"), QUALIFICATION_ERROR_CASES)
def test_business_error_bodies_parse(emulator: EmulatorCore, action: str, params: dict[str, str], model) -> None:
    parsed = parse(model, emulator.handle(action, params))
    assert parsed.code == "isv.INVALID_PARAMETERS"
