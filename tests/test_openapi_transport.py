"""The openapi backend (Alibaba's generic client) against the signature-verifying HTTP emulator on 127.0.0.1."""

from __future__ import annotations

import time
from typing import Any

import pytest
from alibabacloud_credentials.client import Client as CredentialClient
from alibabacloud_credentials.models import Config as CredentialConfig

from sms_mcp.config import ConfigError, Settings
from sms_mcp.emulator.http import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET, EmulatorServer
from sms_mcp.wire.base import ACTIONS, GatewayError, OutcomeUnknownError, Transport
from sms_mcp.wire.openapi import (
    Endpoint,
    OpenApiTransport,
    endpoint_for,
    explain_gateway_error,
    parse_endpoint,
)


def transport(
    emu: EmulatorServer,
    *,
    v2: bool = False,
    key_id: str = DEMO_ACCESS_KEY_ID,
    secret: str = DEMO_ACCESS_KEY_SECRET,
    **settings: Any,
) -> OpenApiTransport:
    credential = CredentialClient(CredentialConfig(type="access_key", access_key_id=key_id, access_key_secret=secret))
    return OpenApiTransport(
        Settings(endpoint=emu.url, **settings), credential=credential, signature_algorithm="v2" if v2 else None
    )


def today_cst() -> str:
    return time.strftime("%Y%m%d", time.gmtime(time.time() + 8 * 3600))


NOTIFY = '{"name":"张三","order_no":"A1 + B*2","date":"明天"}'


def action_params(phone: str) -> dict[str, dict[str, str]]:
    return {
        "SendSms": {
            "PhoneNumbers": phone,
            "SignName": "速通科技",
            "TemplateCode": "SMS_900000002",
            "TemplateParam": NOTIFY,
            "OutId": "order 42/a&b",
        },
        "SendBatchSms": {
            "PhoneNumberJson": f'["{phone}"]',
            "SignNameJson": '["速通科技"]',
            "TemplateCode": "SMS_900000002",
            "TemplateParamJson": f"[{NOTIFY}]",
        },
        "QuerySendDetails": {"PhoneNumber": phone, "SendDate": today_cst(), "PageSize": "10", "CurrentPage": "1"},
        "QuerySendStatistics": {
            "IsGlobe": "1",
            "StartDate": today_cst(),
            "EndDate": today_cst(),
            "PageIndex": "1",
            "PageSize": "10",
        },
        "QuerySmsSignList": {"PageIndex": "1", "PageSize": "10"},
        "QuerySmsTemplateList": {"PageIndex": "1", "PageSize": "10"},
        "GetSmsSign": {"SignName": "速通科技"},
        "GetSmsTemplate": {"TemplateCode": "SMS_900000002"},
        "QuerySmsQualificationRecord": {"PageNo": "1", "PageSize": "10"},
        "QuerySingleSmsQualification": {"QualificationGroupId": "10001"},
    }


@pytest.mark.parametrize("v2", [False, True], ids=["v3", "v2"])
async def test_every_action_round_trips(emu: EmulatorServer, v2: bool) -> None:
    phone = "1380013" + ("8101" if v2 else "8100")
    t = transport(emu, v2=v2)
    assert isinstance(t, Transport)
    await t.start()
    params = action_params(phone)
    assert set(params) == set(ACTIONS)
    bodies = {}
    for action in ACTIONS:  # sends first, so the detail query finds them
        bodies[action] = await t.call(action, params[action])
        assert bodies[action]["Code"] == "OK", (action, bodies[action])
        assert bodies[action]["RequestId"]
    await t.aclose()

    # The parameters arrived intact (spaces, '+', '*', '/', '&' and Chinese survive both signing schemes).
    sent = [m for m in emu.core.messages() if m["phone_number"] == phone]
    assert len(sent) == 2
    assert {m["out_id"] or "" for m in sent} == {"order 42/a&b", ""}
    assert all("A1 + B*2" in m["content"] for m in sent)
    assert bodies["SendSms"]["BizId"]
    details = bodies["QuerySendDetails"]["SmsSendDetailDTOs"]["SmsSendDetailDTO"]
    assert len(details) == 2
    assert bodies["GetSmsSign"]["SignName"] == "速通科技"
    assert bodies["GetSmsTemplate"]["TemplateCode"] == "SMS_900000002"


async def test_business_errors_are_returned_not_raised(emu: EmulatorServer) -> None:
    body = await transport(emu).call(
        "SendSms",
        {
            "PhoneNumbers": "13800138000",
            "SignName": "没有这个签名",
            "TemplateCode": "SMS_900000002",
            "TemplateParam": NOTIFY,
        },
    )
    assert body["Code"].startswith("isv.")
    assert "BizId" not in body


