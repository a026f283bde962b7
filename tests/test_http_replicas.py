"""Two real ``sms-mcp serve --http`` replicas behind a balancer the test runs, sharing one ledger directory.

Per-request era (2026-07-28): plain round-robin, no affinity, and the human's confirmation (an elicitation
round trip) crossing replicas, because every replica has the same request-state keys and server name.
Session era (2025-11-25): affinity on the replica-tagged ``Mcp-Session-Id`` (the README's nginx ``map``);
plain round-robin is shown to break it, which is why the affinity is documented.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from http_support import SMS_ARGS, AuthorizationServer, Balancer, Gateway, gateway_env, mcp_client, running
from mcp.types import ElicitResult

from sms_mcp.emulator.http import EmulatorServer

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes")


class Human:
    """Answers every confirmation question with yes, and remembers the questions."""

    def __init__(self) -> None:
        self.questions: list[str] = []

    async def __call__(self, _context: Any, params: Any) -> ElicitResult:
        self.questions.append(params.message)
        return ElicitResult(action="accept", content={"send": True})


def _replicas(tmp: Path, emu: EmulatorServer, idp: AuthorizationServer, balancer_port: int,
              keys: tuple[str, str] = ("s" * 40, "s" * 40)) -> tuple[Gateway, Gateway]:
    # Both replicas serve one public URL (the balancer's): tokens are minted for it, once, for either replica.
    public = f"http://127.0.0.1:{balancer_port}/mcp"
    def replica(name: str, key: str) -> Gateway:
        return Gateway(tmp, gateway_env(tmp, emu, idp, SMS_MCP_CONFIRM_MODE="elicit", SMS_MCP_PUBLIC_URL=public,
                                        SMS_MCP_REQUEST_STATE_KEYS=key, SMS_MCP_REPLICA_ID=name), name=name)

    # One after the other: two processes creating the same SQLite ledger at once can find it locked (the
    # shared-ledger deployment is PostgreSQL's; SQLite here only gives both replicas one ledger).
    first = replica("r1", keys[0])
    try:
        first.wait_ready()
    except BaseException:
        first.stop()
        raise
    return first, replica("r2", keys[1])


async def _confirmed_send(url: str, token: str, mode: str, number: str) -> tuple[dict[str, Any], Human]:
    human = Human()
    args = {**SMS_ARGS, "phone_numbers": [number]}
    async with mcp_client(url, token, mode=mode, elicitation_callback=human) as client:
        plan = await client.call_tool("send_sms", args)
        assert not plan.is_error, plan.content
        sent = await client.call_tool("send_sms", {**args, "confirm_token": plan.structured_content["confirm_token"]})
        assert not sent.is_error, sent.content
        return sent.structured_content or {}, human


async def test_per_request_era_needs_no_affinity_elicitation_included(
        tmp_path: Path, emulator_server: EmulatorServer, idp: AuthorizationServer) -> None:
    balancer = Balancer({}, "round_robin")
    r1, r2 = _replicas(tmp_path, emulator_server, idp, balancer.port)
    balancer.backends.update(r1=r1.base, r2=r2.base)
    token = idp.token(balancer.url)
    before = len(emulator_server.core.messages())
    with running(r1, r2), balancer:
        result, human = await _confirmed_send(balancer.url, token, "auto", "13800138011")
    assert result["status"] in ("accepted", "sent") and not result.get("replayed")
    assert len(human.questions) == 1 and "138****8011" in human.questions[0]
    assert len(emulator_server.core.messages()) == before + 1
    calls = [(replica, status) for method, replica, status in balancer.log if method == "tools/call"]
    # plan, confirm round 1 (input required), confirm round 2: alternating replicas, all served.
    assert len(calls) >= 3 and {r for r, _ in calls} == {"r1", "r2"}
    assert all(status == 200 for _, status in calls)


async def test_per_request_era_across_replicas_fails_without_shared_keys(
        tmp_path: Path, emulator_server: EmulatorServer, idp: AuthorizationServer) -> None:
    """The negative control: with per-replica keys the second round is refused (and nothing is sent)."""
    balancer = Balancer({}, "round_robin")
    r1, r2 = _replicas(tmp_path, emulator_server, idp, balancer.port, keys=("a" * 40, "b" * 40))
    balancer.backends.update(r1=r1.base, r2=r2.base)
    token = idp.token(balancer.url)
    before = len(emulator_server.core.messages())
    with running(r1, r2), balancer:
        with pytest.raises(Exception):  # noqa: B017 - the SDK surfaces the 400 as an MCPError or a group
            await _confirmed_send(balancer.url, token, "auto", "13800138012")
    assert len(emulator_server.core.messages()) == before
    # Round 2 of the confirmation, on the other replica: "Invalid or expired requestState".
    assert ("tools/call", "r2", 400) in balancer.log or ("tools/call", "r1", 400) in balancer.log, balancer.log


async def test_session_era_with_replica_tagged_affinity(
        tmp_path: Path, emulator_server: EmulatorServer, idp: AuthorizationServer) -> None:
    balancer = Balancer({}, "session_tag")
    r1, r2 = _replicas(tmp_path, emulator_server, idp, balancer.port)
    balancer.backends.update(r1=r1.base, r2=r2.base)
    token = idp.token(balancer.url)
    before = len(emulator_server.core.messages())
    with running(r1, r2), balancer:
        for number in ("13800138013", "13800138014"):  # two sessions: the second starts on the other replica
            result, human = await _confirmed_send(balancer.url, token, "legacy", number)
            assert result["status"] in ("accepted", "sent")
            assert len(human.questions) == 1
    assert len(emulator_server.core.messages()) == before + 2
    used = {replica for _, replica, _ in balancer.log}
    assert used == {"r1", "r2"}
    assert all(status in (200, 202) for _, _, status in balancer.log), balancer.log


async def test_session_era_breaks_under_round_robin(
        tmp_path: Path, emulator_server: EmulatorServer, idp: AuthorizationServer) -> None:
    """Why the affinity is documented: a session lives in one replica's memory."""
    balancer = Balancer({}, "round_robin")
    r1, r2 = _replicas(tmp_path, emulator_server, idp, balancer.port)
    balancer.backends.update(r1=r1.base, r2=r2.base)
    token = idp.token(balancer.url)
    with running(r1, r2), balancer:
        with pytest.raises(Exception):  # noqa: B017
            await _confirmed_send(balancer.url, token, "legacy", "13800138015")
    assert any(status == 404 for _, _, status in balancer.log)
