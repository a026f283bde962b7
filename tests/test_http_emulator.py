"""The HTTP emulator as a server: gateway behaviour on the wire, the admin API, and `sms-mcp emulator` as a process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from alibabacloud_credentials.client import Client as CredentialClient
from alibabacloud_credentials.models import Config as CredentialConfig
from alibabacloud_tea_openapi.utils import Utils
from conftest import PROXY_VARS
from darabonba.request import DaraRequest

from sms_mcp.config import Settings
from sms_mcp.emulator.http import (
    DEMO_ACCESS_KEY_ID,
    DEMO_ACCESS_KEY_SECRET,
    EmulatorServer,
    Fault,
    build_app,
    main,
)
from sms_mcp.emulator.signing import sha256_hex
from sms_mcp.wire.base import GatewayError
from sms_mcp.wire.openapi import OpenApiTransport

REPO = Path(__file__).resolve().parents[1]
#: The admin API takes JSON bodies only.
JSON = {"content-type": "application/json"}


def http(
    url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request without proxies; returns (status, lower-case headers, body) for errors too."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def signed_v3(
    emu: EmulatorServer,
    action: str,
    query: dict[str, str],
    *,
    date: str | None = None,
    nonce: str = "",
    method: str = "POST",
) -> tuple[str, dict[str, str]]:
    """A request signed by Alibaba's own V3 signing function, ready for urllib."""
    request = DaraRequest()
    request.method = method
    request.pathname = "/"
    request.query = dict(query)
    request.headers = {
        "host": emu.endpoint,
        "x-acs-version": "2017-05-25",
        "x-acs-action": action,
        "x-acs-date": date or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "x-acs-signature-nonce": nonce or os.urandom(16).hex(),
        "x-acs-content-sha256": sha256_hex(b""),
    }
    auth = Utils.get_authorization(
        request, "ACS3-HMAC-SHA256", sha256_hex(b""), DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET
    )
    headers = {k: v for k, v in request.headers.items() if k != "host"}
    return f"{emu.url}/?{urlencode(query)}", {**headers, "Authorization": auth}


def transport(emu: EmulatorServer) -> OpenApiTransport:
    credential = CredentialClient(
        CredentialConfig(type="access_key", access_key_id=DEMO_ACCESS_KEY_ID, access_key_secret=DEMO_ACCESS_KEY_SECRET)
    )
    return OpenApiTransport(Settings(endpoint=emu.url), credential=credential)


GATEWAY_KEYS = {"RequestId", "HostId", "Code", "Message", "Recommend"}


# ------------------------------------------------------------------------------------------------ gateway behaviour


def test_unsigned_request_gets_alibaba_shaped_error(emu: EmulatorServer) -> None:
    status, headers, body = http(f"{emu.url}/?Action=SendSms&PhoneNumbers=13800138000", "POST", b"")
    assert status == 400
    assert headers["content-type"] == "application/json;charset=utf-8"
    data = json.loads(body)
    assert set(data) == GATEWAY_KEYS
    assert data["Code"] == "MissingAccessKeyId"
    assert data["RequestId"] and data["Recommend"].endswith(data["RequestId"])


def test_signed_request_succeeds_then_nonce_reuse_is_refused(emu: EmulatorServer) -> None:
    url, headers = signed_v3(emu, "GetSmsSign", {"SignName": "速通科技"}, nonce="fixed-nonce-1")
    status, response_headers, body = http(url, "POST", b"", headers)
    assert status == 200 and json.loads(body)["Code"] == "OK"
    assert response_headers["content-type"] == "application/json;charset=utf-8"
    status, _, body = http(url, "POST", b"", headers)
    assert (status, json.loads(body)["Code"]) == (400, "SignatureNonceUsed")


def test_stale_date_is_refused(emu: EmulatorServer) -> None:
    stale = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 20 * 60))
    url, headers = signed_v3(emu, "GetSmsSign", {"SignName": "速通科技"}, date=stale)
    status, _, body = http(url, "POST", b"", headers)
    assert (status, json.loads(body)["Code"]) == (400, "InvalidTimeStamp.Expired")


