"""Credential discovery (`find_credentials`) and Alibaba's default chain end to end.

The chain tests run in a SUBPROCESS each: alibabacloud-credentials reads the environment at import time, so only a
fresh interpreter honours the environment a test sets up. Every subprocess blocks and records connections to the
ECS metadata address 100.100.100.200, and the tests assert there were none.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sms_mcp.emulator.http import EmulatorServer
from sms_mcp.wire.credentials import ecs_role_opted_in, find_credentials, mask_access_key_id

REPO = Path(__file__).resolve().parents[1]

ENV_KEY = ("LTAI5tEnvTest0001234", "env-secret-value")
CLI_KEY = ("LTAI5tCliTest0005678", "cli-secret-value")
INI_KEY = ("LTAI5tIniTest0009999", "ini-secret-value")


# ------------------------------------------------------------------------------------------------ pure unit tests


def write_cli_config(home: Path, profiles: list[dict[str, Any]], current: str = "default") -> None:
    (home / ".aliyun").mkdir(parents=True, exist_ok=True)
    (home / ".aliyun" / "config.json").write_text(json.dumps({"current": current, "profiles": profiles}))


def write_ini(home: Path, text: str) -> None:
    (home / ".alibabacloud").mkdir(parents=True, exist_ok=True)
    (home / ".alibabacloud" / "credentials.ini").write_text(text)


def test_mask_access_key_id() -> None:
    assert mask_access_key_id("LTAI5tAbCdEf1234") == "LTAI****1234"
    assert mask_access_key_id("short1") == "sh****t1"
    assert mask_access_key_id("abc") == "****"


def test_nothing_configured(tmp_path: Path) -> None:
    assert find_credentials({"HOME": str(tmp_path)}) is None


def test_env_pair_wins_and_is_masked(tmp_path: Path) -> None:
    write_cli_config(
        tmp_path, [{"name": "default", "mode": "AK", "access_key_id": CLI_KEY[0], "access_key_secret": CLI_KEY[1]}]
    )
    env = {
        "HOME": str(tmp_path),
        "ALIBABA_CLOUD_ACCESS_KEY_ID": ENV_KEY[0],
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": ENV_KEY[1],
    }
    assert find_credentials(env) == "env (LTAI****1234)"
    assert find_credentials({**env, "ALIBABA_CLOUD_SECURITY_TOKEN": "tok"}) == "env (sts LTAI****1234)"
    # An id without a secret is not a credential: the chain moves on to the CLI profile.
    del env["ALIBABA_CLOUD_ACCESS_KEY_SECRET"]
    assert find_credentials(env) == "cli profile 'default' (AK LTAI****5678)"


def test_oidc_needs_all_three_variables(tmp_path: Path) -> None:
    env = {
        "HOME": str(tmp_path),
        "ALIBABA_CLOUD_ROLE_ARN": "acs:ram::1:role/x",
        "ALIBABA_CLOUD_OIDC_PROVIDER_ARN": "acs:ram::1:oidc-provider/y",
    }
    assert find_credentials(env) is None
    assert find_credentials({**env, "ALIBABA_CLOUD_OIDC_TOKEN_FILE": "/var/run/token"}) == (
        "oidc role (ALIBABA_CLOUD_ROLE_ARN)"
    )


def test_cli_profile_selection_and_modes(tmp_path: Path) -> None:
    write_cli_config(
        tmp_path,
        [
            {
                "name": "default",
                "mode": "AK",
                "access_key_id": "",
                "access_key_secret": "",
            },  # `aliyun configure` leftover
            {"name": "work", "mode": "AK", "access_key_id": CLI_KEY[0], "access_key_secret": CLI_KEY[1]},
            {
                "name": "role",
                "mode": "RamRoleArn",
                "access_key_id": CLI_KEY[0],
                "access_key_secret": CLI_KEY[1],
                "ram_role_arn": "acs:ram::1:role/sms",
            },
            {"name": "sso", "mode": "CloudSSO"},
            {"name": "odd", "mode": "Telepathy"},
        ],
    )
    home = {"HOME": str(tmp_path)}
    assert find_credentials(home) is None  # the current profile is empty
    assert find_credentials({**home, "ALIBABA_CLOUD_PROFILE": "work"}) == "cli profile 'work' (AK LTAI****5678)"
    assert find_credentials({**home, "ALIBABA_CLOUD_PROFILE": "role"}) == (
        "cli profile 'role' (RamRoleArn LTAI****5678)"
    )
    assert find_credentials({**home, "ALIBABA_CLOUD_PROFILE": "sso"}) == "cli profile 'sso' (CloudSSO)"
    assert find_credentials({**home, "ALIBABA_CLOUD_PROFILE": "odd"}) is None
    assert (
        find_credentials({**home, "ALIBABA_CLOUD_PROFILE": "work", "ALIBABA_CLOUD_CLI_PROFILE_DISABLED": "true"})
        is None
    )


def test_broken_cli_config_is_ignored(tmp_path: Path) -> None:
    (tmp_path / ".aliyun").mkdir()
    (tmp_path / ".aliyun" / "config.json").write_text("{not json")
    assert find_credentials({"HOME": str(tmp_path)}) is None


def test_ini_file(tmp_path: Path) -> None:
    write_ini(
        tmp_path,
        f"[default]\ntype = access_key  # inline comment\naccess_key_id = {INI_KEY[0]}\n"
        f"access_key_secret = {INI_KEY[1]}\n\n[ecs]\ntype = ecs_ram_role\nrole_name = sms\n",
    )
    home = {"HOME": str(tmp_path)}
    assert find_credentials(home) == "credentials file 'default' (access_key LTAI****9999)"
    assert find_credentials({**home, "ALIBABA_CLOUD_PROFILE": "ecs"}) == "credentials file 'ecs' (ecs_ram_role)"
    assert find_credentials({**home, "ALIBABA_CLOUD_PROFILE": "missing"}) is None
    other = tmp_path / "elsewhere.ini"
    other.write_text(f"[default]\ntype=access_key\naccess_key_id={CLI_KEY[0]}\naccess_key_secret=x\n")
    assert find_credentials({**home, "ALIBABA_CLOUD_CREDENTIALS_FILE": str(other)}) == (
        "credentials file 'default' (access_key LTAI****5678)"
    )


def test_ecs_role_only_when_opted_in(tmp_path: Path) -> None:
    home = {"HOME": str(tmp_path)}
    assert not ecs_role_opted_in(home)
    assert ecs_role_opted_in({**home, "ALIBABA_CLOUD_ECS_METADATA": "sms-role"})
    assert ecs_role_opted_in({**home, "ALIBABA_CLOUD_ECS_METADATA_DISABLED": "false"})
    assert not ecs_role_opted_in(
        {**home, "ALIBABA_CLOUD_ECS_METADATA": "r", "ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true"}
    )
    assert find_credentials({**home, "ALIBABA_CLOUD_ECS_METADATA": "sms-role"}) == "ecs ram role (sms-role)"
    assert find_credentials({**home, "ALIBABA_CLOUD_CREDENTIALS_URI": "http://127.0.0.1:1/creds"}) == (
        "credentials uri (ALIBABA_CLOUD_CREDENTIALS_URI)"
    )


# ------------------------------------------------------------------------------------------------ the real chain

PROBE = r"""
import asyncio, json, socket, sys, threading

