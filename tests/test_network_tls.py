"""The real network path: HTTPS to the emulator's test CA, verified TLS, one keep-alive pool, no resend.

Everything runs against ``EmulatorServer(tls=True)`` (uvicorn with a trustme-issued certificate) on 127.0.0.1,
through Alibaba's own request building and signing; the emulator verifies every signature as it does over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from alibabacloud_credentials.client import Client as CredentialClient
from alibabacloud_credentials.models import Config as CredentialConfig

from sms_mcp.config import ConfigError, Settings
from sms_mcp.emulator.http import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET, EmulatorServer
from sms_mcp.wire.base import GatewayError, OutcomeUnknownError
from sms_mcp.wire.openapi import OpenApiTransport, explain_gateway_error

SIGN = "速通科技"
NOTIFY = '{"name":"张三","order_no":"A1 + B*2","date":"明天"}'


@pytest.fixture(scope="module")
def tls_server() -> Iterator[EmulatorServer]:
    with EmulatorServer(receipt_delay=0.0, tls=True) as server:
        yield server


@pytest.fixture
def tls_emu(tls_server: EmulatorServer) -> Iterator[EmulatorServer]:
    tls_server.faults.clear()
    yield tls_server
    tls_server.faults.clear()


def credential(secret: str = DEMO_ACCESS_KEY_SECRET) -> CredentialClient:
    return CredentialClient(
        CredentialConfig(type="access_key", access_key_id=DEMO_ACCESS_KEY_ID, access_key_secret=secret)
    )


def transport(emu: EmulatorServer, *, v2: bool = False, ca: Path | None = None, **settings: Any) -> OpenApiTransport:
    return OpenApiTransport(
        Settings(endpoint=emu.url, ca_bundle=ca if ca is not None else emu.ca_file, **settings),
        credential=credential(),
        signature_algorithm="v2" if v2 else None,
    )


def send_sms(phone: str) -> dict[str, str]:
    return {"PhoneNumbers": phone, "SignName": SIGN, "TemplateCode": "SMS_900000002", "TemplateParam": NOTIFY}


def send_batch(phones: list[str]) -> dict[str, str]:
    return {
        "PhoneNumberJson": json.dumps(phones),
        "SignNameJson": json.dumps([SIGN] * len(phones), ensure_ascii=False),
        "TemplateCode": "SMS_900000002",
        "TemplateParamJson": json.dumps([json.loads(NOTIFY)] * len(phones), ensure_ascii=False),
    }


def sent_to(emu: EmulatorServer, phone: str) -> list[dict[str, Any]]:
    return [m for m in emu.core.messages() if m["phone_number"] == phone]


def server_connections(emu: EmulatorServer) -> int:
    return len(emu.app.server.server_state.connections)


# ------------------------------------------------------------------------------------------------ HTTPS + trust


@pytest.mark.parametrize("v2", [False, True], ids=["v3", "v2"])
async def test_signed_calls_verify_over_https_with_the_configured_ca(tls_emu: EmulatorServer, v2: bool) -> None:
    assert tls_emu.url.startswith("https://127.0.0.1:")
    phone = "1380013" + ("8501" if v2 else "8500")
    t = transport(tls_emu, v2=v2)
    await t.start()
    try:
        assert type(t._client).__name__ == "PooledOpenApiClient"  # Alibaba's methods, our pool
        for action, params in (
            ("SendSms", {**send_sms(phone), "OutId": "order 42/a&b"}),
            ("SendBatchSms", send_batch([phone])),
            ("QuerySmsSignList", {"PageIndex": "1", "PageSize": "10"}),
            ("GetSmsTemplate", {"TemplateCode": "SMS_900000002"}),
        ):
            body = await t.call(action, params)
            assert body["Code"] == "OK", (action, body)
    finally:
        await t.aclose()
    recorded = sent_to(tls_emu, phone)
    assert len(recorded) == 2 and all("A1 + B*2" in m["content"] for m in recorded)  # parameters intact
    assert {m["out_id"] or "" for m in recorded} == {"order 42/a&b", ""}


async def test_a_wrong_signature_is_still_refused_over_https(tls_emu: EmulatorServer) -> None:
    t = OpenApiTransport(Settings(endpoint=tls_emu.url, ca_bundle=tls_emu.ca_file), credential=credential("bad"))
    with pytest.raises(GatewayError) as caught:
        await t.call("QuerySmsSignList", {"PageIndex": "1"})
    await t.aclose()
    assert (caught.value.status, caught.value.code) == (400, "SignatureDoesNotMatch")


async def test_without_the_test_ca_the_certificate_is_refused_and_nothing_is_sent(
    tls_emu: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    phone = "13800138510"
    for ca in (None, other_ca):  # the default trust (system + certifi), then some other CA
        t = OpenApiTransport(Settings(endpoint=tls_emu.url, ca_bundle=ca), credential=credential())
        slept: list[float] = []

        async def no_sleep(seconds: float, slept: list[float] = slept) -> None:
            slept.append(seconds)

        t._sleep = no_sleep
        for action, params in (("SendSms", send_sms(phone)), ("QuerySmsSignList", {"PageIndex": "1"})):
            with pytest.raises(GatewayError) as caught:
                await t.call(action, params)
            err = caught.value
            assert (err.status, err.code) == (0, "TlsVerificationFailed"), err
            assert "nothing was sent" in err.message and "issuer certificate" in err.message
            assert ("SMS_MCP_CA_BUNDLE=" + str(other_ca) in err.message) == (ca is not None)
            _meaning, step = explain_gateway_error(err)
            assert "SMS_MCP_CA_BUNDLE" in step and "emulator-ca.pem" in step
        assert slept == []  # a certificate problem is not retried, not even for a read
        await t.aclose()
    assert sent_to(tls_emu, phone) == []


async def test_ssl_cert_file_is_trusted_when_no_bundle_is_configured(
    tls_emu: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_emu.ca_file))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    t = OpenApiTransport(Settings(endpoint=tls_emu.url), credential=credential())
    try:
        assert (await t.call("GetSmsSign", {"SignName": SIGN}))["Code"] == "OK"
        report = await t.diagnose()
        assert report["reachable"] is True and report["tls"]["verify"] is True
        assert f"SSL_CERT_FILE={tls_emu.ca_file}" in report["tls"]["trusted"]
    finally:
        await t.aclose()


async def test_a_certificate_for_another_host_is_refused(tls_emu: EmulatorServer) -> None:
    """Issued by the *trusted* CA, but for another name: host name checking must refuse it."""
    assert tls_emu.ca_file is not None
    ca = trustme.CA.from_pem(
        tls_emu.ca_file.read_bytes(), (tls_emu.ca_file.parent / "emulator-ca-key.pem").read_bytes()
    )
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("sms.example.invalid").configure_cert(server_ctx)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve_once() -> None:
        conn, _ = listener.accept()
        with contextlib.suppress(OSError), conn, server_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1)

    thread = threading.Thread(target=serve_once, daemon=True)
    thread.start()
    t = OpenApiTransport(
        Settings(endpoint=f"https://127.0.0.1:{port}", ca_bundle=tls_emu.ca_file), credential=credential()
    )
    try:
        with pytest.raises(GatewayError) as caught:
            await t.call("QuerySmsSignList", {"PageIndex": "1"})
    finally:
        await t.aclose()
        listener.close()
        thread.join(5)
    assert caught.value.code == "TlsVerificationFailed"
    assert "mismatch" in caught.value.message.lower() or "hostname" in caught.value.message.lower()


def test_a_bad_ca_bundle_is_a_clear_config_error(tmp_path: Path) -> None:
    async def start(ca: Path) -> None:
        t = OpenApiTransport(Settings(endpoint="https://127.0.0.1:9", ca_bundle=ca), credential=credential())
        await t.start()

    with pytest.raises(ConfigError, match=r"SMS_MCP_CA_BUNDLE=.*no such file"):
        asyncio.run(start(tmp_path / "missing.pem"))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"SMS_MCP_CA_BUNDLE=.*not a readable PEM"):
        asyncio.run(start(junk))


def test_ca_bundle_setting_is_read_from_the_environment(tmp_path: Path) -> None:
    assert Settings.from_env({}).ca_bundle is None
    assert Settings.from_env({"SMS_MCP_CA_BUNDLE": f" {tmp_path}/ca.pem "}).ca_bundle == tmp_path / "ca.pem"


# ------------------------------------------------------------------------------------------------ connection reuse


async def test_sequential_and_concurrent_calls_reuse_a_bounded_pool(tls_emu: EmulatorServer) -> None:
    deadline = time.monotonic() + 5
    while server_connections(tls_emu) and time.monotonic() < deadline:  # earlier tests' closed connections
        await asyncio.sleep(0.02)
    t = transport(tls_emu)
    await t.start()
    try:
        for _ in range(20):
            assert (await t.call("QuerySmsSignList", {"PageIndex": "1", "PageSize": "1"}))["Code"] == "OK"
        assert t.pool is not None and t.pool.connections_opened == 1  # one TCP + TLS handshake for 20 calls
        assert server_connections(tls_emu) == 1  # and the server sees one kept-alive connection

        limiter = asyncio.Semaphore(8)

        async def one(i: int) -> None:
            async with limiter:
                body = await t.call("SendBatchSms", send_batch([f"1370000{i:04d}"]))
                assert body["Code"] == "OK"

        await asyncio.gather(*(one(i) for i in range(40)))
        assert 1 < t.pool.connections_opened <= 8  # never more than in flight
        opened = t.pool.connections_opened
        await asyncio.gather(*(t.call("GetSmsSign", {"SignName": SIGN}) for _ in range(50)))
        assert t.pool.connections_opened - opened <= 16  # the pool's bound, whatever the burst
    finally:
        await t.aclose()


async def test_the_official_client_is_left_untouched(tls_emu: EmulatorServer) -> None:
    from alibabacloud_tea_openapi import client as tea_client
    from darabonba.core import DaraCore

    before = (tea_client.Client.do_request_async, tea_client.DaraCore, DaraCore.async_do_action)
    t = transport(tls_emu)
    await t.call("QuerySmsSignList", {"PageIndex": "1"})
    await t.aclose()
    assert (tea_client.Client.do_request_async, tea_client.DaraCore, DaraCore.async_do_action) == before


async def test_a_connection_the_server_closed_while_idle_is_not_used_for_the_next_send(
    tmp_path: Path,
) -> None:
    with EmulatorServer(receipt_delay=0.0, tls=True, tls_dir=tmp_path) as emu:
        emu.app.server.config.timeout_keep_alive = 0.3  # read by each new connection
        t = transport(emu)
        try:
            assert (await t.call("QuerySmsSignList", {"PageIndex": "1"}))["Code"] == "OK"
            deadline = time.monotonic() + 5
            while server_connections(emu) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert server_connections(emu) == 0  # the server closed the idle connection
            await asyncio.sleep(0.1)
            phone = "13800138520"
            body = await t.call("SendSms", send_sms(phone))
            assert body["Code"] == "OK"  # not "unknown": the closed connection was not reused
            assert len(sent_to(emu, phone)) == 1
            assert t.pool is not None and t.pool.connections_opened == 2
        finally:
            await t.aclose()


# ------------------------------------------------------------------------------------------------ never resent


@pytest.mark.parametrize("action", ["SendSms", "SendBatchSms"])
async def test_drop_after_on_a_reused_connection_is_unknown_recorded_once_never_resent(
    tls_emu: EmulatorServer, action: str
) -> None:
    t = transport(tls_emu)
    phone = "13800138530" if action == "SendSms" else "13800138531"
    params = send_sms(phone) if action == "SendSms" else send_batch([phone])
    try:
        await t.call("QuerySmsSignList", {"PageIndex": "1"})  # the send then goes out on a kept-alive connection
        assert t.pool is not None and t.pool.connections_opened == 1
        tls_emu.faults.add("drop_after", action=action, count=1)
        with pytest.raises(OutcomeUnknownError) as caught:
            await t.call(action, params)
        assert caught.value.reason == "connection_lost"
        assert len(sent_to(tls_emu, phone)) == 1  # the emulator recorded it; nothing was sent again
        await asyncio.sleep(0.2)
        assert len(sent_to(tls_emu, phone)) == 1
        # The pool recovers: the next call opens a fresh connection and works.
        assert (await t.call("GetSmsSign", {"SignName": SIGN}))["Code"] == "OK"
        assert t.pool.connections_opened == 2
    finally:
        await t.aclose()


@pytest.mark.parametrize("action", ["SendSms", "SendBatchSms"])
async def test_drop_before_is_unknown_and_never_resent(tls_emu: EmulatorServer, action: str) -> None:
    """drop_before with count=1: a resend would succeed and be recorded, so "nothing recorded" proves no resend."""
    t = transport(tls_emu)
    phone = "13800138540" if action == "SendSms" else "13800138541"
    params = send_sms(phone) if action == "SendSms" else send_batch([phone])
    try:
        await t.call("QuerySmsSignList", {"PageIndex": "1"})
        tls_emu.faults.add("drop_before", action=action, count=1)
        with pytest.raises(OutcomeUnknownError) as caught:
            await t.call(action, params)
        assert caught.value.reason == "connection_lost"
        assert tls_emu.faults.snapshot() == []  # used exactly once
        await asyncio.sleep(0.2)
        assert sent_to(tls_emu, phone) == []
    finally:
        await t.aclose()


async def test_reads_dropped_over_tls_are_retried(tls_emu: EmulatorServer) -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    t = transport(tls_emu)
    t._sleep = fake_sleep
    tls_emu.faults.add("drop_before", action="GetSmsTemplate", count=2)
    try:
        assert (await t.call("GetSmsTemplate", {"TemplateCode": "SMS_900000002"}))["Code"] == "OK"
    finally:
        await t.aclose()
    assert len(slept) == 2 and 0.1 <= slept[0] <= 0.2 and 0.2 <= slept[1] <= 0.4


async def test_read_timeout_on_a_send_over_tls_is_unknown_and_recorded_once(tls_emu: EmulatorServer) -> None:
    phone = "13800138550"
    tls_emu.faults.add("delay_after", action="SendSms", count=1, seconds=2.0)
    t = transport(tls_emu, read_timeout=0.2)
    started = time.monotonic()
    with pytest.raises(OutcomeUnknownError) as caught:
        await t.call("SendSms", send_sms(phone))
    elapsed = time.monotonic() - started
    await t.aclose()
    assert caught.value.reason == "timeout"
    assert elapsed < 1.5  # the configured 0.2 s read timeout, not the 2 s the server took
    await asyncio.sleep(0.5)
    assert len(sent_to(tls_emu, phone)) == 1  # recorded before the delay; never sent again


async def test_connect_timeout_covers_a_tls_handshake_that_never_completes() -> None:
    """A listener that accepts TCP but never answers the TLS ClientHello: no request byte can have been sent."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    t = OpenApiTransport(Settings(endpoint=f"https://127.0.0.1:{port}", connect_timeout=0.3), credential=credential())
    started = time.monotonic()
    try:
        with pytest.raises(OutcomeUnknownError) as caught:
            await t.call("SendSms", send_sms("13800138560"))
    finally:
        elapsed = time.monotonic() - started
        await t.aclose()
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        listener.close()
    assert caught.value.reason == "connect_failed"
    assert elapsed < 2.5  # bounded by the connect timeout, not the 3 s read timeout


