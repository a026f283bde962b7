"""EmulatorCore never crashes: any input gives a wire body or a GatewayError, and only "OK" sends store messages."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sms_mcp.emulator.core import EmulatorCore
from sms_mcp.wire.base import ACTIONS, SEND_ACTIONS, GatewayError

PARAM_NAMES = [
    "PhoneNumbers", "SignName", "TemplateCode", "TemplateParam", "OutId", "PhoneNumberJson", "SignNameJson",
    "TemplateParamJson", "SmsUpExtendCodeJson", "PhoneNumber", "SendDate", "BizId", "PageSize", "CurrentPage",
    "IsGlobe", "StartDate", "EndDate", "PageIndex", "TemplateType", "QualificationGroupId", "OrderId", "PageNo",
    "State", "UseBySelf", "WorkOrderId", "CompanyName",
]  # fmt: skip

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
plausible = st.sampled_from(
    ["13800138000", "速通科技", "SMS_900000001", "SMS_900000002", '{"code":"1234"}', "20250901", "1", "10", "0",
     "-1", "99999999999999999999999", '["13800138000"]', '["速通科技"]', "True", "10001", "\ud800", "[" * 5000]
)  # fmt: skip
values = plausible | st.text(max_size=60) | json_values.map(json.dumps)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    action=st.sampled_from([*ACTIONS, "Nope"]),
    params=st.dictionaries(st.sampled_from(PARAM_NAMES), values, max_size=8),
)
def test_any_input_gives_a_body_or_a_gateway_error(emulator: EmulatorCore, action: str, params) -> None:
    before = len(emulator.messages())
    try:
        body = emulator.handle(action, params)
    except GatewayError as err:
        assert err.status in (400, 404) and err.body["Code"] == err.code
        assert len(emulator.messages()) == before
        return
    assert isinstance(body["RequestId"], str) and isinstance(body["Code"], str) and isinstance(body["Message"], str)
    stored = len(emulator.messages()) - before
    if action in SEND_ACTIONS and body["Code"] == "OK":
        assert stored >= 1 and body["BizId"].endswith("^0")
    else:
        assert stored == 0


def test_lone_surrogate_is_rejected_not_crashed(emulator: EmulatorCore) -> None:
    body = emulator.handle(
        "SendSms",
        {"PhoneNumbers": "13800138000", "SignName": "速通科技", "TemplateCode": "SMS_900000001",
         "TemplateParam": '{"code":"12\ud8004"}'},
    )  # fmt: skip
    assert body["Code"] == "isv.INVALID_PARAMETERS"
    assert emulator.messages() == []


def test_deeply_nested_json_is_invalid_json(emulator: EmulatorCore) -> None:
    body = emulator.handle(
        "SendSms",
        {"PhoneNumbers": "13800138000", "SignName": "速通科技", "TemplateCode": "SMS_900000001",
         "TemplateParam": "[" * 100_000},
    )  # fmt: skip
    assert body["Code"] == "isv.INVALID_JSON_PARAM"


def test_huge_integers_are_invalid_parameters_or_empty_pages(emulator: EmulatorCore) -> None:
    huge = str(2**70)
    assert emulator.handle("QuerySmsSignList", {"PageIndex": huge})["Code"] == "isv.INVALID_PARAMETERS"
    last = str(2**63 - 1)
    assert emulator.handle("QuerySmsSignList", {"PageIndex": last})["SmsSignList"] == []
    body = emulator.handle("QuerySmsQualificationRecord", {"WorkOrderId": huge})
    assert body["Code"] == "isv.INVALID_PARAMETERS" and body["Success"] is False
