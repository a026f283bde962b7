"""Replicas on one PostgreSQL ledger: real ``sms-mcp serve --http`` processes (tests/http_support.py), each with its
own data directory, sharing ``SMS_MCP_LEDGER_URL``, with the HTTP emulator as Alibaba (openapi backend: Alibaba's
SDK, signing, HTTP) and OAuth access tokens the tests mint against a JWKS they serve on loopback.

The emulator counts every API call by OutId, so "exactly one API call per chunk" is measured where it matters.
PostgreSQL is a real server of the tests' own (tests/pg_server.py), stopped, killed and restarted mid-run here.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest
from http_support import AuthorizationServer, Gateway, gateway_env, http_get, mcp_client, modern_call
from mcp import Client
from pg_server import PostgresServer, postgres_for_tests

from sms_mcp.emulator.core import EmulatorCore
from sms_mcp.emulator.http import EmulatorServer

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes")

PARAMS = {"name": "王女士", "order_no": "D2001", "date": "周五"}
TOOL_TIMEOUT = 120.0  # generous: six sessions and three processes share two cores with other tests


class CountingCore(EmulatorCore):
    """The emulator's account, counting every API call that reached it (by action and OutId)."""

    def __init__(self) -> None:
        super().__init__(None, receipt_delay=0.0)
        self.calls: Counter[tuple[str, str]] = Counter()
        self._count_lock = threading.Lock()

    def handle(self, action: str, params: Mapping[str, str]) -> dict[str, Any]:
        if action in ("SendSms", "SendBatchSms"):
            with self._count_lock:
                self.calls[(action, params.get("OutId", ""))] += 1
        return super().handle(action, params)


@pytest.fixture
def emu() -> Iterator[EmulatorServer]:
    with EmulatorServer(CountingCore()) as server:
        yield server


class Replicas:
    """``count`` gateway replicas on one ledger URL, started at once (their schema migrations race), stopped at
    the end. ``token(i)`` is alice's access token for replica i (each replica is its own resource URL)."""

    def __init__(self, tmp: Path, emu: EmulatorServer, idp: AuthorizationServer, ledger_url: str, count: int,
                 **extra: str) -> None:
        self.idp = idp
        self.gateways: list[Gateway] = []
        for i in range(count):
            home = tmp / f"r{i}"
            home.mkdir(exist_ok=True)
            env = gateway_env(home, emu, idp, SMS_MCP_LEDGER_URL=ledger_url, SMS_MCP_REPLICA_ID=f"r{i}",
                              SMS_MCP_RECONCILE_GRACE_SECONDS="13", **extra)
            self.gateways.append(Gateway(home, env, name=f"r{i}"))

    def __enter__(self) -> Replicas:
        try:
            for gateway in self.gateways:
                gateway.wait_ready()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for gateway in self.gateways:
            gateway.stop()

    def __getitem__(self, i: int) -> Gateway:
        return self.gateways[i]

    def token(self, i: int, subject: str = "alice") -> str:
        return self.idp.token(self.gateways[i].url, subject=subject)

    def client(self, i: int, mode: str = "auto", subject: str = "alice") -> Any:
        return mcp_client(self.gateways[i].url, self.token(i, subject), mode=mode)

    def audit(self, plan_id: str) -> list[str]:
        events = []
        for gateway in self.gateways:
            path = gateway.stderr_path.parent / "data" / "audit.jsonl"
            if path.exists():
                events += [e["event"] for e in map(json.loads, path.read_text().splitlines())
                           if e["plan_id"] == plan_id]
        return events


async def call(client: Client, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, args, read_timeout_seconds=TOOL_TIMEOUT)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def refused(client: Client, tool: str, args: dict[str, Any]) -> str:
    result = await client.call_tool(tool, args, read_timeout_seconds=TOOL_TIMEOUT)
    assert result.is_error, result.structured_content
    return "".join(getattr(c, "text", "") for c in result.content)


def notify(number: str) -> dict[str, Any]:
    return {"phone_numbers": [number], "sign_name": "速通科技", "template_code": "SMS_900000002",
            "template_param": PARAMS}


def batch(first: int, count: int) -> dict[str, Any]:
    recipients = [{"phone_number": f"1370{first + i:07d}", "sign_name": "速通科技", "template_param": PARAMS}
                  for i in range(count)]
    return {"recipients": recipients, "template_code": "SMS_900000002"}


def database_location(url: str) -> str:
    from sms_mcp.ledger.postgres import redact

    return redact(url)


def database(url: str) -> str:
    return url.rsplit("/", 1)[1]


