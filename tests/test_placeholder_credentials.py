"""Placeholder-looking credential values count as absent, and the server says so (issue 13, finding 1).

A host registration such as ``openclaw mcp add sms --command sms-mcp --env
'ALIBABA_CLOUD_ACCESS_KEY_ID=${ALIBABA_CLOUD_ACCESS_KEY_ID}'`` passes the literal text ``${…}`` when the variable
is unset. That must select the sandbox (not openapi with a bogus key), and ``doctor`` and every tool result name
the ignored variable.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mcp import Client, StdioServerParameters
from test_credentials import CLI_KEY, ENV_KEY, emu, run_probe, write_cli_config  # noqa: F401  (emu: fixture)

from sms_mcp.emulator.http import EmulatorServer
from sms_mcp.wire.credentials import (
    CREDENTIAL_VARS,
    ecs_role_opted_in,
    find_credentials,
    placeholder_kind,
    placeholder_notice,
    placeholder_variables,
    prepare_environment,
    usable_environment,
)

SERVER = str(Path(sys.executable).parent / "sms-mcp")
UNEXPANDED = {"ALIBABA_CLOUD_ACCESS_KEY_ID": "${ALIBABA_CLOUD_ACCESS_KEY_ID}",
              "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "${ALIBABA_CLOUD_ACCESS_KEY_SECRET}"}


@pytest.mark.parametrize("value", [
    "${ALIBABA_CLOUD_ACCESS_KEY_ID}", "$ALIBABA_CLOUD_ACCESS_KEY_ID", " ${X} ", "${X:-LTAI5tRealLookingDefault}",
    "prefix${X}", "<your AccessKey ID>", "<>", "LTAI…", "LTAI5t...", "…", "", "   ", "\t\n",
])
def test_placeholders_are_recognised(value: str) -> None:
    assert placeholder_kind(value) is not None


@pytest.mark.parametrize("value", [
    "LTAI5tAbCdEf1234", "sms-mcp-demo-secret", "acs:ram::1:role/sms", "/var/run/secrets/token",
    "http://127.0.0.1:8080/credentials", "CAIS+sts/token==", "a$b", "work", "cost$5",
])
def test_real_looking_values_are_not_placeholders(value: str) -> None:
    assert placeholder_kind(value) is None


@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=_-", min_size=1))
def test_no_real_access_key_alphabet_value_is_a_placeholder(value: str) -> None:
    assert placeholder_kind(value) is None


def test_the_kind_never_quotes_anything_but_a_bare_reference() -> None:
    secretish = "LTAI5tRealSecretPart"
    for value in (f"{secretish}...", f"{secretish}…", f"<{secretish}>", f"${{X:-{secretish}}}", f"{secretish}${{X}}"):
        kind = placeholder_kind(value)
        assert kind is not None and secretish not in kind, (value, kind)
    assert placeholder_kind("${ALIBABA_CLOUD_ACCESS_KEY_ID}") == "unexpanded '${ALIBABA_CLOUD_ACCESS_KEY_ID}'"
    assert len(placeholder_kind("$" + "A" * 500) or "") < 100  # bounded echo


def test_find_credentials_treats_placeholders_as_absent(tmp_path: Path) -> None:
    home = {"HOME": str(tmp_path)}
    assert find_credentials({**home, **UNEXPANDED}) is None
    readme_example = {"ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI…", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "…"}
    assert find_credentials({**home, **readme_example}) is None
    # A real id beside a placeholder secret is not a pair either.
    assert find_credentials({**home, "ALIBABA_CLOUD_ACCESS_KEY_ID": ENV_KEY[0],
                             "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "<secret>"}) is None
    for var in ("ALIBABA_CLOUD_ECS_METADATA", "ALIBABA_CLOUD_CREDENTIALS_URI"):
        assert find_credentials({**home, var: f"${{{var}}}"}) is None
    oidc = {v: f"${{{v}}}" for v in ("ALIBABA_CLOUD_ROLE_ARN", "ALIBABA_CLOUD_OIDC_PROVIDER_ARN",
                                      "ALIBABA_CLOUD_OIDC_TOKEN_FILE")}
    assert find_credentials({**home, **oidc}) is None
    # The chain moves on past placeholders: a real CLI profile is still found, and a placeholder profile name
    # falls back to the config's current profile.
    write_cli_config(tmp_path, [{"name": "sms", "mode": "AK", "access_key_id": CLI_KEY[0],
                                 "access_key_secret": CLI_KEY[1]}], current="sms")
    assert find_credentials({**home, **UNEXPANDED, "ALIBABA_CLOUD_PROFILE": "${ALIBABA_CLOUD_PROFILE}"}) == (
        "cli profile 'sms' (AK LTAI****5678)")
    # Real values are untouched.
    real = {**home, "ALIBABA_CLOUD_ACCESS_KEY_ID": ENV_KEY[0], "ALIBABA_CLOUD_ACCESS_KEY_SECRET": ENV_KEY[1]}
    assert find_credentials(real) == "env (LTAI****1234)"
    assert usable_environment(real) == real


def test_notice_names_variables_not_values() -> None:
    env = {**UNEXPANDED, "ALIBABA_CLOUD_SECURITY_TOKEN": "CAISreal…tail", "HOME": "/x"}
    notice = placeholder_notice(env)
    assert notice is not None
    for var in (*UNEXPANDED, "ALIBABA_CLOUD_SECURITY_TOKEN"):
        assert var in notice
    assert "CAISreal" not in notice and len(notice) < 600
    assert set(placeholder_variables(env)) == {*UNEXPANDED, "ALIBABA_CLOUD_SECURITY_TOKEN"}
    # Empty settings alone (a host's blank optional fields) are the normal way to ask for the sandbox: no remark.
    assert placeholder_notice({"ALIBABA_CLOUD_ACCESS_KEY_ID": "", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": " "}) is None
    assert placeholder_notice({}) is None
    assert placeholder_notice({"SMS_MCP_ALLOWED_NUMBERS": "${X}"}) is None  # only credential variables


def test_a_placeholder_never_opts_into_the_ecs_metadata_probe() -> None:
    for var in ("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "ALIBABA_CLOUD_ECS_METADATA"):
        env = {var: f"${{{var}}}"}
        assert not ecs_role_opted_in(env)
        prepare_environment(env)
        assert env["ALIBABA_CLOUD_ECS_METADATA_DISABLED"] == "true"
    assert ecs_role_opted_in({"ALIBABA_CLOUD_ECS_METADATA_DISABLED": "false"})  # a real "false" still opts in


def test_prepare_environment_removes_only_placeholders() -> None:
    env = {**UNEXPANDED, "ALIBABA_CLOUD_REGION_ID": "cn-hangzhou", "ALIBABA_CLOUD_PROFILE": "work"}
    prepare_environment(env)
    assert not set(UNEXPANDED) & set(env)
    assert env["ALIBABA_CLOUD_PROFILE"] == "work" and env["ALIBABA_CLOUD_REGION_ID"] == "cn-hangzhou"
    assert set(CREDENTIAL_VARS) >= set(UNEXPANDED)


# --------------------------------------------------------------------------------- Alibaba's real chain

@pytest.mark.parametrize("preimport", [False, True])
def test_chain_skips_placeholders_and_uses_the_real_profile(
    emu: EmulatorServer, tmp_path: Path, preimport: bool  # noqa: F811
) -> None:
    """The SDK's own chain would take ``${…}`` as an AccessKey; after prepare_environment it skips it exactly as
    find_credentials does, even when the SDK was imported (and snapshotted the environment) first."""
    write_cli_config(tmp_path, [{"name": "sms", "mode": "AK", "access_key_id": CLI_KEY[0],
                                 "access_key_secret": CLI_KEY[1], "region_id": "cn-hangzhou"}], current="sms")
    extra = {**UNEXPANDED, "ALIBABA_CLOUD_SECURITY_TOKEN": "${ALIBABA_CLOUD_SECURITY_TOKEN}"}
    if preimport:
        extra["PROBE_PREIMPORT"] = "1"
    out, _ = run_probe(emu, tmp_path, extra)
    assert out["found"] == "cli profile 'sms' (AK LTAI****5678)"
    assert out["resolved"][0] == "openapi" and "ALIBABA_CLOUD_ACCESS_KEY_ID" in out["resolved"][1]
    assert out["call"] == {"code": "OK"}


def test_chain_with_only_placeholders_is_the_sandbox(emu: EmulatorServer, tmp_path: Path) -> None:  # noqa: F811
    out, _ = run_probe(emu, tmp_path, dict(UNEXPANDED))
    assert out["found"] is None
    assert out["resolved"][0] == "sandbox"
    assert "ignored as placeholders: ALIBABA_CLOUD_ACCESS_KEY_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET" in out["resolved"][1]
    # Forced onto openapi, the placeholders are not sent as an AccessKey: a clear "no credentials" instead.
    assert out["call"]["error"] == "InvalidCredentials"


# --------------------------------------------------------------------------------- the real server process

def server_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALIBABA_CLOUD_", "ALICLOUD_", "SMS_MCP_"))}
    env.update({"HOME": str(tmp_path), "SMS_MCP_DATA_DIR": str(tmp_path / "data"), "SMS_MCP_BACKEND": "auto",
                "SMS_MCP_SANDBOX_RECEIPT_DELAY": "0", **extra})
    return env


def test_serve_with_unexpanded_variables_runs_the_sandbox_and_says_why(tmp_path: Path) -> None:
    async def session() -> dict[str, Any]:
        params = StdioServerParameters(command=SERVER, env=server_env(tmp_path, **UNEXPANDED))
        async with Client(params) as client:
            result = await client.call_tool("list_signs", {})
            assert not result.is_error, result.content
            assert result.structured_content is not None
            return result.structured_content

    signs = anyio.run(session)
    assert signs["backend"] == "sandbox" and signs["total_count"] == 3
    assert "ALIBABA_CLOUD_ACCESS_KEY_ID" in signs["notice"] and "ALIBABA_CLOUD_ACCESS_KEY_SECRET" in signs["notice"]
    assert "no real SMS" in signs["notice"]


def test_serve_with_empty_variables_is_the_plain_sandbox(tmp_path: Path) -> None:
    async def session() -> dict[str, Any]:
        env = server_env(tmp_path, ALIBABA_CLOUD_ACCESS_KEY_ID="", ALIBABA_CLOUD_ACCESS_KEY_SECRET="")
        async with Client(StdioServerParameters(command=SERVER, env=env)) as client:
            result = await client.call_tool("list_signs", {})
            assert result.structured_content is not None
            return result.structured_content

    signs = anyio.run(session)
    assert signs["backend"] == "sandbox" and "ALIBABA_CLOUD" not in signs["notice"]


def test_doctor_names_the_ignored_variable(tmp_path: Path) -> None:
    proc = subprocess.run([SERVER, "doctor"], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                          env=server_env(tmp_path, **UNEXPANDED))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("backend: sandbox") and "ALIBABA_CLOUD_ACCESS_KEY_ID" in line for line in lines)
    assert any("placeholder" in line and "ALIBABA_CLOUD_ACCESS_KEY_SECRET" in line for line in lines), proc.stdout
    secretish = server_env(tmp_path, ALIBABA_CLOUD_ACCESS_KEY_ID="LTAI5tRealPrefix...",
                           ALIBABA_CLOUD_ACCESS_KEY_SECRET="RealSecretPrefix…")
    proc = subprocess.run([SERVER, "doctor"], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                          env=secretish)
    assert proc.returncode == 0, proc.stderr
    assert "ALIBABA_CLOUD_ACCESS_KEY_SECRET" in proc.stdout
    assert "RealSecretPrefix" not in proc.stdout + proc.stderr and "LTAI5tRealPrefix" not in proc.stdout


def test_the_aliyun_cli_never_sees_placeholder_credentials() -> None:
    """The CLI backend's child environment drops them too, so `aliyun` falls back to its profile instead of
    signing with `${ALIBABA_CLOUD_ACCESS_KEY_ID}`."""
    from sms_mcp.wire.aliyun_cli import AliyunCliTransport

    base = {**UNEXPANDED, "ALIBABA_CLOUD_PROFILE": "sms", "PATH": "/usr/bin", "HOME": "/nonexistent"}
    env = AliyunCliTransport(env=base).child_env()
    assert not set(UNEXPANDED) & set(env)
    assert env["ALIBABA_CLOUD_PROFILE"] == "sms" and env["ALIBABA_CLOUD_CLI_AI_MODE"] == "1"
    real = {**base, "ALIBABA_CLOUD_ACCESS_KEY_ID": ENV_KEY[0], "ALIBABA_CLOUD_ACCESS_KEY_SECRET": ENV_KEY[1]}
    env = AliyunCliTransport(env=real).child_env()
    assert env["ALIBABA_CLOUD_ACCESS_KEY_ID"] == ENV_KEY[0] and env["ALIBABA_CLOUD_ACCESS_KEY_SECRET"] == ENV_KEY[1]
