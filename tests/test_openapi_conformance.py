"""Conformance with Alibaba's own Dysmsapi client: the official SDK, pointed at the HTTP emulator, signs requests the
emulator accepts and parses every response into its models, field for field."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from alibabacloud_dysmsapi20170525 import models
from alibabacloud_dysmsapi20170525.client import Client
from alibabacloud_tea_openapi.exceptions import ClientException
from alibabacloud_tea_openapi.models import Config

from sms_mcp.emulator.http import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET, EmulatorServer

NOTIFY = '{"name":"张三","order_no":"A-1 +2*3","date":"明天"}'


@pytest.fixture
def wire_bodies(emu: EmulatorServer) -> Iterator[list[dict[str, Any]]]:
    """Every JSON body the emulator sends during the test, as it went on the wire."""
    captured: list[dict[str, Any]] = []
    original = emu.app._send

    async def spy(send: Any, status: int, payload: bytes, extra: Any = None) -> None:
        captured.append(json.loads(payload))
        await original(send, status, payload, extra)

    emu.app._send = spy  # type: ignore[method-assign]
    yield captured
    emu.app._send = original  # type: ignore[method-assign]


def sdk(emu: EmulatorServer, *, v2: bool = False, secret: str = DEMO_ACCESS_KEY_SECRET) -> Client:
    return Client(
        Config(
            access_key_id=DEMO_ACCESS_KEY_ID,
            access_key_secret=secret,
            endpoint=emu.endpoint,
            protocol="HTTP",
            signature_algorithm="v2" if v2 else None,
        )
    )


def requests_for(phone: str) -> list[tuple[str, Any]]:
    today = time.strftime("%Y%m%d", time.gmtime(time.time() + 8 * 3600))
    return [
        (
            "send_sms",
            models.SendSmsRequest(
                phone_numbers=phone,
                sign_name="速通科技",
                template_code="SMS_900000002",
                template_param=NOTIFY,
                out_id="conformance 1",
            ),
        ),
        (
            "send_batch_sms",
            models.SendBatchSmsRequest(
                phone_number_json=json.dumps([phone]),
                sign_name_json='["速通科技"]',
                template_code="SMS_900000002",
                template_param_json=f"[{NOTIFY}]",
            ),
        ),
        (
            "query_send_details",
            models.QuerySendDetailsRequest(phone_number=phone, send_date=today, page_size=10, current_page=1),
        ),
        (
            "query_send_statistics",
            models.QuerySendStatisticsRequest(is_globe=1, start_date=today, end_date=today, page_index=1, page_size=10),
        ),
        ("query_sms_sign_list", models.QuerySmsSignListRequest(page_index=1, page_size=10)),
        ("query_sms_template_list", models.QuerySmsTemplateListRequest(page_index=1, page_size=10)),
        ("get_sms_sign", models.GetSmsSignRequest(sign_name="速通科技")),
        ("get_sms_template", models.GetSmsTemplateRequest(template_code="SMS_900000002")),
        (
            "query_sms_qualification_record",
            models.QuerySmsQualificationRecordRequest(page_no=1, page_size=10, use_by_self=True),
        ),
        ("query_single_sms_qualification", models.QuerySingleSmsQualificationRequest(qualification_group_id=10001)),
    ]


def lost_fields(raw: Any, mapped: Any, path: str = "") -> list[str]:
    """Fields of the wire body that the SDK model dropped or changed (empty: the model understood everything)."""
    if isinstance(raw, dict):
        if not isinstance(mapped, dict):
            return [path or "/"]
        out: list[str] = []
        for key, value in raw.items():
            out += [f"{path}/{key}"] if key not in mapped else lost_fields(value, mapped[key], f"{path}/{key}")
        return out
    if isinstance(raw, list):
        if not isinstance(mapped, list) or len(raw) != len(mapped):
            return [path]
        return [p for i, (a, b) in enumerate(zip(raw, mapped, strict=True)) for p in lost_fields(a, b, f"{path}[{i}]")]
    return [] if raw == mapped else [f"{path}: {raw!r} != {mapped!r}"]


def check(name: str, response: Any, wire: dict[str, Any]) -> None:
    assert response.status_code == 200, name
    assert response.body.code == "OK", (name, response.body.to_map())
    assert response.body.request_id == wire["RequestId"]
    assert lost_fields(wire, response.body.to_map()) == [], name


@pytest.mark.parametrize("v2", [False, True], ids=["v3", "v2"])
def test_official_sdk_sync_all_actions(emu: EmulatorServer, wire_bodies: list[dict[str, Any]], v2: bool) -> None:
    client = sdk(emu, v2=v2)
    phone = "1370000000" + ("1" if v2 else "0")
    for name, request in requests_for(phone):
        response = getattr(client, name)(request)
        check(name, response, wire_bodies[-1])
    sent = [m for m in emu.core.messages() if m["phone_number"] == phone]
    assert len(sent) == 2 and all("A-1 +2*3" in m["content"] for m in sent)


@pytest.mark.parametrize("v2", [False, True], ids=["v3", "v2"])
async def test_official_sdk_async_all_actions(emu: EmulatorServer, wire_bodies: list[dict[str, Any]], v2: bool) -> None:
    client = sdk(emu, v2=v2)
    phone = "1370000001" + ("1" if v2 else "0")
    for name, request in requests_for(phone):
        response = await getattr(client, f"{name}_async")(request)
        check(name, response, wire_bodies[-1])
    sent = [m for m in emu.core.messages() if m["phone_number"] == phone]
    assert len(sent) == 2 and all("A-1 +2*3" in m["content"] for m in sent)


@pytest.mark.parametrize("v2", [False, True], ids=["v3", "v2"])
def test_official_sdk_wrong_secret_gets_signature_does_not_match(emu: EmulatorServer, v2: bool) -> None:
    with pytest.raises(ClientException) as caught:
        sdk(emu, v2=v2, secret="wrong-secret").query_sms_sign_list(models.QuerySmsSignListRequest(page_index=1))
    assert caught.value.code == "SignatureDoesNotMatch"
    assert caught.value.status_code == 400
    assert caught.value.data["HostId"] and caught.value.data["Recommend"].startswith("https://api.aliyun.com/")


async def test_official_sdk_async_wrong_secret(emu: EmulatorServer) -> None:
    with pytest.raises(ClientException) as caught:
        await sdk(emu, secret="wrong-secret").get_sms_sign_async(models.GetSmsSignRequest(sign_name="速通科技"))
    assert caught.value.code == "SignatureDoesNotMatch"


def test_official_sdk_sees_missing_parameter_as_client_exception(emu: EmulatorServer) -> None:
    with pytest.raises(ClientException) as caught:
        sdk(emu).send_sms(models.SendSmsRequest(sign_name="速通科技", template_code="SMS_900000002"))
    assert (caught.value.status_code, caught.value.code) == (400, "MissingPhoneNumbers")
