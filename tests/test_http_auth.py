"""The gateway as an OAuth 2.1 resource server, through a real ``sms-mcp serve --http`` process: RFC 9728
metadata, 401 + ``WWW-Authenticate`` for every bad token, scopes, API keys, Host/Origin checks, and the refusal
to listen on a non-loopback address without authentication."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from http_support import (
    REPO_ROOT,
    SMS_ARGS,
    AuthorizationServer,
    Gateway,
    api_key_entry,
    gateway_env,
    http_get,
    mcp_client,
    modern_call,
)

from sms_mcp.emulator.http import EmulatorServer

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes")

ALICE_KEY = "smsk_" + "a" * 43
VIEWER_KEY = "smsk_" + "v" * 43


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, idp: AuthorizationServer,
            emulator_server: EmulatorServer) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("gw-auth")
    env = gateway_env(tmp, emulator_server, idp, SMS_MCP_API_KEYS=",".join([
        api_key_entry("alice-key", ALICE_KEY), api_key_entry("viewer-key", VIEWER_KEY, "sms.read")]))
    gw = Gateway(tmp, env)
    try:
        yield gw.wait_ready()
    finally:
        gw.stop()


def test_protected_resource_metadata(gateway: Gateway, idp: AuthorizationServer) -> None:
    for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"):
        status, _, body = http_get(gateway.base + path)
        assert status == 200, path
        meta = json.loads(body)
        assert meta["resource"] == gateway.url
        assert meta["authorization_servers"] == [idp.issuer]
        assert sorted(meta["scopes_supported"]) == ["sms.read", "sms.send"]


def _bad_tokens(idp: AuthorizationServer, aud: str) -> dict[str, str | None]:
    return {
        "no token": None,
        "garbage": "not-a-token",
        "expired": idp.token(aud, expires_in=-600),
        "wrong audience": idp.token("http://127.0.0.1:1/mcp"),
        "wrong issuer": idp.token(aud, issuer="https://evil.example.com/"),
        "bad signature": idp.token(aud, key=idp.rogue),
        "unknown kid": idp.token(aud, key=idp.rogue, kid="rogue"),
        "alg none": idp.unsigned(aud),
        "HS256 keyed with the public key": idp.hmac_with_public_key(aud),
        "no subject": _without(idp, aud, "sub"),
        "unknown API key": "smsk_" + "x" * 43,
    }


def _without(idp: AuthorizationServer, aud: str, claim: str) -> str:
    import jwt

    claims = jwt.decode(idp.token(aud), options={"verify_signature": False})
    claims.pop(claim)
    return jwt.encode(claims, idp.key, algorithm="RS256", headers={"kid": "test-key-1"})


def test_every_bad_token_gets_401_with_resource_metadata(gateway: Gateway, idp: AuthorizationServer) -> None:
    for name, token in _bad_tokens(idp, gateway.url).items():
        status, headers, body = modern_call(gateway.url, "list_signs", {}, token)
        assert status == 401, (name, status, body)
        challenge = headers["www-authenticate"]
        assert challenge.startswith("Bearer ")
        assert f'resource_metadata="{gateway.base}/.well-known/oauth-protected-resource/mcp"' in challenge, name
    # A legacy-era request is checked before era routing too.
    status, headers, _ = modern_call(gateway.url, "list_signs", {}, idp.token(gateway.url, expires_in=-600),
                                     extra_headers={"mcp-protocol-version": "2025-11-25"})
    assert status == 401


def test_valid_token_and_api_key_are_served(gateway: Gateway, idp: AuthorizationServer) -> None:
    for token in (idp.token(gateway.url), ALICE_KEY, VIEWER_KEY):
        status, _, body = modern_call(gateway.url, "list_signs", {}, token)
        assert status == 200, body
        assert body["result"]["structuredContent"]["signs"], body


async def test_read_only_scope_refuses_sends_with_a_clear_code(gateway: Gateway, idp: AuthorizationServer,
                                                               emulator_server: EmulatorServer) -> None:
    before = len(emulator_server.core.messages())
    for token in (idp.token(gateway.url, subject="viewer", scopes="sms.read"), VIEWER_KEY):
        for mode in ("auto", "legacy"):
            async with mcp_client(gateway.url, token, mode=mode) as client:
                signs = await client.call_tool("list_signs", {})
                assert not signs.is_error
                refused = await client.call_tool("send_sms", SMS_ARGS)
                assert refused.is_error
                text = refused.content[0].text  # type: ignore[union-attr]
                assert text.startswith("[sms_mcp.INSUFFICIENT_SCOPE]") and "sms.send" in text
    # The resources are read data too.
    async with mcp_client(gateway.url, idp.token(gateway.url, scopes="sms.send"), mode="legacy") as client:
        with pytest.raises(Exception, match="INSUFFICIENT_SCOPE"):
            await client.read_resource("sms://signs")
    async with mcp_client(gateway.url, VIEWER_KEY, mode="legacy") as client:
        assert (await client.read_resource("sms://signs")).contents
    # A token with sms.send but without sms.read cannot read.
    status, _, body = modern_call(gateway.url, "list_signs", {}, idp.token(gateway.url, scopes="sms.send"))
    assert status == 200 and body["result"]["isError"] is True
    assert "[sms_mcp.INSUFFICIENT_SCOPE]" in body["result"]["content"][0]["text"]
    assert len(emulator_server.core.messages()) == before


async def test_send_in_both_eras_records_principal_in_logs_and_metrics(
        gateway: Gateway, idp: AuthorizationServer, emulator_server: EmulatorServer) -> None:
    token = idp.token(gateway.url, subject="alice@example.com", client_id="claude-code")
    before = len(emulator_server.core.messages())
    plan_ids = []
    for mode in ("auto", "legacy"):
        async with mcp_client(gateway.url, token, mode=mode) as client:
            args = {**SMS_ARGS, "phone_numbers": ["13800138001" if mode == "auto" else "13800138002"]}
            plan = await client.call_tool("send_sms", args)
            assert not plan.is_error, plan.content
            token_ = plan.structured_content["confirm_token"]  # type: ignore[index]
            sent = await client.call_tool("send_sms", {**args, "confirm_token": token_})
            assert not sent.is_error, sent.content
            assert sent.structured_content["status"] in ("accepted", "sent")  # type: ignore[index]
            plan_ids.append(plan.structured_content["plan_id"])  # type: ignore[index]
    assert len(emulator_server.core.messages()) == before + 2
    logged = [e for e in gateway.log_lines() if e.get("tool") == "send_sms" and e.get("plan_id") in plan_ids]
    assert logged and all(e["principal"] == "alice@example.com" and e["client_id"] == "claude-code"
                          for e in logged)
    status, _, metrics = http_get(gateway.base + "/metrics")
    text = metrics.decode()
    assert status == 200
    assert 'sms_mcp_sends_total{outcome="accepted"}' in text
    assert 'sms_mcp_tool_calls_total{outcome="ok",tool="send_sms"}' in text
    assert 'sms_mcp_api_call_seconds_count{action="SendSms"}' in text
    assert "13800138001" not in gateway.stderr() and ALICE_KEY not in gateway.stderr()


def test_host_and_origin_are_validated(gateway: Gateway, idp: AuthorizationServer) -> None:
    token = idp.token(gateway.url)
    status, _, _ = modern_call(gateway.url, "list_signs", {}, token, {"host": "evil.example.com"})
    assert status == 421
    status, _, _ = modern_call(gateway.url, "list_signs", {}, token, {"origin": "https://evil.example.com"})
    assert status == 403
    status, _, _ = modern_call(gateway.url, "list_signs", {}, token, {"origin": gateway.base})
    assert status == 200


def test_health_routes_need_no_token(gateway: Gateway) -> None:
    status, _, body = http_get(gateway.base + "/healthz")
    assert status == 200 and json.loads(body)["status"] == "alive"
    status, _, body = http_get(gateway.base + "/readyz")
    assert status == 200 and json.loads(body)["status"] == "ready"


def _serve(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sms_mcp", "serve", "--http", *args], cwd=REPO_ROOT,
                          env=gateway_env(tmp_path, None, **env), capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10"])
def test_non_loopback_without_auth_is_refused(tmp_path: Path, host: str) -> None:
    done = _serve(tmp_path, "--host", host, "--port", "18999",
                  SMS_MCP_PUBLIC_URL="https://sms.example.com/mcp")
    assert done.returncode == 2
    assert "refusing to listen" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(("env", "needle"), [
    ({"SMS_MCP_API_KEYS": "alice:sms.send:" + ALICE_KEY}, "SHA-256"),
    ({"SMS_MCP_API_KEYS": "alice:sms.admin:" + "0" * 64}, "scopes"),
    ({"SMS_MCP_AUTH_ISSUER": "https://idp.example.com/"}, "go together"),
    ({"SMS_MCP_AUTH_ISSUER": "http://idp.example.com/", "SMS_MCP_AUTH_JWKS_URL": "http://idp.example.com/j"},
     "https"),
    ({"SMS_MCP_REQUEST_STATE_KEYS": "short"}, "32 bytes"),
    ({"SMS_MCP_PUBLIC_URL": "https://sms.example.com/"}, "SMS_MCP_PUBLIC_URL"),
])
def test_bad_http_configuration_is_refused_clearly(tmp_path: Path, env: dict[str, str], needle: str) -> None:
    done = _serve(tmp_path, "--port", "18998", **env)
    assert done.returncode == 2, done.stderr
    assert needle in done.stderr and "Traceback" not in done.stderr
    assert ALICE_KEY not in done.stderr


def test_unknown_key_ids_do_not_hammer_the_jwks(gateway: Gateway, idp: AuthorizationServer) -> None:
    """A flood of tokens naming unknown keys costs the authorization server at most one refetch per cooldown."""
    modern_call(gateway.url, "list_signs", {}, idp.token(gateway.url))  # keys cached
    fetched = idp.fetches
    for n in range(20):
        status, _, _ = modern_call(gateway.url, "list_signs", {}, idp.token(gateway.url, key=idp.rogue,
                                                                            kid=f"rogue-{n}"))
        assert status == 401
    assert idp.fetches - fetched <= 1


def test_broken_ledger_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ledger.sqlite3").write_bytes(b"this is not a database" * 100)
    done = _serve(tmp_path, "--port", "18997")
    assert done.returncode == 1, done.stderr
    assert "cannot serve" in done.stderr and "ledger" in done.stderr and "Traceback" not in done.stderr