def test_get_is_refused_for_post_only_actions(emu: EmulatorServer) -> None:
    url, headers = signed_v3(emu, "QuerySmsSignList", {"PageIndex": "1"}, method="GET")
    status, _, body = http(url, "GET", None, headers)
    assert (status, json.loads(body)["Code"]) == (400, "UnsupportedHTTPMethod")
    url, headers = signed_v3(emu, "GetSmsSign", {"SignName": "速通科技"}, method="GET")
    status, _, body = http(url, "GET", None, headers)
    assert (status, json.loads(body)["Code"]) == (200, "OK")


async def test_unknown_action_is_invalid_api(emu: EmulatorServer) -> None:
    with pytest.raises(GatewayError) as caught:
        await transport(emu).call("SendMessageToGlobe", {"To": "8613800138000"})
    assert (caught.value.status, caught.value.code) == (404, "InvalidApi.NotFound")
    assert set(caught.value.body) == GATEWAY_KEYS


async def test_missing_parameter_comes_from_the_core(emu: EmulatorServer) -> None:
    with pytest.raises(GatewayError) as caught:
        await transport(emu).call("GetSmsTemplate", {})
    assert (caught.value.status, caught.value.code) == (400, "MissingTemplateCode")


async def test_several_key_pairs(emu: EmulatorServer) -> None:
    keys = {"id-one": "secret-one", "id-two": "secret-two"}
    with EmulatorServer(emu.core, keys=keys) as server:
        for key_id, secret in keys.items():
            credential = CredentialClient(
                CredentialConfig(type="access_key", access_key_id=key_id, access_key_secret=secret)
            )
            t = OpenApiTransport(Settings(endpoint=server.url), credential=credential)
            assert (await t.call("GetSmsSign", {"SignName": "速通科技"}))["Code"] == "OK"
        with pytest.raises(GatewayError) as caught:
            await transport(server).call("GetSmsSign", {"SignName": "速通科技"})  # the demo pair is not accepted
        assert caught.value.code == "InvalidAccessKeyId.NotFound"


# ------------------------------------------------------------------------------------------------ admin API


def test_admin_faults_roundtrip(emu: EmulatorServer) -> None:
    status, _, body = http(
        f"{emu.url}/_emulator/faults",
        "POST",
        json.dumps({"kind": "error_503", "action": "GetSmsSign", "count": 2}).encode(),
        {"content-type": "application/json"},
    )
    assert status == 200
    assert json.loads(body)["faults"] == [{"kind": "error_503", "action": "GetSmsSign", "count": 2, "seconds": 0.0}]
    url, headers = signed_v3(emu, "GetSmsSign", {"SignName": "速通科技"})
    status, _, body = http(url, "POST", b"", headers)
    assert (status, json.loads(body)["Code"]) == (503, "ServiceUnavailable")

    replace = {"faults": [{"kind": "throttle"}, {"kind": "delay_after", "seconds": 0.01}], "replace": True}
    status, _, body = http(f"{emu.url}/_emulator/faults", "POST", json.dumps(replace).encode(), JSON)
    assert [f["kind"] for f in json.loads(body)["faults"]] == ["throttle", "delay_after"]
    assert http(f"{emu.url}/_emulator/faults", "DELETE")[0] == 200
    assert json.loads(http(f"{emu.url}/_emulator/faults")[2]) == {"faults": []}


@pytest.mark.parametrize(
    "payload",
    [{"kind": "explode"}, {"kind": "throttle", "action": "NoSuchAction"}, {"kind": "throttle", "count": 0}, [1]],
)
def test_admin_rejects_bad_faults(emu: EmulatorServer, payload: Any) -> None:
    status, _, body = http(f"{emu.url}/_emulator/faults", "POST", json.dumps(payload).encode(), JSON)
    assert status == 400 and "error" in json.loads(body)
    assert emu.faults.snapshot() == []


async def test_admin_messages_lists_what_the_core_recorded(emu: EmulatorServer) -> None:
    params = {
        "PhoneNumbers": "13600000042",
        "SignName": "速通科技",
        "TemplateCode": "SMS_900000002",
        "TemplateParam": '{"name":"李四","order_no":"B2","date":"今天"}',
    }
    assert (await transport(emu).call("SendSms", params))["Code"] == "OK"
    status, _, body = http(f"{emu.url}/_emulator/messages")
    assert status == 200
    mine = [m for m in json.loads(body)["messages"] if m["phone_number"] == "13600000042"]
    assert len(mine) == 1 and mine[0]["template_code"] == "SMS_900000002"