async def test_missing_parameter_is_a_gateway_error(emu: EmulatorServer) -> None:
    with pytest.raises(GatewayError) as caught:
        await transport(emu).call("SendSms", {"SignName": "速通科技", "TemplateCode": "SMS_900000002"})
    err = caught.value
    assert (err.status, err.code) == (400, "MissingPhoneNumbers")
    assert err.request_id and err.body["Code"] == "MissingPhoneNumbers"
    assert explain_gateway_error(err)[0] == "The required parameter PhoneNumbers was missing."


@pytest.mark.parametrize("v2", [False, True], ids=["v3", "v2"])
async def test_wrong_secret_is_explained_as_a_credential_problem(emu: EmulatorServer, v2: bool) -> None:
    with pytest.raises(GatewayError) as caught:
        await transport(emu, v2=v2, secret="not-the-secret").call("QuerySmsSignList", {"PageIndex": "1"})
    err = caught.value
    assert (err.status, err.code) == (400, "SignatureDoesNotMatch")
    assert "AccessKey" in err.message and "not the SMS sign name" in err.message
    meaning, step = explain_gateway_error(err)
    assert "credential problem" in meaning and "sign name" in meaning
    assert "ALIBABA_CLOUD_ACCESS_KEY_SECRET" in step
    assert "not-the-secret" not in str(err) + repr(err.body)


async def test_unknown_access_key_is_a_credential_problem(emu: EmulatorServer) -> None:
    with pytest.raises(GatewayError) as caught:
        await transport(emu, key_id="LTAI-unknown-0000").call("GetSmsSign", {"SignName": "速通科技"})
    assert (caught.value.status, caught.value.code) == (404, "InvalidAccessKeyId.NotFound")
    assert "AccessKey" in caught.value.message


async def test_credential_client_without_credentials_fails_before_sending(emu: EmulatorServer) -> None:
    from alibabacloud_credentials.provider import EnvironmentVariableCredentialsProvider

    # A provider that finds nothing (as the default chain does when nothing is configured).
    class Nothing(EnvironmentVariableCredentialsProvider):
        def get_credentials(self) -> Any:
            from alibabacloud_credentials.exceptions import CredentialException

            raise CredentialException("unable to load credentials from any of the providers in the chain: []")

        async def get_credentials_async(self) -> Any:
            return self.get_credentials()

    t = OpenApiTransport(Settings(endpoint=emu.url), credential=CredentialClient(provider=Nothing()))
    before = len(emu.core.messages())
    with pytest.raises(GatewayError) as caught:
        await t.call("SendSms", action_params("13800138200")["SendSms"])
    assert (caught.value.status, caught.value.code) == (0, "InvalidCredentials")
    assert "nothing was sent" in caught.value.message
    assert len(emu.core.messages()) == before


# ------------------------------------------------------------------------------------------------ faults


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        ("error_500", 500, "InternalError"),
        ("error_503", 503, "ServiceUnavailable"),
        ("throttle", 400, "Throttling.User"),
    ],
)
async def test_gateway_faults_on_a_send_raise_once_and_send_nothing(
    emu: EmulatorServer, kind: str, status: int, code: str
) -> None:
    emu.faults.add(kind, action="SendSms")  # every SendSms fails until cleared
    phone = "13800138300"
    with pytest.raises(GatewayError) as caught:
        await transport(emu).call("SendSms", action_params(phone)["SendSms"])
    assert (caught.value.status, caught.value.code) == (status, code)
    assert caught.value.retryable
    assert not [m for m in emu.core.messages() if m["phone_number"] == phone]


async def test_throttle_with_retry_after_maps_to_gateway_error(emu: EmulatorServer) -> None:
    emu.faults.add("throttle", action="GetSmsSign", seconds=0.05)
    t = transport(emu, read_timeout=2.0)
    t._read_attempts = 1
    with pytest.raises(GatewayError) as caught:
        await t.call("GetSmsSign", {"SignName": "速通科技"})
    assert caught.value.code == "Throttling.User"


async def test_reads_retry_transient_failures(emu: EmulatorServer) -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    emu.faults.add("error_503", action="QuerySmsSignList", count=1)
    emu.faults.add("drop_before", action="GetSmsTemplate", count=1)
    t = OpenApiTransport(
        Settings(endpoint=emu.url),
        credential=CredentialClient(
            CredentialConfig(
                type="access_key", access_key_id=DEMO_ACCESS_KEY_ID, access_key_secret=DEMO_ACCESS_KEY_SECRET
            )
        ),
        sleep=fake_sleep,
    )
    assert (await t.call("QuerySmsSignList", {"PageIndex": "1", "PageSize": "1"}))["Code"] == "OK"
    assert (await t.call("GetSmsTemplate", {"TemplateCode": "SMS_900000002"}))["Code"] == "OK"
    assert len(slept) == 2 and all(0 < s <= 0.2 for s in slept)
    assert emu.faults.snapshot() == []  # both one-shot faults were used


