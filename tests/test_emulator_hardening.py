"""The HTTP emulator against a careless operator and a hostile neighbour: replays across restarts, CSRF and DNS
rebinding on the admin API, oversized bodies, absurd fault specs, secrets on the command line."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from alibabacloud_credentials.client import Client as CredentialClient
from alibabacloud_credentials.models import Config as CredentialConfig
from conftest import PROXY_VARS
from test_http_emulator import http, signed_v3

from sms_mcp.config import Settings
from sms_mcp.emulator.http import (
    ADMIN_TOKEN_HEADER,
    MAX_ADMIN_BODY_BYTES,
    MAX_BODY_BYTES,
    SECRET_ENV,
    EmulatorServer,
    Fault,
    main,
)
from sms_mcp.wire.openapi import OpenApiTransport

REPO = Path(__file__).resolve().parents[1]
JSON = {"content-type": "application/json"}
SEND = {"PhoneNumbers": "13500000077", "SignName": "速通科技", "TemplateCode": "SMS_900000002",
        "TemplateParam": '{"name":"王五","order_no":"C3","date":"周一"}'}


@dataclass
class Endpoint:
    url: str

    @property
    def endpoint(self) -> str:
        return self.url.removeprefix("http://")


class Process:
    """`sms-mcp emulator` as a subprocess."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        base = {k: v for k, v in os.environ.items() if k not in PROXY_VARS and k != SECRET_ENV}
        self.proc = subprocess.Popen([sys.executable, "-m", "sms_mcp", "emulator", "--port", "0", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                                     env={**base, **(env or {})})
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.kill()
            raise AssertionError(f"emulator did not start: {self.proc.communicate(timeout=10)}")
        self.url = line.removeprefix("emulator listening on ").strip()
        self.port = int(self.url.rsplit(":", 1)[1])

    def stop(self) -> str:
        self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
        return err


def messages(url: str, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    status, _, body = http(f"{url}/_emulator/messages", headers=headers)
    assert status == 200, body
    found: list[dict[str, Any]] = json.loads(body)["messages"]
    return found


# ------------------------------------------------------------------------------------------ nonces


def test_a_signed_send_replayed_after_a_restart_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    first = Process("--data-dir", str(tmp_path))
    try:
        url, headers = signed_v3(Endpoint(first.url), "SendSms", SEND)  # type: ignore[arg-type]
        status, _, body = http(url, "POST", b"", headers)
        assert status == 200 and json.loads(body)["Code"] == "OK"
    finally:
        first.stop()
    assert (tmp_path / "emulator-nonces.sqlite3").exists()
    second = Process("--data-dir", str(tmp_path), "--port", str(first.port))  # same Host: the signature holds
    try:
        status, _, body = http(url, "POST", b"", headers)  # the captured request, byte for byte
        assert status == 400 and json.loads(body)["Code"] == "SignatureNonceUsed"
        assert [m["phone_number"] for m in messages(second.url)] == ["13500000077"]  # one message, not two
        fresh_url, fresh_headers = signed_v3(Endpoint(second.url), "SendSms", SEND)  # type: ignore[arg-type]
        assert http(fresh_url, "POST", b"", fresh_headers)[0] == 200  # a new nonce is fine
    finally:
        second.stop()


# ------------------------------------------------------------------------------------------ admin API


def test_admin_refuses_a_cross_origin_text_post_and_a_foreign_host(emu: EmulatorServer) -> None:
    fault = json.dumps({"kind": "error_500"}).encode()
    port = emu.url.rsplit(":", 1)[1]
    # CSRF: a browser may POST text/plain cross-origin without a preflight.
    status, _, body = http(f"{emu.url}/_emulator/faults", "POST", fault, {"content-type": "text/plain"})
    assert status == 415 and "application/json" in json.loads(body)["error"]
    status, _, _ = http(f"{emu.url}/_emulator/faults", "POST", fault)  # urllib's default form encoding
    assert status == 415
    # DNS rebinding: the browser names the attacker's host.
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "10.0.0.1"):
        status, _, _ = http(f"{emu.url}/_emulator/faults", "POST", fault, {**JSON, "host": host})
        assert status == 403, host
        status, _, _ = http(f"{emu.url}/_emulator/messages", headers={"host": host})
        assert status == 403, host
    assert emu.faults.snapshot() == []
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", "127.0.0.2"):
        assert http(f"{emu.url}/_emulator/messages", headers={"host": host})[0] == 200, host


def test_admin_token_when_enabled() -> None:
    with EmulatorServer(admin_token="s3cret-token") as emu:
        fault = json.dumps({"kind": "throttle"}).encode()
        for headers in ({}, {ADMIN_TOKEN_HEADER: "wrong"}):
            assert http(f"{emu.url}/_emulator/faults", "POST", fault, {**JSON, **headers})[0] == 401
            assert http(f"{emu.url}/_emulator/messages", headers=headers)[0] == 401
        assert emu.faults.snapshot() == []
        good = {ADMIN_TOKEN_HEADER: "s3cret-token"}
        assert http(f"{emu.url}/_emulator/faults", "POST", fault, {**JSON, **good})[0] == 200
        assert messages(emu.url, good) == []


def test_admin_token_flag_prints_a_token_on_stderr() -> None:
    process = Process("--admin-token")
    try:
        assert process.proc.stderr is not None
        token = ""
        for _ in range(20):
            line = process.proc.stderr.readline()
            if "admin token" in line:
                token = line.rsplit(": ", 1)[1].strip()
                break
        assert len(token) >= 24
        assert http(f"{process.url}/_emulator/messages")[0] == 401
        assert messages(process.url, {ADMIN_TOKEN_HEADER: token}) == []
    finally:
        process.stop()


# ------------------------------------------------------------------------------------------ body cap


def raw_post(url: str, path: str, total: int, *, chunked: bool) -> tuple[int, bytes]:
    """POST ``total`` bytes, with a Content-Length or chunked (nothing to refuse up front); status and answer. The
    server may answer and close before the body is all sent: that is the point, so send errors are ignored."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                     f"{framing}\r\n\r\n".encode())
        chunk = b"x" * 65536
        sent = 0
        try:
            while sent < total:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if chunked else chunk)
                sent += len(chunk)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass
        answer = b""
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                break
            if not data:
                break
            answer += data
            if b"\r\n\r\n" in answer and answer.endswith(b"}"):
                break
    return int(answer.split(b" ", 2)[1]), answer.partition(b"\r\n\r\n")[2]


def test_oversized_bodies_get_413_and_the_emulator_keeps_serving(emu: EmulatorServer) -> None:
    status, body = raw_post(emu.url, "/", MAX_BODY_BYTES + 65536, chunked=False)
    assert status == 413 and json.loads(body)["Code"] == "RequestEntityTooLarge"
    assert raw_post(emu.url, "/", 8 * MAX_BODY_BYTES, chunked=True)[0] == 413  # no length to check up front
    assert raw_post(emu.url, "/_emulator/faults", 2 * MAX_ADMIN_BODY_BYTES, chunked=True)[0] == 413
    assert raw_post(emu.url, "/_emulator/faults", 2 * MAX_ADMIN_BODY_BYTES, chunked=False)[0] == 413
    assert emu.faults.snapshot() == []
    url, headers = signed_v3(emu, "QuerySmsSignList", {"PageIndex": "1"})
    assert http(url, "POST", b"", headers)[0] == 200


# ------------------------------------------------------------------------------------------ fault specs


@pytest.mark.parametrize("spec", [
    {"kind": "delay_before", "seconds": math.nan}, {"kind": "delay_before", "seconds": math.inf},
    {"kind": "delay_after", "seconds": 1e308}, {"kind": "delay_after", "seconds": "nan"},
    {"kind": "throttle", "seconds": -1}, {"kind": "throttle", "seconds": [1]}, {"kind": "throttle", "seconds": True},
    {"kind": "throttle", "count": 1.5}, {"kind": "throttle", "count": True}, {"kind": "throttle", "count": 1e308},
    {"kind": "throttle", "count": "1e3"}, {"kind": "throttle", "count": 10**30}, {"kind": ["throttle"]},
    {"kind": "throttle", "action": {"x": 1}}, {"faults": "x"}, {"faults": [1]},
])
def test_absurd_fault_specs_are_a_400_and_change_nothing(emu: EmulatorServer, spec: dict[str, Any]) -> None:
    status, headers, body = http(f"{emu.url}/_emulator/faults", "POST", json.dumps(spec).encode(), JSON)
    assert status == 400 and headers["content-type"].startswith("application/json")
    assert len(json.loads(body)["error"]) < 400
    assert emu.faults.snapshot() == []
    url, signed = signed_v3(emu, "QuerySmsSignList", {"PageIndex": "1"})
    started = time.monotonic()
    assert http(url, "POST", b"", signed)[0] == 200 and time.monotonic() - started < 10


@pytest.mark.parametrize("spec", ["delay_before,seconds=nan", "delay_after,seconds=inf", "throttle,seconds=1e308",
                                  "throttle,count=1.5", "throttle,count=-1"])
def test_absurd_fault_flags_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        Fault.parse(spec)
    assert main(["--fault", spec]) == 2


# ------------------------------------------------------------------------------------------ secrets


async def can_call(url: str, key_id: str, secret: str) -> bool:
    credential = CredentialClient(CredentialConfig(type="access_key", access_key_id=key_id, access_key_secret=secret))
    transport = OpenApiTransport(Settings(endpoint=url), credential=credential, read_attempts=1)
    return (await transport.call("QuerySmsSignList", {"PageIndex": "1"}))["Code"] == "OK"


async def test_the_secret_from_a_file_or_the_environment_and_a_warning_for_argv(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("file-secret\n")
    process = Process("--access-key-id", "file-id", "--access-key-secret-file", str(secret_file))
    try:
        assert await can_call(process.url, "file-id", "file-secret")
    finally:
        err = process.stop()
    assert "command line" not in err and "file-secret" not in err

    process = Process("--access-key-id", "env-id", env={SECRET_ENV: "env-secret"})
    try:
        assert await can_call(process.url, "env-id", "env-secret")
    finally:
        err = process.stop()
    assert "command line" not in err and "env-secret" not in err

    process = Process("--access-key-id", "argv-id", "--access-key-secret", "argv-secret")
    try:
        assert await can_call(process.url, "argv-id", "argv-secret")
    finally:
        err = process.stop()
    assert "command line" in err and "argv-secret" not in err


def test_conflicting_or_missing_secret_sources_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("s")
    assert main(["--access-key-id", "a", "--access-key-secret", "s", "--access-key-secret-file", str(secret_file)]) == 2
    assert main(["--access-key-id", "a", "--access-key-secret-file", str(tmp_path / "missing")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["--access-key-id", "a"]) == 2  # no secret anywhere
    monkeypatch.setenv(SECRET_ENV, "s")
    assert main([]) == 2  # a secret for no key: refused rather than silently ignored
    assert main(["--access-key-id", "a", "--access-key-id", "b"]) == 2  # one secret, two keys
