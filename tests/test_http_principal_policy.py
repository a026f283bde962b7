"""Per-principal policy (SMS_MCP_POLICY_FILE) on top of the server-wide one, through a real gateway process with
two principals' tokens; and the policy file's own validation."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from http_support import SMS_ARGS, AuthorizationServer, Gateway, gateway_env, mcp_client

from sms_mcp.config import ConfigError, Settings
from sms_mcp.core.ports import Principal
from sms_mcp.core.principal_policy import PrincipalPolicy
from sms_mcp.emulator.http import EmulatorServer

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes")

POLICY = {
    "default": {"allowed_numbers": [], "allow_promotional": False},
    "principals": {"alice": {"allowed_numbers": ["+8613800138000", "+8613500135000"], "allow_promotional": True},
                   "dave": {"allowed_numbers": ["+8613700137000"], "allow_promotional": False}},
    "clients": {"ops-bot": {"allowed_numbers": ["+8613700137000"]}},
}
PROMO = {"phone_numbers": ["13800138000"], "sign_name": "速通科技", "template_code": "SMS_900000003",
         "template_param": {"name": "王女士"}}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, idp: AuthorizationServer,
            emulator_server: EmulatorServer) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("gw-policy")
    policy = tmp / "policy.json"
    policy.write_text(json.dumps(POLICY))
    # Server-wide: promotional allowed, three numbers; the file narrows per caller. Full numbers only: the pattern
    # syntax is the server-wide list's (core/policy.py), whichever it is.
    env = gateway_env(tmp, emulator_server, idp, SMS_MCP_POLICY_FILE=str(policy), SMS_MCP_ALLOW_PROMOTIONAL="true",
                      SMS_MCP_ALLOWED_NUMBERS="+8613800138000,+8613800138001,+8613700137000")
    gw = Gateway(tmp, env)
    try:
        yield gw.wait_ready()
    finally:
        gw.stop()


async def _text(gateway: Gateway, token: str, args: dict[str, object]) -> tuple[bool, str]:
    async with mcp_client(gateway.url, token) as client:
        result = await client.call_tool("send_sms", args)
        return bool(result.is_error), "".join(getattr(c, "text", "") for c in result.content)


async def test_allow_list_is_per_principal(gateway: Gateway, idp: AuthorizationServer,
                                           emulator_server: EmulatorServer) -> None:
    before = len(emulator_server.core.messages())
    alice = idp.token(gateway.url, subject="alice")
    refused, text = await _text(gateway, alice, SMS_ARGS)  # +8613800138000: on alice's list
    assert not refused, text
    refused, text = await _text(gateway, alice, {**SMS_ARGS, "phone_numbers": ["13800138001"]})
    assert refused and "[sms_mcp.PRINCIPAL_NUMBER_NOT_ALLOWED]" in text and "138****8001" in text
    # Server-wide allows +8613700137000, and so does the ops-bot client's entry; bob via another client has the
    # default (an empty list: nobody).
    bot = idp.token(gateway.url, subject="svc-7", client_id="ops-bot")
    refused, text = await _text(gateway, bot, {**SMS_ARGS, "phone_numbers": ["13700137000"]})
    assert not refused, text
    bob = idp.token(gateway.url, subject="bob", client_id="laptop")
    refused, text = await _text(gateway, bob, SMS_ARGS)
    assert refused and "[sms_mcp.PRINCIPAL_NUMBER_NOT_ALLOWED]" in text
    assert len(emulator_server.core.messages()) == before  # plans only: nothing sent


async def test_per_principal_list_cannot_widen_the_server_wide_one(gateway: Gateway, idp: AuthorizationServer,
                                                                   ) -> None:
    alice = idp.token(gateway.url, subject="alice")
    # +8613500135000 is on alice's list but not on the server-wide one: the server-wide refusal stands.
    refused, text = await _text(gateway, alice, {**SMS_ARGS, "phone_numbers": ["13500135000"]})
    assert refused and "[sms_mcp.NUMBER_NOT_ALLOWED]" in text


async def test_promotional_switch_is_per_principal(gateway: Gateway, idp: AuthorizationServer) -> None:
    alice = idp.token(gateway.url, subject="alice")
    refused, text = await _text(gateway, alice, PROMO)
    assert not refused, text
    bot = idp.token(gateway.url, subject="svc-7", client_id="ops-bot")  # no allow_promotional: server-wide rules
    refused, text = await _text(gateway, bot, {**PROMO, "phone_numbers": ["13700137000"]})
    assert not refused, text
    dave = idp.token(gateway.url, subject="dave", client_id="laptop")
    refused, text = await _text(gateway, dave, {**PROMO, "phone_numbers": ["13700137000"]})
    assert refused and "[sms_mcp.PRINCIPAL_PROMOTIONAL_DISABLED]" in text
    refused, text = await _text(gateway, dave, {**SMS_ARGS, "phone_numbers": ["13700137000"]})
    assert not refused, text  # a notification template to the same number is fine


@pytest.mark.parametrize(("content", "needle"), [
    ("{", "not valid JSON"),
    ("[]", "top level"),
    ('{"defaults": {}}', "unknown key"),
    ('{"principals": {"a": {"daily_limit": -1}}}', "daily_limit"),
    ('{"principals": {"a": {"daily_limit": true}}}', "daily_limit"),
    ('{"principals": {"a": {"allowed_numbers": "+86138*"}}}', "allowed_numbers"),
    ('{"principals": {"a": {"allow_promotional": "yes"}}}', "allow_promotional"),
    ('{"principals": {"a": {"read_only": false}}}', "unknown field"),
    ('{"clients": []}', "clients"),
])
def test_bad_policy_files_are_refused(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "policy.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=needle):
        PrincipalPolicy.load(Settings(), path)


def test_missing_policy_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        PrincipalPolicy.load(Settings(), tmp_path / "absent.json")


def test_rules_resolution_order(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({**POLICY, "principals": {"alice": {"daily_limit": 5}}}))
    policy = PrincipalPolicy.load(Settings(), path)
    assert policy.daily_limit(Principal("alice", "ops-bot")) == 5  # subject before client
    assert policy.rules_for(Principal("svc", "ops-bot")).allowed_numbers == ("+8613700137000",)  # type: ignore[union-attr]
    assert policy.rules_for(Principal("zed", "x")) == policy.default
    assert policy.rules_for(None) is None