async def test_reads_give_up_after_bounded_attempts(emu: EmulatorServer) -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    emu.faults.add("error_500", action="GetSmsSign", count=5)
    t = transport(emu)
    t._sleep = fake_sleep
    with pytest.raises(GatewayError) as caught:
        await t.call("GetSmsSign", {"SignName": "速通科技"})
    assert caught.value.code == "InternalError"
    assert len(slept) == 2 and sum(slept) < 2.0  # three attempts in all
    assert emu.faults.snapshot()[0]["count"] == 2


async def test_credential_errors_are_not_retried(emu: EmulatorServer) -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    t = transport(emu, secret="wrong")
    t._sleep = fake_sleep
    with pytest.raises(GatewayError):
        await t.call("QuerySmsSignList", {})
    assert slept == []


async def test_send_with_drop_after_record_is_outcome_unknown_and_recorded_once(emu: EmulatorServer) -> None:
    emu.faults.add("drop_after", action="SendSms", count=1)
    phone = "13800138400"
    with pytest.raises(OutcomeUnknownError) as caught:
        await transport(emu).call("SendSms", action_params(phone)["SendSms"])
    assert caught.value.reason == "connection_lost"
    assert len([m for m in emu.core.messages() if m["phone_number"] == phone]) == 1  # sent, once, never retried


async def test_send_with_drop_before_is_outcome_unknown_and_nothing_recorded(emu: EmulatorServer) -> None:
    emu.faults.add("drop_before", action="SendBatchSms", count=1)
    phone = "13800138401"
    with pytest.raises(OutcomeUnknownError):
        await transport(emu).call("SendBatchSms", action_params(phone)["SendBatchSms"])
    assert not [m for m in emu.core.messages() if m["phone_number"] == phone]


async def test_malformed_body_after_send_is_outcome_unknown(emu: EmulatorServer) -> None:
    emu.faults.add("malformed", action="SendSms", count=1)
    phone = "13800138402"
    with pytest.raises(OutcomeUnknownError) as caught:
        await transport(emu).call("SendSms", action_params(phone)["SendSms"])
    assert caught.value.reason == "malformed_response"
    assert len([m for m in emu.core.messages() if m["phone_number"] == phone]) == 1


async def test_read_timeout_on_a_send_is_outcome_unknown(emu: EmulatorServer) -> None:
    emu.faults.add("delay_after", action="SendSms", count=1, seconds=1.0)
    phone = "13800138403"
    with pytest.raises(OutcomeUnknownError) as caught:
        await transport(emu, read_timeout=0.2).call("SendSms", action_params(phone)["SendSms"])
    assert caught.value.reason == "timeout"
    assert len([m for m in emu.core.messages() if m["phone_number"] == phone]) == 1


async def test_delay_before_within_the_timeout_still_succeeds(emu: EmulatorServer) -> None:
    emu.faults.add("delay_before", action="GetSmsSign", count=1, seconds=0.05)
    assert (await transport(emu).call("GetSmsSign", {"SignName": "速通科技"}))["Code"] == "OK"


async def test_connection_refused_is_outcome_unknown_connect_failed() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = OpenApiTransport(
        Settings(endpoint=f"http://127.0.0.1:{port}"),
        credential=CredentialClient(CredentialConfig(type="access_key", access_key_id="a", access_key_secret="b")),
    )
    with pytest.raises(OutcomeUnknownError) as caught:
        await t.call("SendSms", {"PhoneNumbers": "13800138000"})
    assert caught.value.reason == "connect_failed"


async def test_diagnose_reports_masked_key_endpoint_and_clock(emu: EmulatorServer) -> None:
    report = await transport(emu).diagnose()
    assert report["reachable"] is True
    assert report["endpoint"] == emu.url
    assert report["access_key_id"] == "sms-****o-id"
    assert DEMO_ACCESS_KEY_SECRET not in repr(report)
    assert report["clock_skew_seconds"] is not None and abs(report["clock_skew_seconds"]) < 5
    assert report["warnings"] == []

    bad = await transport(emu, secret="wrong").diagnose()
    assert bad["reachable"] is True and bad["error"]["code"] == "SignatureDoesNotMatch"