async def test_admin_refuses_non_loopback_clients(emu: EmulatorServer) -> None:
    app = build_app(emu.core)
    for path, method in (("/_emulator/faults", "POST"), ("/_emulator/messages", "GET")):
        sent: list[dict[str, Any]] = []
        body = json.dumps({"kind": "throttle"}).encode()
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive(messages: list[dict[str, Any]] = messages) -> dict[str, Any]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any], sent: list[dict[str, Any]] = sent) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "http_version": "1.1",
            "method": method,
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [(b"host", b"10.0.0.5:8080")],
            "client": ("10.1.2.3", 40000),
            "server": ("10.0.0.5", 8080),
            "scheme": "http",
            "root_path": "",
        }
        await app(scope, receive, send)
        assert sent[0]["status"] == 403
    assert app.faults.snapshot() == []


def test_fault_spec_parsing() -> None:
    assert Fault.parse("drop_after,action=SendSms,count=1") == Fault("drop_after", "SendSms", 1, 0.0)
    assert Fault.parse("delay_before,seconds=0.5") == Fault("delay_before", None, None, 0.5)
    for bad in ("nope", "throttle,count", "throttle,color=red", "delay_after,seconds=-1"):
        with pytest.raises(ValueError):
            Fault.parse(bad)


def test_main_rejects_unpaired_keys_without_binding(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--access-key-id", "only-an-id"]) == 2
    assert "pairs" in capsys.readouterr().err
    assert main(["--fault", "explode"]) == 2


# ------------------------------------------------------------------------------------------------ the process


def start_process(*args: str, entry: tuple[str, ...] = ("sms_mcp.emulator.http",)) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    proc = subprocess.Popen(
        [sys.executable, "-m", *entry, "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise AssertionError(f"emulator did not start: {proc.communicate(timeout=10)}")
    assert line.startswith("emulator listening on http://127.0.0.1:"), line
    return proc, line.removeprefix("emulator listening on ").strip()


def stop_process(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[int, str, str]:
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, out, err


async def test_emulator_process_serves_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    proc, url = start_process(
        "--access-key-id",
        "proc-id",
        "--access-key-secret",
        "proc-secret",
        "--data-dir",
        str(tmp_path),
        "--fault",
        "error_503,action=QuerySmsSignList,count=1",
        entry=("sms_mcp", "emulator"),  # through the `sms-mcp emulator` dispatch
    )
    try:
        credential = CredentialClient(
            CredentialConfig(type="access_key", access_key_id="proc-id", access_key_secret="proc-secret")
        )
        t = OpenApiTransport(Settings(endpoint=url), credential=credential, read_attempts=1)
        with pytest.raises(GatewayError) as caught:  # the --fault flag took effect, once
            await t.call("QuerySmsSignList", {"PageIndex": "1"})
        assert caught.value.code == "ServiceUnavailable"
        assert (await t.call("QuerySmsSignList", {"PageIndex": "1"}))["Code"] == "OK"
        params = {
            "PhoneNumbers": "13500000001",
            "SignName": "速通科技",
            "TemplateCode": "SMS_900000002",
            "TemplateParam": '{"name":"王五","order_no":"C3","date":"周一"}',
        }
        assert (await t.call("SendSms", params))["Code"] == "OK"
    finally:
        code, out, err = stop_process(proc)
    assert code == 0, err
    assert out == ""  # the "listening" line was the only stdout output
    assert "proc-secret" not in err
    assert (tmp_path / "emulator.sqlite3").exists()

    # State persists in --data-dir across runs.
    proc, url = start_process("--data-dir", str(tmp_path))
    try:
        status, _, body = http(f"{url}/_emulator/messages")
        assert status == 200
        assert [m["phone_number"] for m in json.loads(body)["messages"]] == ["13500000001"]
    finally:
        code, _, err = stop_process(proc, signal.SIGINT)
    assert code == 0, err