def chunk_rows(server: PostgresServer, url: str, plan_id: str) -> list[tuple[str, str, str]]:
    """[(state, out_id, owner)] of a plan's chunks, read with psql (an independent client)."""
    out = server.psql(database(url), "SELECT json_agg(json_build_array(state, body::json->>'out_id', "
                                     f"COALESCE(owner, '')) ORDER BY chunk_no) FROM chunks WHERE plan_id = '{plan_id}'")
    return [tuple(row) for row in json.loads(out or "[]")]  # type: ignore[misc]


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------- exactly once
async def test_three_replicas_sixty_concurrent_confirmations_one_api_call_per_chunk(
    pg_server: PostgresServer, emu: EmulatorServer, idp: AuthorizationServer, tmp_path: Path
) -> None:
    """One plan of three chunks (250 recipients, 100 per SendBatchSms), prepared on one replica; 60 confirmations
    at once, spread over three replicas and both protocol eras (two sessions per replica), while the provider
    takes 0.3 s per call. Exactly one API call per chunk reaches the emulator; every confirmation reports it."""
    url = pg_server.create_database()
    args = batch(1, 250)
    with Replicas(tmp_path, emu, idp, url, 3) as replicas:
        async with AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(replicas.client(i // 2, era))
                       for i, era in enumerate(["auto", "legacy"] * 3)]
            plan = await call(clients[0], "send_batch_sms", args)
            assert plan["plan"]["chunk_count"] == 3
            emu.faults.add("delay_before", action="SendBatchSms", seconds=0.3)
            confirm = {**args, "confirm_token": plan["confirm_token"]}
            results: list[dict[str, Any]] = []

            async def one(client: Client) -> None:
                results.append(await call(client, "send_batch_sms", confirm))

            async with anyio.create_task_group() as tg:
                for n in range(60):
                    tg.start_soon(one, clients[n % len(clients)])
            report = await call(clients[5], "query_details", {"plan_id": plan["plan_id"]})
        audit = replicas.audit(plan["plan_id"])

    calls = emu.core.calls
    out_ids = [row[1] for row in chunk_rows(pg_server, url, plan["plan_id"])]
    assert len(out_ids) == 3 and all(calls[("SendBatchSms", o)] == 1 for o in out_ids), calls
    assert sum(calls.values()) == 3
    assert len(emu.core.messages()) == 250
    assert [r["status"] for r in results] == ["accepted"] * 60
    assert sorted(r["replayed"] for r in results) == [False] + [True] * 59
    assert [row[0] for row in chunk_rows(pg_server, url, plan["plan_id"])] == ["accepted"] * 3
    assert report["plan_status"] == "accepted"
    assert audit.count("confirmed") == 1  # the replicas' audit logs together record one confirmation


async def test_daily_limit_holds_across_replicas(pg_server: PostgresServer, emu: EmulatorServer,
                                                 idp: AuthorizationServer, tmp_path: Path) -> None:
    """SMS_MCP_DAILY_LIMIT=3 on three replicas; six different plans confirmed at the same moment, two per replica:
    exactly three messages leave, the other three are refused by the limit (decided in the chunk claim)."""
    url = pg_server.create_database()
    numbers = [f"1370000{7000 + i}" for i in range(6)]
    outcomes: list[str] = []
    with Replicas(tmp_path, emu, idp, url, 3, SMS_MCP_DAILY_LIMIT="3") as replicas:
        async with AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(replicas.client(i)) for i in range(3)]
            plans = [await call(clients[i % 3], "send_sms", notify(n)) for i, n in enumerate(numbers)]
            emu.faults.add("delay_before", action="SendSms", seconds=0.2)

            async def one(i: int) -> None:
                result = await clients[i % 3].call_tool(
                    "send_sms", {**notify(numbers[i]), "confirm_token": plans[i]["confirm_token"]},
                    read_timeout_seconds=TOOL_TIMEOUT)
                text = "".join(getattr(c, "text", "") for c in result.content)
                outcomes.append("DAILY_LIMIT" if "DAILY_LIMIT" in text else (result.structured_content or {}).get(
                    "status", text[:200]))

            async with anyio.create_task_group() as tg:
                for i in range(6):
                    tg.start_soon(one, i)
    assert sorted(outcomes) == ["DAILY_LIMIT"] * 3 + ["accepted"] * 3, outcomes
    assert len(emu.core.messages()) == 3