async def test_user_agent_carries_the_agent_segment(emu: EmulatorServer) -> None:
    seen: list[str] = []
    app = emu.app
    original = app._api

    async def spy(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.extend(v.decode() for k, v in scope["headers"] if k == b"user-agent")
        await original(scope, receive, send)

    app._api = spy  # type: ignore[method-assign]
    try:
        await transport(emu).call("QuerySmsSignList", {"PageIndex": "1", "PageSize": "1"})
    finally:
        app._api = original  # type: ignore[method-assign]
    assert seen and "AlibabaCloud-Agent-Skills/alibabacloud-sms-send-short-message" in seen[0]


# ------------------------------------------------------------------------------------------------ endpoints


@pytest.mark.parametrize(
    ("region", "host"),
    [
        ("cn-hangzhou", "dysmsapi.aliyuncs.com"),
        ("cn-beijing", "dysmsapi.aliyuncs.com"),  # the SDK map says dysmsapi-proxy.cn-beijing; the docs do not
        ("cn-shanghai-finance-1", "dysmsapi.aliyuncs.com"),
        ("cn-hongkong", "dysmsapi.aliyuncs.com"),  # the SDK map says dysmsapi-xman.cn-hongkong
        ("ap-southeast-1", "dysmsapi.ap-southeast-1.aliyuncs.com"),
        ("ap-southeast-5", "dysmsapi.ap-southeast-5.aliyuncs.com"),
        ("eu-central-1", "dysmsapi.eu-central-1.aliyuncs.com"),
    ],
)
def test_documented_region_endpoints(region: str, host: str) -> None:
    assert endpoint_for(Settings(region_id=region)) == Endpoint(host, "HTTPS")


def test_unknown_region_falls_back_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    assert endpoint_for(Settings(region_id="us-east-1")) == Endpoint("dysmsapi.aliyuncs.com", "HTTPS")
    assert "us-east-1" in caplog.text and "SMS_MCP_ENDPOINT" in caplog.text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://dysmsapi.aliyuncs.com", Endpoint("dysmsapi.aliyuncs.com", "HTTPS")),
        ("http://127.0.0.1:8080", Endpoint("127.0.0.1:8080", "HTTP")),
        ("HTTP://localhost:9/", Endpoint("localhost:9", "HTTP")),
        ("dysmsapi.ap-southeast-1.aliyuncs.com", Endpoint("dysmsapi.ap-southeast-1.aliyuncs.com", "HTTPS")),
    ],
)
def test_endpoint_override_splits_the_scheme(value: str, expected: Endpoint) -> None:
    assert parse_endpoint(value) == expected
    assert endpoint_for(Settings(endpoint=value, region_id="eu-central-1")) == expected


@pytest.mark.parametrize("value", ["ftp://host", "https://", "http://user@host"])
def test_bad_endpoint_is_a_config_error(value: str) -> None:
    with pytest.raises(ConfigError):
        parse_endpoint(value)


def test_from_settings_does_not_import_the_sdk_eagerly() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from sms_mcp.config import Settings\n"
        "from sms_mcp.wire.openapi import OpenApiTransport\n"
        "t = OpenApiTransport.from_settings(Settings())\n"
        "heavy = [m for m in sys.modules if m.startswith(('alibabacloud', 'darabonba', 'aiohttp'))]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_explanations_never_confuse_signing_with_sign_names() -> None:
    for code in (
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId.NotFound",
        "InvalidAccessKeyId.Inactive",
        "Forbidden.RAM",
        "InvalidTimeStamp.Expired",
        "InvalidCredentials",
    ):
        meaning, step = explain_gateway_error(GatewayError(400, code, "x"))
        assert "credential" in meaning.lower() or "accesskey" in meaning.lower(), code
        assert step
    meaning, _ = explain_gateway_error(GatewayError(503, "SomethingNew", "boom"))
    assert "server error" in meaning


async def test_signature_error_message_does_not_carry_the_parameters(emu: EmulatorServer) -> None:
    with pytest.raises(GatewayError) as caught:
        await transport(emu, v2=True, secret="wrong").call(
            "QuerySendDetails",
            {"PhoneNumber": "13800138555", "SendDate": today_cst(), "PageSize": "1", "CurrentPage": "1"},
        )
    assert caught.value.code == "SignatureDoesNotMatch"
    assert "13800138555" not in caught.value.message
    assert "13800138555" in caught.value.body["Message"]  # the raw wire body is kept intact


async def test_concurrent_calls_share_one_transport(emu: EmulatorServer) -> None:
    import asyncio

    t = transport(emu)
    phones = [f"1380013{9000 + i}" for i in range(12)]
    sends = [t.call("SendSms", action_params(p)["SendSms"]) for p in phones]
    reads = [t.call("GetSmsTemplate", {"TemplateCode": "SMS_900000002"}) for _ in range(12)]
    bodies = await asyncio.gather(*sends, *reads)
    assert all(b["Code"] == "OK" for b in bodies)
    assert len({b["RequestId"] for b in bodies}) == len(bodies)
    for phone in phones:
        assert len([m for m in emu.core.messages() if m["phone_number"] == phone]) == 1
    await t.aclose()
    await t.aclose()  # safe twice
