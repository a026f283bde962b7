"""Who called, through a real gateway with OAuth tokens: a plan is confirmed only by the principal that
prepared it (another principal's confirmation is refused exactly like a made-up token), the per-principal daily
budget from the policy file holds under concurrent confirmations (it is decided in the ledger claim), and the
audit trail names the principal."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator

import pytest
from http_support import SMS_ARGS, AuthorizationServer, Gateway, gateway_env, mcp_client

from sms_mcp.emulator.http import EmulatorServer

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, idp: AuthorizationServer,
            emulator_server: EmulatorServer) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("gw-principals")
    policy = tmp / "policy.json"
    policy.write_text(json.dumps({"principals": {"alice": {"daily_limit": 1}}}))
    gw = Gateway(tmp, gateway_env(tmp, emulator_server, idp, SMS_MCP_POLICY_FILE=str(policy)))
    gw.data_dir = tmp / "data"  # type: ignore[attr-defined]
    try:
        yield gw.wait_ready()
    finally:
        gw.stop()


def _args(number: str) -> dict[str, object]:
    return {**SMS_ARGS, "phone_numbers": [number]}


def _text(result: object) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)  # type: ignore[attr-defined]


async def test_only_the_preparer_can_confirm(gateway: Gateway, idp: AuthorizationServer,
                                             emulator_server: EmulatorServer) -> None:
    before = len(emulator_server.core.messages())
    alice = idp.token(gateway.url, subject="carol", client_id="app-1")
    mallory = idp.token(gateway.url, subject="mallory", client_id="app-1")
    args = _args("13800138101")
    async with mcp_client(gateway.url, alice) as client:
        plan = await client.call_tool("send_sms", args)
        token = plan.structured_content["confirm_token"]  # type: ignore[index]
    async with mcp_client(gateway.url, mallory) as client:
        stolen = await client.call_tool("send_sms", {**args, "confirm_token": token})
        made_up = await client.call_tool("send_sms", {**args, "confirm_token": "smt_" + "x" * 32})
        looked_up = await client.call_tool("query_details", {"plan_id": plan.structured_content["plan_id"]})  # type: ignore[index]
    assert stolen.is_error and made_up.is_error
    assert _text(stolen) == _text(made_up)  # learns nothing: not even that the token exists
    assert plan.structured_content["plan_id"] not in _text(stolen)  # type: ignore[index]
    assert looked_up.is_error or not looked_up.structured_content.get("records")  # type: ignore[union-attr]
    assert len(emulator_server.core.messages()) == before
    # The same subject through another client is another principal too.
    async with mcp_client(gateway.url, idp.token(gateway.url, subject="carol", client_id="app-2")) as client:
        assert (await client.call_tool("send_sms", {**args, "confirm_token": token})).is_error
    async with mcp_client(gateway.url, alice) as client:
        sent = await client.call_tool("send_sms", {**args, "confirm_token": token})
    assert not sent.is_error, _text(sent)
    assert len(emulator_server.core.messages()) == before + 1


async def test_per_principal_daily_budget_holds_under_concurrent_confirmations(
        gateway: Gateway, idp: AuthorizationServer, emulator_server: EmulatorServer) -> None:
    before = len(emulator_server.core.messages())
    alice = idp.token(gateway.url, subject="alice")
    numbers = [f"1380013{8200 + i:04d}" for i in range(4)]
    async with mcp_client(gateway.url, alice) as client:
        plans = [await client.call_tool("send_sms", _args(n)) for n in numbers]
        assert not any(p.is_error for p in plans), [_text(p) for p in plans if p.is_error]
        results = await asyncio.gather(*(
            client.call_tool("send_sms", {**_args(n), "confirm_token": p.structured_content["confirm_token"]})  # type: ignore[index]
            for n, p in zip(numbers, plans, strict=True)))
    accepted = [r for r in results if not r.is_error and r.structured_content["status"] == "accepted"]  # type: ignore[index]
    refused = [r for r in results if r not in accepted]
    assert len(accepted) == 1, [_text(r) or r.structured_content for r in results]
    assert all("PRINCIPAL_DAILY_LIMIT" in (_text(r) + json.dumps(r.structured_content or {})) for r in refused)
    assert len(emulator_server.core.messages()) == before + 1
    # Another principal's budget is its own (no limit in the file, none server-wide).
    async with mcp_client(gateway.url, idp.token(gateway.url, subject="bob")) as client:
        plan = await client.call_tool("send_sms", _args("13800138301"))
        sent = await client.call_tool("send_sms", {**_args("13800138301"),
                                                   "confirm_token": plan.structured_content["confirm_token"]})  # type: ignore[index]
    assert not sent.is_error, _text(sent)
    audit = [json.loads(line) for line in (gateway.data_dir / "audit.jsonl").read_text().splitlines()]  # type: ignore[attr-defined]
    assert any(e.get("principal") == {"subject": "bob", "client_id": "agent-app"} for e in audit)