blocked = []
_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex

def _guard(addr):
    if isinstance(addr, tuple) and addr and addr[0] == "100.100.100.200":
        blocked.append(addr[0])
        raise OSError("test: the ECS metadata service must not be contacted")

def connect(self, addr):
    _guard(addr)
    return _connect(self, addr)

def connect_ex(self, addr):
    _guard(addr)
    return _connect_ex(self, addr)

socket.socket.connect, socket.socket.connect_ex = connect, connect_ex

import os
if os.environ.get("PROBE_PREIMPORT"):  # something imported Alibaba's SDK before sms-mcp could prepare the env
    import alibabacloud_tea_openapi.client  # noqa: F401
from sms_mcp.config import Settings
from sms_mcp.wire.base import GatewayError
from sms_mcp.wire.credentials import find_credentials
from sms_mcp.wire.factory import make_transport, resolve_backend

settings = Settings.from_env()
out = {"found": find_credentials(), "resolved": list(resolve_backend(settings))}

async def call():
    transport = make_transport(settings, "openapi")
    await transport.start()
    try:
        body = await transport.call("GetSmsSign", {"SignName": "速通科技"})
        return {"code": body["Code"]}
    except GatewayError as err:
        return {"error": err.code, "status": err.status, "message": err.message}
    finally:
        await transport.aclose()

