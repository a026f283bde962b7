"""EmulatorCore: the exact wire shapes (types included) of the query, list and detail actions."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from sms_mcp.emulator.core import EmulatorCore

CST = timezone(timedelta(hours=8))
REQUEST_ID = re.compile(r"[0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}")
DATE_TIME = re.compile(r"2025-\d\d-\d\d \d\d:\d\d:\d\d")
SHIP_PARAM = json.dumps({"name": "张三", "order_no": "SO1", "date": "明天"}, ensure_ascii=False)


def at(clock: Any, day: int, hh: int, mm: int, ss: int = 0) -> None:
    clock.now = datetime(2025, 9, day, hh, mm, ss, tzinfo=CST).timestamp()


def ship(emu: EmulatorCore, phone: str, out_id: str | None = None, sign: str = "速通科技") -> str:
    params = {"PhoneNumbers": phone, "SignName": sign, "TemplateCode": "SMS_900000002", "TemplateParam": SHIP_PARAM}
    if out_id is not None:
        params["OutId"] = out_id
    body = emu.handle("SendSms", params)
    assert body["Code"] == "OK", body
    return body["BizId"]


def ok(body: dict[str, Any]) -> dict[str, Any]:
    assert body["Code"] == "OK", body
    assert body["Message"] == "OK"
    assert REQUEST_ID.fullmatch(body["RequestId"])
    return body


def query_details(emu: EmulatorCore, phone: str, day: str = "20250901", **extra: str) -> dict[str, Any]:
    params = {"PhoneNumber": phone, "SendDate": day, "PageSize": "10", "CurrentPage": "1", **extra}
    return emu.handle("QuerySendDetails", params)


# ---------------------------------------------------------------- QuerySendDetails


def test_query_send_details_shape(emulator: EmulatorCore, clock) -> None:
    at(clock, 1, 10, 0, 30)
    biz_id = ship(emulator, "13800138000", out_id="o-1")
    clock.advance(5)
    body = ok(query_details(emulator, "13800138000"))
    assert body == {
        "RequestId": body["RequestId"],
        "Code": "OK",
        "Message": "OK",
        "TotalCount": "1",
        "SmsSendDetailDTOs": {
            "SmsSendDetailDTO": [
                {
                    "ErrCode": "DELIVERED",
                    "TemplateCode": "SMS_900000002",
                    "OutId": "o-1",
                    "ReceiveDate": "2025-09-01 10:00:33",
                    "SendDate": "2025-09-01 10:00:30",
                    "PhoneNum": "13800138000",
                    "Content": "【速通科技】尊敬的张三，您的订单SO1已发货，预计明天送达，请保持电话畅通。",
                    "SendStatus": 3,
                }
            ]
        },
    }
    assert isinstance(body["TotalCount"], str)
    assert ok(query_details(emulator, "13800138000", BizId=biz_id))["TotalCount"] == "1"


def test_query_send_details_without_out_id_omits_it(emulator: EmulatorCore) -> None:
    ship(emulator, "13800138000")
    [row] = query_details(emulator, "13800138000")["SmsSendDetailDTOs"]["SmsSendDetailDTO"]
    assert "OutId" not in row


def test_query_send_details_newest_first_and_paged(emulator: EmulatorCore, clock) -> None:
    for i in range(5):
        at(clock, 1, 10, i)
        ship(emulator, "13800138000", out_id=f"o-{i}")
    body = ok(query_details(emulator, "+8613800138000", PageSize="2", CurrentPage="1"))
    assert body["TotalCount"] == "5"
    assert [r["OutId"] for r in body["SmsSendDetailDTOs"]["SmsSendDetailDTO"]] == ["o-4", "o-3"]
    body = ok(query_details(emulator, "008613800138000", PageSize="2", CurrentPage="3"))
    assert [r["OutId"] for r in body["SmsSendDetailDTOs"]["SmsSendDetailDTO"]] == ["o-0"]
    body = ok(query_details(emulator, "13800138000", PageSize="2", CurrentPage="4"))
    assert body["TotalCount"] == "5" and body["SmsSendDetailDTOs"]["SmsSendDetailDTO"] == []


def test_query_send_details_filters_by_biz_id_and_number(emulator: EmulatorCore) -> None:
    first = ship(emulator, "13800138000,13700137000", out_id="a")
    second = ship(emulator, "13800138000", out_id="b")
    rows = query_details(emulator, "13800138000", BizId=first)["SmsSendDetailDTOs"]["SmsSendDetailDTO"]
    assert [r["OutId"] for r in rows] == ["a"]
    rows = query_details(emulator, "13800138000", BizId=second.split("^")[0])["SmsSendDetailDTOs"]["SmsSendDetailDTO"]
    assert [r["OutId"] for r in rows] == ["b"]
    assert query_details(emulator, "13700137000", BizId=second)["TotalCount"] == "0"
    assert query_details(emulator, "13600136000")["TotalCount"] == "0"


def test_query_send_details_uses_the_utc8_calendar_day(emulator: EmulatorCore, clock) -> None:
    at(clock, 1, 23, 59, 59)
    ship(emulator, "13800138000", out_id="late")
    at(clock, 2, 0, 0, 0)
    ship(emulator, "13800138000", out_id="early")
    day1 = query_details(emulator, "13800138000", "20250901")["SmsSendDetailDTOs"]["SmsSendDetailDTO"]
    day2 = query_details(emulator, "13800138000", "20250902")["SmsSendDetailDTOs"]["SmsSendDetailDTO"]
    assert [r["OutId"] for r in day1] == ["late"]
    assert [r["OutId"] for r in day2] == ["early"]


def test_query_send_details_international(emulator: EmulatorCore) -> None:
    body = emulator.handle(
        "SendSms",
        {
            "PhoneNumbers": "+85291234567",
            "SignName": "SuTong",
            "TemplateCode": "SMS_900000004",
            "TemplateParam": '{"code":"9999"}',
        },
    )
    assert body["Code"] == "OK"
    [row] = query_details(emulator, "85291234567")["SmsSendDetailDTOs"]["SmsSendDetailDTO"]
    assert row["PhoneNum"] == "85291234567"


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ({"SendDate": "2025-09-01"}, "isv.INVALID_PARAMETERS"),
        ({"SendDate": "20250931"}, "isv.INVALID_PARAMETERS"),
        ({"SendDate": "20250801"}, "isv.INVALID_PARAMETERS"),  # 31 days before "today" (2025-09-01)
        ({"PageSize": "51"}, "isv.INVALID_PARAMETERS"),
        ({"PageSize": "0"}, "isv.INVALID_PARAMETERS"),
        ({"PageSize": "ten"}, "isv.INVALID_PARAMETERS"),
        ({"CurrentPage": "0"}, "isv.INVALID_PARAMETERS"),
        ({"PhoneNumber": "12345"}, "isv.MOBILE_NUMBER_ILLEGAL"),
    ],
)
def test_query_send_details_errors(emulator: EmulatorCore, extra: dict[str, str], code: str) -> None:
    params = {"PhoneNumber": "13800138000", "SendDate": "20250901", "PageSize": "10", "CurrentPage": "1", **extra}
    body = emulator.handle("QuerySendDetails", params)
    assert body["Code"] == code
    assert set(body) == {"RequestId", "Code", "Message"}


def test_query_send_details_30_days_back_is_allowed(emulator: EmulatorCore) -> None:
    assert ok(query_details(emulator, "13800138000", "20250802"))["TotalCount"] == "0"


# ---------------------------------------------------------------- QuerySendStatistics


def stats(emu: EmulatorCore, **extra: str) -> dict[str, Any]:
    params = {"IsGlobe": "1", "StartDate": "20250901", "EndDate": "20250903", "PageIndex": "1", "PageSize": "10"}
    return emu.handle("QuerySendStatistics", {**params, **extra})


def test_statistics_are_computed_from_stored_messages(emulator: EmulatorCore, clock) -> None:
    at(clock, 1, 9, 0)
    ship(emulator, "13800138000,13900000001,13900000003")
    at(clock, 2, 9, 0)
    ship(emulator, "13800138000,13700137000,13900000002")
    emulator.handle(
        "SendSms",
        {
            "PhoneNumbers": "85291234567",
            "SignName": "SuTong",
            "TemplateCode": "SMS_900000004",
            "TemplateParam": '{"code":"1234"}',
        },
    )
    clock.advance(1)  # day 2's receipts are not in yet
    body = ok(stats(emulator))
    assert body == {
        "RequestId": body["RequestId"],
        "Code": "OK",
        "Message": "OK",
        "Data": {
            "TotalSize": 2,
            "TargetList": [
                {
                    "TotalCount": 3,
                    "RespondedSuccessCount": 1,
                    "RespondedFailCount": 1,
                    "NoRespondedCount": 1,
                    "SendDate": "20250901",
                },
                {
                    "TotalCount": 3,
                    "RespondedSuccessCount": 0,
                    "RespondedFailCount": 0,
                    "NoRespondedCount": 3,
                    "SendDate": "20250902",
                },
            ],
        },
    }
    clock.advance(10)
    day2 = ok(stats(emulator, StartDate="20250902"))["Data"]["TargetList"]
    assert day2 == [
        {
            "TotalCount": 3,
            "RespondedSuccessCount": 2,
            "RespondedFailCount": 1,
            "NoRespondedCount": 0,
            "SendDate": "20250902",
        }
    ]
    intl = ok(stats(emulator, IsGlobe="2"))["Data"]
    assert intl == {
        "TotalSize": 1,
        "TargetList": [
            {
                "TotalCount": 1,
                "RespondedSuccessCount": 1,
                "RespondedFailCount": 0,
                "NoRespondedCount": 0,
                "SendDate": "20250902",
            }
        ],
    }


def test_statistics_filters_and_paging(emulator: EmulatorCore, clock) -> None:
    for day in (1, 2, 3):
        at(clock, day, 9, 0)
        ship(emulator, "13800138000")
    emulator.handle(
        "SendSms",
        {
            "PhoneNumbers": "13800138000",
            "SignName": "速通验证",
            "TemplateCode": "SMS_900000001",
            "TemplateParam": '{"code":"1234"}',
        },
    )
    page2 = ok(stats(emulator, PageSize="2", PageIndex="2"))["Data"]
    assert page2["TotalSize"] == 3
    assert [r["SendDate"] for r in page2["TargetList"]] == ["20250903"]
    assert page2["TargetList"][0]["TotalCount"] == 2
    by_type = ok(stats(emulator, TemplateType="0"))["Data"]
    assert by_type["TotalSize"] == 1 and by_type["TargetList"][0]["TotalCount"] == 1
    by_sign = ok(stats(emulator, SignName="速通科技"))["Data"]
    assert [r["TotalCount"] for r in by_sign["TargetList"]] == [1, 1, 1]
    assert ok(stats(emulator, StartDate="20250904", EndDate="20250910"))["Data"] == {"TotalSize": 0, "TargetList": []}


@pytest.mark.parametrize(
    "extra",
    [
        {"IsGlobe": "3"},
        {"IsGlobe": "0"},
        {"StartDate": "20250905"},
        {"EndDate": "2025-09-03"},
        {"PageSize": "51"},
        {"PageIndex": "0"},
        {"TemplateType": "5"},
    ],
)
def test_statistics_errors(emulator: EmulatorCore, extra: dict[str, str]) -> None:
    assert stats(emulator, **extra)["Code"] == "isv.INVALID_PARAMETERS"


# ---------------------------------------------------------------- signatures


def test_sign_list_shape(emulator: EmulatorCore) -> None:
    body = ok(emulator.handle("QuerySmsSignList", {}))
    assert (body["TotalCount"], body["CurrentPage"], body["PageSize"]) == (6, 1, 10)
    signs = body["SmsSignList"]
    assert [(s["SignName"], s["AuditStatus"], s["BusinessType"]) for s in signs] == [
        ("速通科技", "AUDIT_STATE_PASS", "通用类型"),
        ("速通验证", "AUDIT_STATE_PASS", "验证码类型"),
        ("SuTong", "AUDIT_STATE_PASS", "通用类型"),
        ("星河商城", "AUDIT_STATE_INIT", "通用类型"),
        ("月光书店", "AUDIT_STATE_NOT_PASS", "通用类型"),
        ("旧品牌", "AUDIT_STATE_CANCEL", "通用类型"),
    ]
    for sign in signs:
        assert set(sign) == {
            "SignName",
            "AuditStatus",
            "CreateDate",
            "Reason",
            "BusinessType",
            "OrderId",
            "AppIcpRecordId",
            "TrademarkId",
            "AuthorizationLetterId",
            "authorizationLetterAuditPass",
        }
        assert DATE_TIME.fullmatch(sign["CreateDate"]) and sign["CreateDate"].startswith("2025-")
        assert set(sign["Reason"]) == {"RejectDate", "RejectInfo", "RejectSubInfo"}
        assert isinstance(sign["OrderId"], str)
        assert all(isinstance(sign[k], int) for k in ("AppIcpRecordId", "TrademarkId", "AuthorizationLetterId"))
        assert isinstance(sign["authorizationLetterAuditPass"], bool)
    assert signs[3]["Reason"]["RejectInfo"] == "无审核备注"
    assert signs[4]["Reason"]["RejectInfo"] == "文件不能证明信息真实性，请重新上传。"


def test_sign_list_paging(emulator: EmulatorCore) -> None:
    body = ok(emulator.handle("QuerySmsSignList", {"PageIndex": "2", "PageSize": "4"}))
    assert (body["TotalCount"], body["CurrentPage"], body["PageSize"]) == (6, 2, 4)
    assert [s["SignName"] for s in body["SmsSignList"]] == ["月光书店", "旧品牌"]
    assert ok(emulator.handle("QuerySmsSignList", {"PageIndex": "3", "PageSize": "4"}))["SmsSignList"] == []


@pytest.mark.parametrize("action", ["QuerySmsSignList", "QuerySmsTemplateList"])
@pytest.mark.parametrize("params", [{"PageSize": "51"}, {"PageSize": "0"}, {"PageIndex": "0"}, {"PageIndex": "x"}])
def test_list_paging_errors(emulator: EmulatorCore, action: str, params: dict[str, str]) -> None:
    body = emulator.handle(action, params)
    assert body["Code"] == "isv.INVALID_PARAMETERS"
    assert set(body) == {"RequestId", "Code", "Message"}


@pytest.mark.parametrize(
    ("name", "status", "reject_info"),
    [
        ("速通科技", 1, "无审核备注"),
        ("速通验证", 1, "无审核备注"),
        ("SuTong", 1, "无审核备注"),
        ("星河商城", 0, "无审核备注"),
        ("月光书店", 2, "文件不能证明信息真实性，请重新上传。"),
        ("旧品牌", 10, "无审核备注"),
    ],
)
def test_get_sms_sign_shape(emulator: EmulatorCore, name: str, status: int, reject_info: str) -> None:
    body = ok(emulator.handle("GetSmsSign", {"SignName": name}))
    assert body["SignName"] == name
    assert body["SignStatus"] == status and isinstance(body["SignStatus"], int)
    assert body["AuditInfo"]["RejectInfo"] == reject_info
    assert set(body["AuditInfo"]) == {"RejectInfo", "AuditDate"}
    assert isinstance(body["FileUrlList"], list) and all(isinstance(u, str) for u in body["FileUrlList"])
    assert body["SignTag"] == "2"
    assert isinstance(body["QualificationId"], int)
    assert isinstance(body["ThirdParty"], bool)
    assert "AuthorizationLetterAuditPass" in body and "authorizationLetterAuditPass" not in body
    assert isinstance(body["AuthorizationLetterAuditPass"], bool)
    assert DATE_TIME.fullmatch(body["CreateDate"])
    assert {d["OperatorCode"] for d in body["SignIspRegisterDetailList"]} == {"mobile", "unicom", "telecom"}
    assert all(isinstance(d["RegisterStatus"], int) for d in body["SignIspRegisterDetailList"])


# ---------------------------------------------------------------- templates


TEMPLATE_TABLE = [
    # code, name, outer type, list type, list AuditStatus, GetSmsTemplate TemplateStatus
    ("SMS_900000001", "登录验证码", 0, 2, "AUDIT_STATE_PASS", "1"),
    ("SMS_900000002", "发货通知", 1, 0, "AUDIT_STATE_PASS", "1"),
    ("SMS_900000003", "会员促销", 2, 1, "AUDIT_STATE_PASS", "1"),
    ("SMS_900000004", "International code", 3, 6, "AUDIT_STATE_PASS", "1"),
    ("SMS_900000005", "预约提醒", 1, 0, "AUDIT_STATE_INIT", "0"),
    ("SMS_900000006", "活动邀请", 2, 1, "AUDIT_STATE_NOT_PASS", "2"),
    ("SMS_900000007", "旧验证码", 0, 2, "AUDIT_SATE_CANCEL", "10"),
    ("SMS_900000008", "账单提醒", 1, 0, "AUDIT_STATE_CANCEL", "10"),
    ("SMS_900000009", "数字短信", 7, 7, "AUDIT_STATE_INIT", "0"),
]


def test_template_list_shape(emulator: EmulatorCore) -> None:
    body = ok(emulator.handle("QuerySmsTemplateList", {"PageSize": "50"}))
    assert (body["TotalCount"], body["CurrentPage"], body["PageSize"]) == (9, 1, 50)
    rows = body["SmsTemplateList"]
    assert [
        (t["TemplateCode"], t["TemplateName"], t["OuterTemplateType"], t["TemplateType"], t["AuditStatus"])
        for t in rows
    ] == [row[:5] for row in TEMPLATE_TABLE]
    for t in rows:
        assert isinstance(t["OuterTemplateType"], int) and isinstance(t["TemplateType"], int)
        assert set(t["Reason"]) == {"RejectDate", "RejectInfo", "RejectSubInfo"}
        assert DATE_TIME.fullmatch(t["CreateDate"]) and t["CreateDate"].startswith("2025-")
        assert isinstance(t["OrderId"], str)
    assert rows[0]["TemplateContent"] == "您的验证码为${code}，5分钟内有效，请勿泄露于他人。"
    assert rows[5]["Reason"]["RejectInfo"] == "变量不符合规范"
    default = ok(emulator.handle("QuerySmsTemplateList", {}))
    assert default["PageSize"] == 10 and len(default["SmsTemplateList"]) == 9


@pytest.mark.parametrize(("code", "name", "outer", "_list", "_audit", "status"), TEMPLATE_TABLE)
def test_get_sms_template_shape(
    emulator: EmulatorCore, code: str, name: str, outer: int, _list: int, _audit: str, status: str
) -> None:
    body = ok(emulator.handle("GetSmsTemplate", {"TemplateCode": code}))
    assert (body["TemplateCode"], body["TemplateName"]) == (code, name)
    assert body["TemplateStatus"] == status  # a string
    assert body["TemplateType"] == str(outer)  # a string, outer numbering
    assert isinstance(body["VariableAttribute"], str)
    variables = json.loads(body["VariableAttribute"])
    assert set(variables) == set(re.findall(r"\$\{(\w+)\}", body["TemplateContent"]))
    assert set(body["FileUrlList"]) == {"FileUrl"} and isinstance(body["FileUrlList"]["FileUrl"], list)
    assert set(body["AuditInfo"]) == {"RejectInfo", "AuditDate"}
    assert isinstance(body["TemplateTag"], int)
    assert ("VendorAuditStatus" in body) == (outer == 7)


def test_get_sms_template_variable_attributes(emulator: EmulatorCore) -> None:
    one = ok(emulator.handle("GetSmsTemplate", {"TemplateCode": "SMS_900000001"}))
    assert json.loads(one["VariableAttribute"]) == {"code": "numberCaptcha"}
    two = ok(emulator.handle("GetSmsTemplate", {"TemplateCode": "SMS_900000002"}))
    assert json.loads(two["VariableAttribute"]) == {"name": "name", "order_no": "other_number2", "date": "time"}
    six = ok(emulator.handle("GetSmsTemplate", {"TemplateCode": "SMS_900000006"}))
    assert six["AuditInfo"]["RejectInfo"] == "变量不符合规范"


def test_added_template_appears_in_list_and_detail(emulator: EmulatorCore) -> None:
    emulator.add_template("SMS_900000120", "到货通知", 1, "您的${item}已到货。", variables={"item": "others"})
    body = ok(emulator.handle("QuerySmsTemplateList", {"PageIndex": "2", "PageSize": "9"}))
    assert body["TotalCount"] == 10
    assert [t["TemplateCode"] for t in body["SmsTemplateList"]] == ["SMS_900000120"]
    assert ok(emulator.handle("GetSmsTemplate", {"TemplateCode": "SMS_900000120"}))["TemplateStatus"] == "1"


# ---------------------------------------------------------------- qualifications


def test_qualification_record_shape(emulator: EmulatorCore) -> None:
    body = ok(emulator.handle("QuerySmsQualificationRecord", {}))
    assert body["Success"] is True and body["AccessDeniedDetail"] == ""
    data = body["Data"]
    assert (data["PageNo"], data["PageSize"], data["Total"]) == (1, 10, 3)
    assert [
        (
            r["GroupId"],
            r["QualificationGroupName"],
            r["CompanyName"],
            r["LegalPersonName"],
            r["StateName"],
            r["UseBySelf"],
            r["WorkOrderId"],
        )
        for r in data["List"]
    ] == [
        (10001, "速通科技资质", "杭州速通科技有限公司", "张三", "PASS", "true", 20001),
        (10002, "星河商城资质", "星河商城（深圳）有限公司", "李四", "NOT_PASS", "false", 20002),
        (10003, "月光书店资质", "月光书店", "王五", "INIT", "true", 20003),
    ]
    assert data["List"][1]["AuditRemark"] == "营业执照已过期"
    for record in data["List"]:
        assert set(record) == {
            "GroupId",
            "QualificationGroupName",
            "CompanyName",
            "LegalPersonName",
            "StateName",
            "UseBySelf",
            "WorkOrderId",
            "AuditRemark",
            "AuditTime",
            "CreateDate",
        }


@pytest.mark.parametrize(
    ("params", "groups"),
    [
        ({"State": "NOT_PASS"}, [10002]),
        ({"UseBySelf": "False"}, [10002]),  # the Python SDK sends str(False)
        ({"UseBySelf": "true"}, [10001, 10003]),
        ({"CompanyName": "星河"}, [10002]),
        ({"LegalPersonName": "王五"}, [10003]),
        ({"QualificationGroupName": "资质"}, [10001, 10002, 10003]),
        ({"WorkOrderId": "20001"}, [10001]),
        ({"State": "CANCEL"}, []),
        ({"PageNo": "2", "PageSize": "2"}, [10003]),
    ],
)
def test_qualification_record_filters(emulator: EmulatorCore, params: dict[str, str], groups: list[int]) -> None:
    data = ok(emulator.handle("QuerySmsQualificationRecord", params))["Data"]
    assert [r["GroupId"] for r in data["List"]] == groups
    if "PageNo" not in params:
        assert data["Total"] == len(groups)


@pytest.mark.parametrize("params", [{"PageSize": "51"}, {"PageNo": "0"}, {"State": "DONE"}, {"UseBySelf": "maybe"}])
def test_qualification_record_errors(emulator: EmulatorCore, params: dict[str, str]) -> None:
    body = emulator.handle("QuerySmsQualificationRecord", params)
    assert body["Code"] == "isv.INVALID_PARAMETERS"
    assert body["Success"] is False and body["AccessDeniedDetail"] == ""


@pytest.mark.parametrize(
    ("group", "state", "use_by_self"), [(10001, "PASSED", True), (10002, "FAILED", False), (10003, "INT", True)]
)
def test_single_qualification_shape(emulator: EmulatorCore, group: int, state: str, use_by_self: bool) -> None:
    body = ok(emulator.handle("QuerySingleSmsQualification", {"QualificationGroupId": str(group)}))
    assert body["Success"] is True and body["AccessDeniedDetail"] == ""
    data = body["Data"]
    assert data["QualificationGroupId"] == group
    assert data["State"] == state
    assert data["UseBySelf"] is use_by_self
    assert isinstance(data["WorkOrderId"], int) and isinstance(data["WhetherShare"], bool)
    for key in ("LegalPersonIDCardNo", "AdminName", "AdminPhoneNo", "AdminIDCardNo", "AdminIDCardFrontFace"):
        assert isinstance(data[key], str) and data[key]
    assert data["BusinessLicensePics"] and {"Type", "LicensePic", "PicUrl"} <= set(data["BusinessLicensePics"][0])
    assert isinstance(data["OtherFiles"], list)


def test_single_qualification_legal_person(emulator: EmulatorCore) -> None:
    data = ok(emulator.handle("QuerySingleSmsQualification", {"QualificationGroupId": "10002", "OrderId": "20002"}))[
        "Data"
    ]
    assert (data["CompanyName"], data["LegalPersonName"], data["QualificationName"]) == (
        "星河商城（深圳）有限公司",
        "李四",
        "星河商城资质",
    )


@pytest.mark.parametrize(
    "params", [{"QualificationGroupId": "99999"}, {"QualificationGroupId": "10001", "OrderId": "1"}]
)
def test_single_qualification_not_found(emulator: EmulatorCore, params: dict[str, str]) -> None:
    from sms_mcp.wire.base import GatewayError

    with pytest.raises(GatewayError) as caught:
        emulator.handle("QuerySingleSmsQualification", params)
    assert (caught.value.status, caught.value.code) == (404, "QualificationNotFound")