async def test_principal_budget_and_flow_control_hold_across_replicas(
    pg_server: PostgresServer, emu: EmulatorServer, idp: AuthorizationServer, tmp_path: Path
) -> None:
    """Alice's own daily budget (2, from the policy file) and Alibaba's one-verification-code-per-minute rule for
    one number, each tested by confirmations made at the same moment on three replicas."""
    url = pg_server.create_database()
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"principals": {"alice": {"daily_limit": 2}}}))
    outcomes: dict[str, list[str]] = {"alice": [], "bob": []}
    with Replicas(tmp_path, emu, idp, url, 3, SMS_MCP_POLICY_FILE=str(policy)) as replicas:
        async with AsyncExitStack() as stack:
            alice = [await stack.enter_async_context(replicas.client(i, subject="alice")) for i in range(3)]
            bob = [await stack.enter_async_context(replicas.client(i, subject="bob")) for i in range(3)]
            budget = [notify(f"1370000{7100 + i}") for i in range(5)]  # five numbers, alice may send two
            codes = [{"phone_numbers": ["13700007200"], "sign_name": "速通科技", "template_code": "SMS_900000001",
                      "template_param": {"code": f"{4820 + i}"}} for i in range(3)]  # one number, three codes
            work = [(alice[i % 3], "alice", args, await call(alice[i % 3], "send_sms", args))
                    for i, args in enumerate(budget)]
            work += [(bob[i], "bob", args, await call(bob[i], "send_sms", args)) for i, args in enumerate(codes)]
            emu.faults.add("delay_before", action="SendSms", seconds=0.2)

            async def one(client: Client, who: str, args: dict[str, Any], plan: dict[str, Any]) -> None:
                result = await client.call_tool("send_sms", {**args, "confirm_token": plan["confirm_token"]},
                                                read_timeout_seconds=TOOL_TIMEOUT)
                text = "".join(getattr(c, "text", "") for c in result.content)
                code = next((c for c in ("PRINCIPAL_DAILY_LIMIT", "BUSINESS_LIMIT_CONTROL") if c in text), None)
                outcomes[who].append(code or (result.structured_content or {}).get("status", text[:200]))

            async with anyio.create_task_group() as tg:
                for item in work:
                    tg.start_soon(one, *item)
    assert sorted(outcomes["alice"]) == ["PRINCIPAL_DAILY_LIMIT"] * 3 + ["accepted"] * 2, outcomes
    assert sorted(outcomes["bob"]) == ["BUSINESS_LIMIT_CONTROL"] * 2 + ["accepted"], outcomes
    assert len(emu.core.messages()) == 3


# ---------------------------------------------------------------------------------------------- a replica killed
async def test_sigkill_a_replica_mid_send_never_resent_and_reconciled_on_another(
    pg_server: PostgresServer, emu: EmulatorServer, idp: AuthorizationServer, tmp_path: Path
) -> None:
    url = pg_server.create_database()
    args = notify("13700008001")
    with Replicas(tmp_path, emu, idp, url, 3) as replicas:
        doomed = replicas[0]
        async with replicas.client(0) as a:
            plan = await call(a, "send_sms", args)
        emu.faults.add("delay_after", action="SendSms", count=1, seconds=5.0)  # recorded upstream, answered late
        confirm = {**args, "confirm_token": plan["confirm_token"]}
        answered: list[int] = []
        confirming = threading.Thread(
            target=lambda: answered.append(modern_call(doomed.url, "send_sms", confirm, replicas.token(0))[0]))
        confirming.start()
        wait_for(lambda: chunk_rows(pg_server, url, plan["plan_id"])[0][0] == "sending"
                 and len(emu.core.messages()) == 1)
        assert f":{doomed.proc.pid}:" in chunk_rows(pg_server, url, plan["plan_id"])[0][2]  # the lease holder
        doomed.stop(signal.SIGKILL)
        confirming.join(60)
        assert answered == [0]  # the connection died with the replica: no answer at all
        assert chunk_rows(pg_server, url, plan["plan_id"])[0][0] == "sending"  # the dead replica recorded no more

        async with replicas.client(1, "auto") as b, replicas.client(2, "legacy") as c:
            # An identical send is blocked while the outcome is open, on any replica.
            assert "[sms_mcp.UNRECONCILED]" in await refused(c, "send_sms", args)
            # Replays on two replicas at once wait out the dead owner's lease: the chunk is unknown, never resent.
            replays: list[dict[str, Any]] = []

            async def replay(client: Client) -> None:
                replays.append(await call(client, "send_sms", confirm))

            async with anyio.create_task_group() as tg:
                tg.start_soon(replay, b)
                tg.start_soon(replay, c)
            assert [(r["status"], r["replayed"]) for r in replays] == [("unknown", True)] * 2
            report = await call(c, "query_details", {"plan_id": plan["plan_id"]})
            assert [(r["before"], r["after"]) for r in report["reconciled"]] == [("unknown", "accepted")]
            assert report["plan_status"] == "accepted"
    assert chunk_rows(pg_server, url, plan["plan_id"])[0][0] == "accepted"
    assert sum(emu.core.calls.values()) == 1 and len(emu.core.messages()) == 1


