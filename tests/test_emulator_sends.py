"""EmulatorCore: SendSms / SendBatchSms acceptance, validation and every rejection code (nothing stored)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from sms_mcp.emulator.core import EmulatorCore
from sms_mcp.wire.base import GatewayError

VERIFY = {"SignName": "速通科技", "TemplateCode": "SMS_900000001", "TemplateParam": '{"code":"123456"}'}
SHIP_PARAMS = {"name": "张三", "order_no": "SO20250901", "date": "9月3日"}
SHIP = {"SignName": "速通科技", "TemplateCode": "SMS_900000002", "TemplateParam": json.dumps(SHIP_PARAMS)}
INTL = {"SignName": "SuTong", "TemplateCode": "SMS_900000004", "TemplateParam": '{"code":"4321"}'}
REQUEST_ID = re.compile(r"[0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}")


def send(emu: EmulatorCore, phone: str = "13800138000", **params: str) -> dict[str, Any]:
    return emu.handle("SendSms", {"PhoneNumbers": phone, **params})


def batch(emu: EmulatorCore, numbers: list[Any], signs: list[Any], params: list[Any] | None, **extra: str):
    wire = {
        "PhoneNumberJson": json.dumps(numbers, ensure_ascii=False),
        "SignNameJson": json.dumps(signs, ensure_ascii=False),
        "TemplateCode": "SMS_900000002",
        **extra,
    }
    if params is not None:
        wire["TemplateParamJson"] = json.dumps(params, ensure_ascii=False)
    return emu.handle("SendBatchSms", wire)


def assert_rejected(emu: EmulatorCore, body: dict[str, Any], code: str) -> None:
    assert body["Code"] == code, body
    assert set(body) == {"RequestId", "Code", "Message"}
    assert body["Message"] and body["Message"] != "OK"
    assert REQUEST_ID.fullmatch(body["RequestId"])
    assert emu.messages() == []


# ---------------------------------------------------------------- accepted sends


def test_send_sms_ok_shape_and_stored_message(emulator: EmulatorCore, clock) -> None:
    body = send(emulator, "13800138000", OutId="order-42", **SHIP)
    assert set(body) == {"RequestId", "Code", "Message", "BizId"}
    assert body["Code"] == "OK" and body["Message"] == "OK"
    assert REQUEST_ID.fullmatch(body["RequestId"])
    assert re.fullmatch(r"[0-9]{15,18}\^0", body["BizId"])
    [msg] = emulator.messages()
    assert msg == {
        "biz_id": body["BizId"],
        "phone_number": "13800138000",
        "sign_name": "速通科技",
        "template_code": "SMS_900000002",
        "content": "【速通科技】尊敬的张三，您的订单SO20250901已发货，预计9月3日送达，请保持电话畅通。",
        "out_id": "order-42",
        "send_time": clock.now,
        "send_status": 1,
        "err_code": "",
    }


def test_each_call_gets_its_own_biz_id_and_request_id(emulator: EmulatorCore) -> None:
    first = send(emulator, "13800138000", **SHIP)
    second = send(emulator, "13700137000", **SHIP)
    assert first["BizId"] != second["BizId"]
    assert first["RequestId"] != second["RequestId"]


def test_multi_number_send_stores_one_message_per_number_under_one_biz_id(emulator: EmulatorCore) -> None:
    body = send(emulator, "13800138000,13700137000,13900000001", **SHIP)
    assert body["Code"] == "OK"
    messages = emulator.messages()
    assert [m["phone_number"] for m in messages] == ["13800138000", "13700137000", "13900000001"]
    assert {m["biz_id"] for m in messages} == {body["BizId"]}


@pytest.mark.parametrize(
    "raw",
    ["13800138000", "+13800138000", "+8613800138000", "008613800138000", "8613800138000", " 13800138000 "],
)
def test_mainland_number_formats_are_stored_as_11_digits(emulator: EmulatorCore, raw: str) -> None:
    assert send(emulator, raw, **SHIP)["Code"] == "OK"
    assert emulator.messages()[0]["phone_number"] == "13800138000"


@pytest.mark.parametrize("raw", ["85291234567", "+85291234567", "0085291234567"])
def test_international_number_formats_are_stored_with_country_code(emulator: EmulatorCore, raw: str) -> None:
    assert send(emulator, raw, **INTL)["Code"] == "OK"
    [msg] = emulator.messages()
    assert msg["phone_number"] == "85291234567"
    assert msg["content"] == "【SuTong】Your verification code is 4321. It expires in 5 minutes."


def test_verification_sign_accepts_verification_template(emulator: EmulatorCore) -> None:
    body = send(emulator, SignName="速通验证", TemplateCode="SMS_900000001", TemplateParam='{"code":"8888"}')
    assert body["Code"] == "OK"
    assert emulator.messages()[0]["content"] == "【速通验证】您的验证码为8888，5分钟内有效，请勿泄露于他人。"


def test_promotional_template_renders(emulator: EmulatorCore) -> None:
    assert (
        send(emulator, SignName="速通科技", TemplateCode="SMS_900000003", TemplateParam='{"name":"李雷"}')["Code"]
        == "OK"
    )
    assert emulator.messages()[0]["content"] == "【速通科技】李雷您好，会员日全场8折，详询门店。拒收请回复R"


def test_template_without_variables_needs_no_param(emulator: EmulatorCore) -> None:
    emulator.add_template("SMS_900000100", "维护通知", 1, "系统将于今晚维护，请提前保存数据。")
    assert send(emulator, SignName="速通科技", TemplateCode="SMS_900000100")["Code"] == "OK"
    assert (
        send(emulator, "13700137000", SignName="速通科技", TemplateCode="SMS_900000100", TemplateParam="{}")["Code"]
        == "OK"
    )
    assert len(emulator.messages()) == 2


def test_send_batch_sms_ok(emulator: EmulatorCore) -> None:
    body = batch(
        emulator,
        ["13800138000", "13700137000"],
        ["速通科技", "速通科技"],
        [SHIP_PARAMS, {**SHIP_PARAMS, "name": "李四"}],
        OutId="batch-1",
    )
    assert set(body) == {"RequestId", "Code", "Message", "BizId"}
    assert body["Code"] == "OK"
    messages = emulator.messages()
    assert [m["phone_number"] for m in messages] == ["13800138000", "13700137000"]
    assert [m["content"][:11] for m in messages] == ["【速通科技】尊敬的张三", "【速通科技】尊敬的李四"]
    assert {m["biz_id"] for m in messages} == {body["BizId"]}
    assert {m["out_id"] for m in messages} == {"batch-1"}


def test_send_batch_sms_per_number_signatures(emulator: EmulatorCore) -> None:
    emulator.add_template("SMS_900000101", "验证码", 0, "您的动态码为${code}。", variables={"code": "numberCaptcha"})
    body = emulator.handle(
        "SendBatchSms",
        {
            "PhoneNumberJson": '["13800138000","13700137000"]',
            "SignNameJson": '["速通科技","速通验证"]',
            "TemplateCode": "SMS_900000101",
            "TemplateParamJson": '[{"code":"1111"},{"code":"2222"}]',
            "SmsUpExtendCodeJson": '["90999","90998"]',
        },
    )
    assert body["Code"] == "OK", body
    assert [m["content"] for m in emulator.messages()] == [
        "【速通科技】您的动态码为1111。",
        "【速通验证】您的动态码为2222。",
    ]


# ---------------------------------------------------------------- gateway errors


@pytest.mark.parametrize(
    ("action", "params", "missing"),
    [
        ("SendSms", {"SignName": "速通科技", "TemplateCode": "SMS_900000001"}, "PhoneNumbers"),
        ("SendSms", {"PhoneNumbers": "13800138000", "TemplateCode": "SMS_900000001"}, "SignName"),
        ("SendSms", {"PhoneNumbers": "13800138000", "SignName": "速通科技", "TemplateCode": ""}, "TemplateCode"),
        ("SendBatchSms", {"SignNameJson": '["速通科技"]', "TemplateCode": "SMS_900000002"}, "PhoneNumberJson"),
        ("SendBatchSms", {"PhoneNumberJson": '["13800138000"]', "TemplateCode": "SMS_900000002"}, "SignNameJson"),
        ("SendBatchSms", {"PhoneNumberJson": '["13800138000"]', "SignNameJson": '["速通科技"]'}, "TemplateCode"),
        ("QuerySendDetails", {"PhoneNumber": "13800138000", "PageSize": "10", "CurrentPage": "1"}, "SendDate"),
        ("QuerySendDetails", {"SendDate": "20250901", "PageSize": "10", "CurrentPage": "1"}, "PhoneNumber"),
        ("QuerySendDetails", {"PhoneNumber": "13800138000", "SendDate": "20250901", "CurrentPage": "1"}, "PageSize"),
        (
            "QuerySendStatistics",
            {"StartDate": "20250901", "EndDate": "20250901", "PageIndex": "1", "PageSize": "10"},
            "IsGlobe",
        ),
        ("GetSmsSign", {}, "SignName"),
        ("GetSmsTemplate", {}, "TemplateCode"),
        ("QuerySingleSmsQualification", {}, "QualificationGroupId"),
    ],
)
def test_missing_required_parameter_is_a_gateway_400(
    emulator: EmulatorCore, action: str, params: dict[str, str], missing: str
) -> None:
    with pytest.raises(GatewayError) as caught:
        emulator.handle(action, params)
    err = caught.value
    assert (err.status, err.code, err.message) == (400, f"Missing{missing}", f"{missing} is mandatory for this action.")
    assert emulator.messages() == []


def test_gateway_error_body_shape(emulator: EmulatorCore) -> None:
    with pytest.raises(GatewayError) as caught:
        emulator.handle("SendSmsPlease", {"PhoneNumbers": "13800138000"})
    err = caught.value
    assert (err.status, err.code) == (404, "InvalidApi.NotFound")
    assert REQUEST_ID.fullmatch(err.request_id)
    assert err.host_id == "dysmsapi.aliyuncs.com"
    assert err.recommend == (
        f"https://api.aliyun.com/troubleshoot?q=InvalidApi.NotFound&product=Dysmsapi&requestId={err.request_id}"
    )
    assert err.body == {
        "RequestId": err.request_id,
        "HostId": "dysmsapi.aliyuncs.com",
        "Code": "InvalidApi.NotFound",
        "Message": "Specified api is not found, please check your url and method.",
        "Recommend": err.recommend,
    }
    assert err.body == err.to_body()


@pytest.mark.parametrize(
    ("action", "params", "status", "code", "message"),
    [
        ("GetSmsSign", {"SignName": "没有这个签名"}, 404, "SignatureNotFound", "The signature does not exist."),
        ("GetSmsTemplate", {"TemplateCode": "SMS_1"}, 404, "TemplateNotFound", "The template does not exist."),
    ],
)
def test_unknown_name_is_a_gateway_404(
    emulator: EmulatorCore, action: str, params: dict[str, str], status: int, code: str, message: str
) -> None:
    with pytest.raises(GatewayError) as caught:
        emulator.handle(action, params)
    assert (caught.value.status, caught.value.code, caught.value.message) == (status, code, message)


# ---------------------------------------------------------------- business errors (nothing stored)


@pytest.mark.parametrize(
    "phone",
    ["1380013800", "138001380001", "abc", "13800138000,12", "+861012345678", "23800138000", ",", "138 0013 8000"],
)
def test_invalid_number(emulator: EmulatorCore, phone: str) -> None:
    assert_rejected(emulator, send(emulator, phone, **SHIP), "isv.MOBILE_NUMBER_ILLEGAL")


def test_domestic_template_to_international_number(emulator: EmulatorCore) -> None:
    body = send(emulator, "13800138000,85291234567", **SHIP)
    assert_rejected(emulator, body, "isv.MOBILE_NUMBER_ILLEGAL")
    assert "domestic templates cannot be sent to international numbers" in body["Message"]


def test_international_template_to_mainland_number(emulator: EmulatorCore) -> None:
    body = send(emulator, "85291234567,+8613800138000", **INTL)
    assert_rejected(emulator, body, "isv.DOMESTIC_NUMBER_NOT_SUPPORTED")


def test_too_many_numbers_for_send_sms(emulator: EmulatorCore) -> None:
    numbers = ",".join(f"138{i:08d}" for i in range(1001))
    assert_rejected(emulator, send(emulator, numbers, **SHIP), "isv.MOBILE_COUNT_OVER_LIMIT")


def test_one_thousand_numbers_is_allowed(emulator: EmulatorCore) -> None:
    numbers = ",".join(f"138{i:08d}" for i in range(1000))
    assert send(emulator, numbers, **SHIP)["Code"] == "OK"
    assert len(emulator.messages()) == 1000


@pytest.mark.parametrize("sign", ["不存在的签名", "星河商城"])
def test_unknown_or_unreviewed_signature(emulator: EmulatorCore, sign: str) -> None:
    body = send(emulator, SignName=sign, TemplateCode="SMS_900000002", TemplateParam=SHIP["TemplateParam"])
    assert_rejected(emulator, body, "isv.SMS_SIGNATURE_ILLEGAL")


@pytest.mark.parametrize("sign", ["月光书店", "旧品牌"])
def test_rejected_or_cancelled_signature(emulator: EmulatorCore, sign: str) -> None:
    body = send(emulator, SignName=sign, TemplateCode="SMS_900000002", TemplateParam=SHIP["TemplateParam"])
    assert_rejected(emulator, body, "isv.SMS_SIGN_ILLEGAL")


@pytest.mark.parametrize(
    "code", ["SMS_000000000", "SMS_900000005", "SMS_900000006", "SMS_900000007", "SMS_900000008", "SMS_900000009"]
)
def test_unknown_or_unapproved_template(emulator: EmulatorCore, code: str) -> None:
    body = send(emulator, SignName="速通科技", TemplateCode=code, TemplateParam='{"name":"x"}')
    assert_rejected(emulator, body, "isv.SMS_TEMPLATE_ILLEGAL")


@pytest.mark.parametrize(
    ("code", "param"), [("SMS_900000002", SHIP["TemplateParam"]), ("SMS_900000003", '{"name":"a"}')]
)
def test_verification_signature_with_other_template(emulator: EmulatorCore, code: str, param: str) -> None:
    body = send(emulator, SignName="速通验证", TemplateCode=code, TemplateParam=param)
    assert_rejected(emulator, body, "isv.SMS_SIGNATURE_SCENE_ILLEGAL")


def test_verification_signature_with_international_template(emulator: EmulatorCore) -> None:
    body = send(
        emulator, "85291234567", SignName="速通验证", TemplateCode="SMS_900000004", TemplateParam='{"code":"1234"}'
    )
    assert_rejected(emulator, body, "isv.SMS_SIGNATURE_SCENE_ILLEGAL")


@pytest.mark.parametrize(
    "param",
    [
        "not json",
        '{"code":"1234"',
        "[1234]",
        '"1234"',
        '{"code":1234}',
        '{"code":null}',
        '{"code":["1234"]}',
        '{"code":"1234","extra":"x"}',
    ],
)
def test_invalid_json_param(emulator: EmulatorCore, param: str) -> None:
    assert_rejected(emulator, send(emulator, **{**VERIFY, "TemplateParam": param}), "isv.INVALID_JSON_PARAM")


@pytest.mark.parametrize(
    ("code", "param"),
    [
        ("SMS_900000001", None),
        ("SMS_900000001", "{}"),
        ("SMS_900000001", '{"code":""}'),
        ("SMS_900000002", '{"name":"张三","order_no":"1"}'),
    ],
)
def test_missing_template_variable(emulator: EmulatorCore, code: str, param: str | None) -> None:
    params = {"SignName": "速通科技", "TemplateCode": code}
    if param is not None:
        params["TemplateParam"] = param
    assert_rejected(emulator, send(emulator, **params), "isv.TEMPLATE_MISSING_PARAMETERS")


def test_variable_longer_than_35_characters(emulator: EmulatorCore) -> None:
    param = json.dumps({**SHIP_PARAMS, "name": "张" * 36}, ensure_ascii=False)
    assert_rejected(emulator, send(emulator, **{**SHIP, "TemplateParam": param}), "isv.PARAM_LENGTH_LIMIT")


def test_variable_of_exactly_35_characters_is_fine(emulator: EmulatorCore) -> None:
    param = json.dumps({**SHIP_PARAMS, "name": "张" * 35}, ensure_ascii=False)
    assert send(emulator, **{**SHIP, "TemplateParam": param})["Code"] == "OK"


def test_rendered_message_longer_than_500_characters(emulator: EmulatorCore) -> None:
    names = [f"v{i}" for i in range(15)]
    emulator.add_template("SMS_900000102", "长通知", 1, "。".join(f"${{{n}}}" for n in names))
    param = json.dumps({n: "字" * 33 for n in names}, ensure_ascii=False)  # 15 * 33 + 14 + 6 = 515
    body = send(emulator, SignName="速通科技", TemplateCode="SMS_900000102", TemplateParam=param)
    assert_rejected(emulator, body, "isv.PARAM_LENGTH_LIMIT")
    shorter = json.dumps({n: "字" * 31 for n in names}, ensure_ascii=False)  # 15 * 31 + 14 + 6 = 485
    assert send(emulator, SignName="速通科技", TemplateCode="SMS_900000102", TemplateParam=shorter)["Code"] == "OK"


@pytest.mark.parametrize("value", ["http://a.cn/x", "HTTPS://example.org", "见www.sutong", "详见 sutong.com"])
def test_url_in_variable(emulator: EmulatorCore, value: str) -> None:
    param = json.dumps({**SHIP_PARAMS, "order_no": value}, ensure_ascii=False)
    assert_rejected(emulator, send(emulator, **{**SHIP, "TemplateParam": param}), "isv.PARAM_NOT_SUPPORT_URL")


@pytest.mark.parametrize("code", ["123", "1234567", "12a4", "１２３４", "12 34"])
def test_number_captcha_must_be_4_to_6_digits(emulator: EmulatorCore, code: str) -> None:
    body = send(emulator, **{**VERIFY, "TemplateParam": json.dumps({"code": code})})
    assert_rejected(emulator, body, "isv.TEMPLATE_PARAMS_ILLEGAL")


@pytest.mark.parametrize("code", ["1234", "12345", "123456"])
def test_number_captcha_of_4_to_6_digits_is_fine(emulator: EmulatorCore, code: str) -> None:
    assert send(emulator, **{**VERIFY, "TemplateParam": json.dumps({"code": code})})["Code"] == "OK"


def test_character_captcha_accepts_letters_but_not_symbols(emulator: EmulatorCore) -> None:
    emulator.add_template(
        "SMS_900000103", "字母验证码", 0, "您的校验码为${code}。", variables={"code": "characterWithNumber2"}
    )
    params = {"SignName": "速通科技", "TemplateCode": "SMS_900000103"}
    body = send(emulator, **params, TemplateParam='{"code":"ab!d"}')
    assert_rejected(emulator, body, "isv.TEMPLATE_PARAMS_ILLEGAL")
    assert send(emulator, **params, TemplateParam='{"code":"aB3d"}')["Code"] == "OK"


def test_verification_template_value_length_applies_to_any_variable_type(emulator: EmulatorCore) -> None:
    emulator.add_template("SMS_900000104", "注册码", 0, "您的注册码为${code}。", variables={"code": "others"})
    body = send(emulator, SignName="速通科技", TemplateCode="SMS_900000104", TemplateParam='{"code":"abc"}')
    assert_rejected(emulator, body, "isv.TEMPLATE_PARAMS_ILLEGAL")


# ---------------------------------------------------------------- SendBatchSms rejections


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("PhoneNumberJson", "13800138000"),
        ("PhoneNumberJson", '{"a":"13800138000"}'),
        ("PhoneNumberJson", "[13800138000]"),
        ("SignNameJson", '"速通科技"'),
        ("SignNameJson", '["速通科技","速通科技"]'),
        ("TemplateParamJson", '{"name":"x"}'),
        ("TemplateParamJson", "[]"),
        ("TemplateParamJson", '["{\\"name\\":\\"x\\"}"]'),
        ("SmsUpExtendCodeJson", '["1","2"]'),
    ],
)
def test_batch_malformed_json_arrays(emulator: EmulatorCore, field: str, value: str) -> None:
    wire = {
        "PhoneNumberJson": '["13800138000"]',
        "SignNameJson": '["速通科技"]',
        "TemplateCode": "SMS_900000002",
        "TemplateParamJson": json.dumps([SHIP_PARAMS], ensure_ascii=False),
        field: value,
    }
    assert_rejected(emulator, emulator.handle("SendBatchSms", wire), "isv.INVALID_JSON_PARAM")


def test_batch_over_100_numbers(emulator: EmulatorCore) -> None:
    numbers = [f"138{i:08d}" for i in range(101)]
    body = batch(emulator, numbers, ["速通科技"] * 101, [SHIP_PARAMS] * 101)
    assert_rejected(emulator, body, "isv.MOBILE_COUNT_OVER_LIMIT")


def test_batch_one_bad_entry_rejects_the_whole_call(emulator: EmulatorCore) -> None:
    good, bad = SHIP_PARAMS, {**SHIP_PARAMS, "order_no": 12345}
    assert_rejected(
        emulator,
        batch(emulator, ["13800138000", "13700137000"], ["速通科技"] * 2, [good, bad]),
        "isv.INVALID_JSON_PARAM",
    )
    assert_rejected(
        emulator,
        batch(emulator, ["13800138000", "1370013700"], ["速通科技"] * 2, [good, good]),
        "isv.MOBILE_NUMBER_ILLEGAL",
    )
    assert_rejected(
        emulator,
        batch(emulator, ["13800138000", "13700137000"], ["速通科技", "旧品牌"], [good, good]),
        "isv.SMS_SIGN_ILLEGAL",
    )
    assert_rejected(
        emulator,
        batch(emulator, ["13800138000", "13700137000"], ["速通科技", "速通验证"], [good, good]),
        "isv.SMS_SIGNATURE_SCENE_ILLEGAL",
    )
    assert_rejected(
        emulator,
        batch(emulator, ["13800138000", "13700137000"], ["速通科技", "星河商城"], [good, good]),
        "isv.SMS_SIGNATURE_ILLEGAL",
    )
    assert_rejected(
        emulator,
        batch(emulator, ["13800138000", "13700137000"], ["速通科技"] * 2, [good, {}]),
        "isv.TEMPLATE_MISSING_PARAMETERS",
    )


def test_batch_without_params_for_a_template_with_variables(emulator: EmulatorCore) -> None:
    assert_rejected(emulator, batch(emulator, ["13800138000"], ["速通科技"], None), "isv.TEMPLATE_MISSING_PARAMETERS")


def test_batch_template_must_be_approved(emulator: EmulatorCore) -> None:
    wire = {
        "PhoneNumberJson": '["13800138000"]',
        "SignNameJson": '["速通科技"]',
        "TemplateCode": "SMS_900000005",
        "TemplateParamJson": '[{"service":"体检","time":"9月3日"}]',
    }
    assert_rejected(emulator, emulator.handle("SendBatchSms", wire), "isv.SMS_TEMPLATE_ILLEGAL")


def test_numeric_wire_values_are_accepted_as_strings(emulator: EmulatorCore) -> None:
    # Callers sometimes hand over non-str values; the wire is all strings, so they are stringified, not crashed on.
    body = emulator.handle("QuerySmsSignList", {"PageIndex": 1, "PageSize": 2})  # type: ignore[dict-item]
    assert body["Code"] == "OK" and len(body["SmsSignList"]) == 2


def test_bare_us_number_is_international_for_an_international_template(emulator: EmulatorCore, clock) -> None:
    # Alibaba's international form has no "+", so "14155552671" is also 11 digits starting with 1: the
    # template type decides which reading applies.
    assert send(emulator, "14155552671", **INTL)["Code"] == "OK"
    body = emulator.handle(
        "QuerySendStatistics",
        {"IsGlobe": "2", "StartDate": "20250901", "EndDate": "20250901", "PageIndex": "1", "PageSize": "10"},
    )
    assert body["Data"]["TargetList"][0]["TotalCount"] == 1
    assert emulator.messages()[0]["phone_number"] == "14155552671"


def test_bare_11_digits_are_mainland_for_a_domestic_template(emulator: EmulatorCore) -> None:
    assert send(emulator, "14155552671", **SHIP)["Code"] == "OK"
    body = emulator.handle(
        "QuerySendStatistics",
        {"IsGlobe": "1", "StartDate": "20250901", "EndDate": "20250901", "PageIndex": "1", "PageSize": "10"},
    )
    assert body["Data"]["TargetList"][0]["TotalCount"] == 1


def test_plus_prefixed_foreign_number_with_domestic_template(emulator: EmulatorCore) -> None:
    body = send(emulator, "+14155552671", **SHIP)
    assert_rejected(emulator, body, "isv.MOBILE_NUMBER_ILLEGAL")
    assert "domestic templates cannot be sent to international numbers" in body["Message"]