async def test_proxy_variables_are_honoured_with_no_proxy(
    tls_emu: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:  # a proxy port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{dead}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    t = transport(tls_emu)
    assert (await t.call("QuerySmsSignList", {"PageIndex": "1"}))["Code"] == "OK"
    await t.aclose()
    monkeypatch.delenv("NO_PROXY")
    monkeypatch.delenv("no_proxy", raising=False)
    t = transport(tls_emu)
    with pytest.raises(OutcomeUnknownError) as caught:  # through the dead proxy: never reaches the emulator
        await t.call("SendSms", send_sms("13800138570"))
    await t.aclose()
    assert caught.value.reason == "connect_failed"
    assert sent_to(tls_emu, "13800138570") == []


# ------------------------------------------------------------------------------------------------ the CLI


def _spawn_emulator(data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALIBABA_CLOUD_", "SMS_MCP_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sms_mcp", "emulator", "--tls", "--data-dir", str(data_dir), "--receipt-delay", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("emulator listening on https://127.0.0.1:"), line
    return proc, line.split()[-1]


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err[-2000:]
    return err


def test_emulator_tls_flag_keeps_its_ca_in_the_data_dir_and_serves_verified_https(tmp_path: Path) -> None:
    data = tmp_path / "emu"
    proc, url = _spawn_emulator(data)
    try:
        ca_file = data / "tls" / "emulator-ca.pem"
        assert ca_file.is_file()
        assert (data / "tls" / "emulator-ca-key.pem").stat().st_mode & 0o077 == 0  # the CA key is private
        first_ca = ca_file.read_bytes()
        settings = Settings.from_env(
            {"SMS_MCP_ENDPOINT": url, "SMS_MCP_CA_BUNDLE": str(ca_file), "SMS_MCP_DATA_DIR": str(tmp_path / "d")}
        )

        async def call() -> dict[str, Any]:
            t = OpenApiTransport(settings, credential=credential())
            try:
                return await t.call("QuerySmsSignList", {"PageIndex": "1"})
            finally:
                await t.aclose()

        assert asyncio.run(call())["Code"] == "OK"
    finally:
        err = _stop(proc)
    assert str(ca_file) in err  # the log says which CA to trust
    # A restart reuses the CA: a client configured with its file keeps working.
    proc, url = _spawn_emulator(data)
    try:
        assert ca_file.read_bytes() == first_ca
        settings = Settings.from_env({"SMS_MCP_ENDPOINT": url, "SMS_MCP_CA_BUNDLE": str(ca_file)})

        async def call_again() -> dict[str, Any]:
            t = OpenApiTransport(settings, credential=credential())
            try:
                return await t.call("GetSmsSign", {"SignName": SIGN})
            finally:
                await t.aclose()

        assert asyncio.run(call_again())["Code"] == "OK"
    finally:
        _stop(proc)


def test_sms_mcp_serve_reaches_the_https_emulator_with_the_configured_ca(
    tls_server: EmulatorServer, tmp_path: Path
) -> None:
    """A real ``sms-mcp serve`` subprocess, configured only through its environment, over stdio."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALIBABA_CLOUD_", "SMS_MCP_"))}
    env.update(
        HOME=str(tmp_path),
        SMS_MCP_BACKEND="openapi",
        SMS_MCP_DATA_DIR=str(tmp_path / "data"),
        SMS_MCP_ENDPOINT=tls_server.url,
        SMS_MCP_CA_BUNDLE=str(tls_server.ca_file),
        ALIBABA_CLOUD_ACCESS_KEY_ID=DEMO_ACCESS_KEY_ID,
        ALIBABA_CLOUD_ACCESS_KEY_SECRET=DEMO_ACCESS_KEY_SECRET,
        ALIBABA_CLOUD_ECS_METADATA_DISABLED="true",
    )
    messages = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "list_signs", "arguments": {}}},
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "sms_mcp", "serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("".join(json.dumps(m) + "\n" for m in messages))
    proc.stdin.flush()
    answer: dict[str, Any] = {}
    for line in proc.stdout:
        reply = json.loads(line)
        if reply.get("id") == 2:
            answer = reply
            break
    _, err = proc.communicate(timeout=30)  # closes stdin: the server exits on EOF
    assert proc.returncode == 0, err[-2000:]
    result = answer.get("result") or {}
    assert not result.get("isError"), (answer, err[-2000:])
    content = result["structuredContent"]
    assert content["backend"] == "openapi" and SIGN in [s["sign_name"] for s in content["signs"]]


def test_emulator_tls_dir_without_tls_is_refused(tmp_path: Path) -> None:
    from sms_mcp.emulator.http import main

    assert main(["--tls-dir", str(tmp_path / "tls")]) == 2
    assert not (tmp_path / "tls").exists()


async def test_batch_confirmation_over_tls_with_a_chunk_dropped_mid_send_is_reconciled_never_resent(
    tls_emu: EmulatorServer, tmp_path: Path
) -> None:
    """MCP client -> server -> domain -> pooled HTTPS: 250 recipients = 3 chunks on kept-alive connections; the
    connection carrying one chunk drops after the emulator recorded it. That chunk is unknown, the plan is
    reconciled from Alibaba's (the emulator's) records, and no recipient ever gets a second message."""
    from mcp import Client

    from sms_mcp.server import build_server

    settings = Settings.from_env(
        {
            "SMS_MCP_DATA_DIR": str(tmp_path),
            "SMS_MCP_BACKEND": "openapi",
            "SMS_MCP_ENDPOINT": tls_emu.url,
            "SMS_MCP_CA_BUNDLE": str(tls_emu.ca_file),
        }
    )
    transport_ = OpenApiTransport(settings, credential=credential())
    phones = [f"1370009{i:04d}" for i in range(250)]
    recipients = [
        {
            "phone_number": p,
            "sign_name": SIGN,
            "template_param": {"name": f"客户{i}", "order_no": f"N{i}", "date": "周二"},
        }
        for i, p in enumerate(phones)
    ]
    args = {"recipients": recipients, "template_code": "SMS_900000002"}
    async with Client(build_server(settings, transport_)) as client:
        plan = (await client.call_tool("send_batch_sms", args)).structured_content
        assert plan is not None and plan["plan"]["chunk_count"] == 3
        assert transport_.pool is not None and transport_.pool.connections_opened >= 1  # prepare's reads
        tls_emu.faults.add("drop_after", action="SendBatchSms", count=1)
        result = await client.call_tool("send_batch_sms", {**args, "confirm_token": plan["confirm_token"]})
        sent = result.structured_content
        assert sent is not None and sent["status"] == "unknown", sent
        assert sorted(c["state"] for c in sent["chunks"]) == ["accepted", "accepted", "unknown"]
        recorded = [m for m in tls_emu.core.messages() if m["phone_number"] in set(phones)]
        assert len(recorded) == 250  # every recipient once, the dropped chunk included

        replay = await client.call_tool("send_batch_sms", {**args, "confirm_token": plan["confirm_token"]})
        assert replay.structured_content is not None and replay.structured_content["replayed"] is True
        report = (await client.call_tool("query_details", {"plan_id": plan["plan_id"]})).structured_content
        assert report is not None
        statuses = Counter(r["status"] for r in report["records"])
        assert statuses == {"delivered": 250}, statuses  # reconciled from the receipts
    assert len([m for m in tls_emu.core.messages() if m["phone_number"] in set(phones)]) == 250


# ------------------------------------------------------------------------------------------------ warming the pool


def server_requests(emu: EmulatorServer) -> int:
    """Requests the server has answered (uvicorn counts one once its response is complete, so a client may read
    the answer a moment before the count moves: compare after ``_until``)."""
    return int(emu.app.server.server_state.total_requests)


async def _until(condition: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


async def test_warming_opens_tls_connections_sends_no_request_and_the_calls_reuse_them(
    tmp_path: Path,
) -> None:
    with EmulatorServer(receipt_delay=0.0, tls=True, tls_dir=tmp_path) as emu:
        t = transport(emu)
        try:
            await t.warm(8)
            assert t.pool is not None and t.pool.connections_opened == 8
            await _until(lambda: server_connections(emu) == 8)
            assert server_connections(emu) == 8  # eight TLS connections the server accepted
            assert server_requests(emu) == 0  # and not one request on them
            assert emu.core.messages() == []

            await t.warm(8)  # the pool already holds eight idle connections: nothing more is opened
            assert t.pool.connections_opened == 8 and server_requests(emu) == 0

            phones = [f"1370010{i:04d}" for i in range(8)]
            bodies = await asyncio.gather(*(t.call("SendBatchSms", send_batch([p])) for p in phones))
            assert all(b["Code"] == "OK" for b in bodies)
            assert t.pool.connections_opened == 8  # the calls went out on the warmed connections: no handshake
            await _until(lambda: server_requests(emu) == 8)
            assert server_connections(emu) == 8 and server_requests(emu) == 8
            assert sorted(m["phone_number"] for m in emu.core.messages()) == phones  # each sent once
        finally:
            await t.aclose()


async def test_calls_that_start_while_warming_wait_for_its_connections(tmp_path: Path) -> None:
    """The calls begin before the handshakes end: they take the connections being opened, not eight more."""
    with EmulatorServer(receipt_delay=0.0, tls=True, tls_dir=tmp_path) as emu:
        t = transport(emu)
        try:
            await t.start()
            warming = asyncio.create_task(t.warm(8))
            await asyncio.sleep(0)  # the warm-up has begun; no connection is open yet
            assert t.pool is not None and t.pool.connections_opened == 0
            phones = [f"1370011{i:04d}" for i in range(8)]
            bodies = await asyncio.gather(*(t.call("SendBatchSms", send_batch([p])) for p in phones))
            await warming
            assert all(b["Code"] == "OK" for b in bodies)
            await _until(lambda: server_requests(emu) == 8)
            assert t.pool.connections_opened == 8 and server_requests(emu) == 8
            assert sorted(m["phone_number"] for m in emu.core.messages()) == phones
        finally:
            await t.aclose()


class _Unwarmable:
    """The same openapi transport without the warm capability: the confirmation as it runs without warming."""

    def __init__(self, inner: OpenApiTransport) -> None:
        self.inner, self.name = inner, inner.name

    async def start(self) -> None:
        await self.inner.start()

    async def call(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        return await self.inner.call(action, params)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _batch(phones: list[str]) -> dict[str, Any]:
    return {"recipients": [{"phone_number": p, "sign_name": SIGN,
                            "template_param": {"name": "张三", "order_no": f"N{i}", "date": "周二"}}
                           for i, p in enumerate(phones)], "template_code": "SMS_900000002"}


async def test_a_confirmation_warms_its_connections_from_a_cold_pool(tls_emu: EmulatorServer, tmp_path: Path) -> None:
    """SmsService end to end: 250 recipients = 3 calls; the dispatcher opens 3 connections while it checks and
    claims, the calls use them, every recipient gets one message, and warming itself made no request."""
    from sms_mcp.core.dispatcher import Dispatcher
    from sms_mcp.core.service import SmsService

    settings = Settings.from_env({"SMS_MCP_DATA_DIR": str(tmp_path), "SMS_MCP_BACKEND": "openapi",
                                  "SMS_MCP_ENDPOINT": tls_emu.url, "SMS_MCP_CA_BUNDLE": str(tls_emu.ca_file)})
    t = OpenApiTransport(settings, credential=credential())
    service = SmsService(settings, t)
    warmed: list[int] = []
    original = Dispatcher._warm

    async def recording(transport_: Any, connections: int, plan_id: str) -> None:
        warmed.append(connections)
        await original(transport_, connections, plan_id)

    phones = [f"1370012{i:04d}" for i in range(250)]
    try:
        plan = await service.send_batch_sms(**_batch(phones))
        assert plan.status == "pending_confirmation" and plan.plan is not None and plan.plan.chunk_count == 3
        assert t.pool is not None
        await t.pool.aclose()  # a cold pool, as after any pause longer than the keep-alive
        opened, requests = t.pool.connections_opened, server_requests(tls_emu)
        Dispatcher._warm = staticmethod(recording)  # type: ignore[method-assign]
        try:
            sent = await service.send_batch_sms(**_batch(phones), confirm_token=plan.confirm_token)
        finally:
            Dispatcher._warm = staticmethod(original)  # type: ignore[method-assign]
        assert sent.status == "accepted", sent.message
        assert warmed == [3]  # min(8 in flight, 3 chunks)
        assert t.pool.connections_opened - opened == 3  # one handshake per call, all of them the warm-up's
        await _until(lambda: server_requests(tls_emu) - requests >= 3)
        await asyncio.sleep(0.1)
        assert server_requests(tls_emu) - requests == 3  # the three sends, nothing else
        assert len([m for m in tls_emu.core.messages() if m["phone_number"] in set(phones)]) == 250
    finally:
        service.ledger.close()
        await t.aclose()


async def test_a_failing_warm_up_leaves_the_confirmation_outcome_unchanged(
    tls_emu: EmulatorServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The endpoint is down: warming fails (swallowed), and the confirmation ends exactly as it does without it."""
    import logging

    from sms_mcp.core.service import SmsService

    caplog.set_level(logging.DEBUG, logger="sms_mcp.dispatcher")

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    outcomes = []
    for warmable in (True, False):
        settings = Settings.from_env({"SMS_MCP_DATA_DIR": str(tmp_path / str(warmable)), "SMS_MCP_BACKEND": "openapi",
                                      "SMS_MCP_ENDPOINT": tls_emu.url, "SMS_MCP_CA_BUNDLE": str(tls_emu.ca_file)})
        live = OpenApiTransport(settings, credential=credential())
        service = SmsService(settings, live)  # prepared against the emulator ...
        phones = [f"1370013{i:04d}" for i in range(150)]
        plan = await service.send_batch_sms(**_batch(phones))
        assert plan.status == "pending_confirmation", plan.message
        # ... confirmed through the same backend once its endpoint is down
        down = OpenApiTransport(settings.model_copy(update={"endpoint": f"https://127.0.0.1:{dead}"}),
                                credential=credential())
        service.dispatcher.transport = down if warmable else _Unwarmable(down)  # type: ignore[assignment]
        try:
            sent = await service.send_batch_sms(**_batch(phones), confirm_token=plan.confirm_token)
        finally:
            service.ledger.close()
            await live.aclose()
            await down.aclose()
        outcomes.append((sent.status, sorted((c.state, c.error_code or "") for c in sent.chunks)))
        assert not [m for m in tls_emu.core.messages() if m["phone_number"] in set(phones)]
    assert outcomes[0] == outcomes[1], outcomes
    assert [state for state, _ in outcomes[0][1]] == ["unknown", "unknown"], outcomes
    failed = [r.getMessage() for r in caplog.records if "ahead failed" in r.getMessage()]
    assert len(failed) == 1 and "opening 2 connection(s)" in failed[0], failed  # tried once, logged at debug