# ---------------------------------------------------------------------------------------------- PostgreSQL down
@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    """A server of its own, so that stopping it disturbs no other test."""
    with postgres_for_tests() as server:
        yield server


def ready(gateway: Gateway) -> tuple[int, str]:
    status, _, body = http_get(f"{gateway.base}/readyz")
    return status, body.decode(errors="replace")


async def test_postgres_stopped_and_restarted_while_replicas_serve(
    own_server: PostgresServer, emu: EmulatorServer, idp: AuthorizationServer, tmp_path: Path
) -> None:
    """While PostgreSQL is down the replicas are not ready and a confirmation fails with a clear code and sends
    nothing; the same replica processes work again once it is back, without a restart, and the plan is then sent
    exactly once."""
    url = own_server.create_database()
    args = notify("13700009001")
    with Replicas(tmp_path, emu, idp, url, 2) as replicas:
        async with replicas.client(0, "auto") as a, replicas.client(1, "legacy") as b:
            plan = await call(a, "send_sms", args)
            confirm = {**args, "confirm_token": plan["confirm_token"]}
            own_server.stop("fast")
            for i, client in enumerate((a, b)):
                status, body = ready(replicas[i])
                assert status == 503 and "ledger unreachable" in body, body
                text = await refused(client, "send_sms", confirm)
                assert "[sms_mcp.LEDGER_UNAVAILABLE]" in text and "sent nothing" in text, text
                assert own_server.password not in text
                assert "[sms_mcp.LEDGER_UNAVAILABLE]" in await refused(client, "send_sms", notify("13700009002"))
            assert emu.core.calls == Counter()
            own_server.start()
            await anyio.to_thread.run_sync(lambda: wait_for(lambda: all(ready(g)[0] == 200 for g in replicas.gateways)))
            sent = await call(b, "send_sms", confirm)
            assert sent["status"] == "accepted" and sent["replayed"] is False
            again = await call(a, "send_sms", confirm)
            assert again["status"] == "accepted" and again["replayed"] is True
        logs = [gateway.stderr() for gateway in replicas.gateways]
    assert sum(emu.core.calls.values()) == 1 and len(emu.core.messages()) == 1
    # The replicas logged the outage, naming the database but never the URL's password.
    assert all(f"ledger {database_location(url)}: PostgreSQL cannot be reached" in log for log in logs)
    assert not any(own_server.password in log for log in logs)


async def test_postgres_killed_during_a_send_is_reconciled_never_resent(
    own_server: PostgresServer, emu: EmulatorServer, idp: AuthorizationServer, tmp_path: Path
) -> None:
    """The intent is durable, the API call is on the wire, and PostgreSQL dies before the outcome is written: the
    confirmation says the SMS may have left; once the database is back, another replica reconciles the plan
    (lease expired -> unknown -> Alibaba's record) and nothing is ever sent twice."""
    url = own_server.create_database()
    args = notify("13700009101")
    with Replicas(tmp_path, emu, idp, url, 2) as replicas:
        async with replicas.client(0, "auto") as a, replicas.client(1, "legacy") as b:
            plan = await call(a, "send_sms", args)
            emu.faults.add("delay_after", action="SendSms", count=1, seconds=2.0)
            outcome: list[str] = []

            async def confirm() -> None:
                result = await a.call_tool("send_sms", {**args, "confirm_token": plan["confirm_token"]},
                                           read_timeout_seconds=TOOL_TIMEOUT)
                outcome.append("".join(getattr(c, "text", "") for c in result.content)
                               if result.is_error else (result.structured_content or {}).get("status", ""))

            async with anyio.create_task_group() as tg:
                tg.start_soon(confirm)
                await anyio.to_thread.run_sync(lambda: wait_for(lambda: len(emu.core.messages()) == 1))
                own_server.kill()  # the call is answered after this: its outcome cannot be written
            # The confirmation has answered while the database is still down.
            assert "[sms_mcp.LEDGER_FAILED_MID_SEND]" in outcome[0] and "may have been sent" in outcome[0], outcome
            assert "Do NOT send again" in outcome[0] and own_server.password not in outcome[0]
            own_server.start()
            deadline = time.monotonic() + 60
            while True:  # reconciliation settles it once the failed owner's lease has run out
                report = await call(b, "query_details", {"plan_id": plan["plan_id"]})
                if report["plan_status"] == "accepted" or time.monotonic() > deadline:
                    break
                await anyio.sleep(1.0)
            assert report["plan_status"] == "accepted", report
    assert sum(emu.core.calls.values()) == 1 and len(emu.core.messages()) == 1