out["call"] = asyncio.run(call())
out["threads"] = sorted(t.name for t in threading.enumerate())
out["ecs_disabled_env"] = os.environ.get("ALIBABA_CLOUD_ECS_METADATA_DISABLED")
out["blocked"] = blocked
print(json.dumps(out, ensure_ascii=False))
"""


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorServer]:
    keys = dict([ENV_KEY, CLI_KEY, INI_KEY])
    with EmulatorServer(keys=keys, receipt_delay=0.0) as server:
        yield server


def run_probe(emu: EmulatorServer, home: Path, extra_env: dict[str, str]) -> tuple[dict[str, Any], str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ALIBABA_CLOUD_", "ALICLOUD_", "SMS_MCP_"))
        and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env.update({"HOME": str(home), "SMS_MCP_ENDPOINT": emu.url, "SMS_MCP_BACKEND": "auto", **extra_env})
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def assert_no_ecs_traps(out: dict[str, Any], stderr: str) -> None:
    assert out["blocked"] == []
    assert not [t for t in out["threads"] if "APScheduler" in t or "scheduler" in t.lower()]
    assert out["ecs_disabled_env"] == "true"
    assert "Refresh credentials failed" not in stderr
    for _, secret in (ENV_KEY, CLI_KEY, INI_KEY):
        assert secret not in stderr


def test_chain_env_variables(emu: EmulatorServer, tmp_path: Path) -> None:
    out, stderr = run_probe(
        emu, tmp_path, {"ALIBABA_CLOUD_ACCESS_KEY_ID": ENV_KEY[0], "ALIBABA_CLOUD_ACCESS_KEY_SECRET": ENV_KEY[1]}
    )
    assert out["found"] == "env (LTAI****1234)"
    assert out["resolved"] == ["openapi", "auto: credentials found (env (LTAI****1234))"]
    assert out["call"] == {"code": "OK"}
    assert_no_ecs_traps(out, stderr)


def test_chain_cli_profile_in_home(emu: EmulatorServer, tmp_path: Path) -> None:
    write_cli_config(
        tmp_path,
        [
            {
                "name": "sms",
                "mode": "AK",
                "access_key_id": CLI_KEY[0],
                "access_key_secret": CLI_KEY[1],
                "region_id": "cn-hangzhou",
            }
        ],
        current="sms",
    )
    out, stderr = run_probe(emu, tmp_path, {})
    assert out["found"] == "cli profile 'sms' (AK LTAI****5678)"
    assert out["resolved"][0] == "openapi"
    assert out["call"] == {"code": "OK"}
    assert_no_ecs_traps(out, stderr)


def test_chain_ini_file_in_home(emu: EmulatorServer, tmp_path: Path) -> None:
    write_ini(
        tmp_path, f"[default]\ntype = access_key\naccess_key_id = {INI_KEY[0]}\naccess_key_secret = {INI_KEY[1]}\n"
    )
    out, stderr = run_probe(emu, tmp_path, {})
    assert out["found"] == "credentials file 'default' (access_key LTAI****9999)"
    assert out["call"] == {"code": "OK"}
    assert_no_ecs_traps(out, stderr)


def test_chain_nothing_configured(emu: EmulatorServer, tmp_path: Path) -> None:
    out, stderr = run_probe(emu, tmp_path, {})
    assert out["found"] is None
    assert out["resolved"][0] == "sandbox"
    # Forcing openapi anyway gives a clear credential error, raised before anything was sent.
    assert out["call"]["error"] == "InvalidCredentials"
    assert out["call"]["status"] == 0
    assert "ALIBABA_CLOUD_ACCESS_KEY_ID" in out["call"]["message"]
    assert "not the SMS sign name" in out["call"]["message"]
    assert_no_ecs_traps(out, stderr)


def test_chain_explicit_openapi_backend_resolves_without_credentials(emu: EmulatorServer, tmp_path: Path) -> None:
    out, _ = run_probe(emu, tmp_path, {"SMS_MCP_BACKEND": "openapi"})
    assert out["resolved"] == ["openapi", "SMS_MCP_BACKEND=openapi"]
    assert out["call"]["error"] == "InvalidCredentials"


def test_probe_would_catch_the_metadata_service(emu: EmulatorServer, tmp_path: Path) -> None:
    """The guard above is real: opting into the ECS role makes the chain try 100.100.100.200, and it is seen."""
    out, _ = run_probe(emu, tmp_path, {"ALIBABA_CLOUD_ECS_METADATA_DISABLED": "false"})
    assert out["found"] == "ecs ram role"
    assert "100.100.100.200" in out["blocked"]
    assert out["call"]["error"] == "InvalidCredentials"


def test_chain_safe_even_if_the_sdk_was_imported_first(emu: EmulatorServer, tmp_path: Path) -> None:
    """The SDK snapshots the environment at import; sms-mcp still keeps the ECS probe off if it came second."""
    out, stderr = run_probe(
        emu,
        tmp_path,
        {
            "PROBE_PREIMPORT": "1",
            "ALIBABA_CLOUD_ACCESS_KEY_ID": ENV_KEY[0],
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": ENV_KEY[1],
        },
    )
    assert out["call"] == {"code": "OK"}
    assert_no_ecs_traps(out, stderr)
