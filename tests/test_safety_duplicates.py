"""Exactly-once: however confirmations race, time out, crash or lose their connection, one plan reaches the
provider at most once, and an unknown outcome is reconciled, never resent.

Every test asserts what the emulator recorded (exactly one message, or none) and the ledger's final state.
The real network path is used where it matters: the openapi backend (Alibaba's SDK, signing, HTTP) against the
in-process HTTP emulator with fault injection; the multi-process tests run real `sms-mcp serve` processes.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from alibabacloud_credentials.client import Client as CredentialClient
from alibabacloud_credentials.models import Config as CredentialConfig
from conftest import PROXY_VARS
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError
from mcp_harness import call_ok as call
from mcp_harness import call_refused as error

from sms_mcp.config import Settings
from sms_mcp.core.service import SmsService
from sms_mcp.emulator.core import EmulatorCore
from sms_mcp.emulator.http import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET, EmulatorServer
from sms_mcp.server import build_server
from sms_mcp.wire.base import OutcomeUnknownError
from sms_mcp.wire.openapi import OpenApiTransport
from sms_mcp.wire.sandbox import SandboxTransport

ERAS = pytest.mark.parametrize("era", ["auto", "legacy"])
PARAMS = {"name": "王女士", "order_no": "D2001", "date": "周五"}


def notify(number: str) -> dict[str, Any]:
    return {"phone_numbers": [number], "sign_name": "速通科技", "template_code": "SMS_900000002",
            "template_param": PARAMS}


def sent_to(emu: EmulatorServer, number: str) -> list[dict[str, Any]]:
    return [m for m in emu.core.messages() if m["phone_number"] == number]


def ledger_rows(data_dir: Path, plan_id: str) -> tuple[str, list[tuple[Any, ...]], int]:
    """(plan state, [(chunk state, out_id, owner)], rows in the sends history) for one plan."""
    with sqlite3.connect(data_dir / "ledger.sqlite3") as db:
        state = db.execute("SELECT state FROM plans WHERE plan_id = ?", (plan_id,)).fetchone()[0]
        chunks = db.execute("SELECT state, out_id, owner FROM chunks WHERE plan_id = ? ORDER BY chunk_no",
                            (plan_id,)).fetchall()
        sends = db.execute("SELECT COUNT(*) FROM sends WHERE plan_id = ?", (plan_id,)).fetchone()[0]
    return state, chunks, sends


def audit_events(data_dir: Path, plan_id: str) -> list[str]:
    lines = (data_dir / "audit.jsonl").read_text().splitlines()
    return [e["event"] for e in map(json.loads, lines) if e["plan_id"] == plan_id]


def openapi_settings(emu: EmulatorServer, data_dir: Path, **env: str) -> Settings:
    return Settings.from_env({"SMS_MCP_DATA_DIR": str(data_dir), "SMS_MCP_BACKEND": "openapi",
                              "SMS_MCP_ENDPOINT": emu.url, "SMS_MCP_RECONCILE_GRACE_SECONDS": "0", **env})


@asynccontextmanager
async def over_http(emu: EmulatorServer, data_dir: Path, era: str = "auto", **env: str) -> AsyncIterator[Client]:
    """An in-memory MCP client -> server -> openapi backend -> HTTP emulator."""
    settings = openapi_settings(emu, data_dir, **env)
    credential = CredentialClient(CredentialConfig(type="access_key", access_key_id=DEMO_ACCESS_KEY_ID,
                                                   access_key_secret=DEMO_ACCESS_KEY_SECRET))
    transport = OpenApiTransport(settings, credential=credential)
    async with Client(build_server(settings, transport), mode=era) as client:  # type: ignore[arg-type]
        yield client


def serve_env(emu: EmulatorServer, tmp_path: Path) -> dict[str, str]:
    """The environment of a real `sms-mcp serve` using the openapi backend against the HTTP emulator."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ALIBABA_CLOUD_", "SMS_MCP_")) and k not in PROXY_VARS}
    env.update({
        "SMS_MCP_BACKEND": "openapi", "SMS_MCP_ENDPOINT": emu.url, "SMS_MCP_DATA_DIR": str(tmp_path / "data"),
        "SMS_MCP_RECONCILE_GRACE_SECONDS": "0", "ALIBABA_CLOUD_ACCESS_KEY_ID": DEMO_ACCESS_KEY_ID,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": DEMO_ACCESS_KEY_SECRET, "ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true",
        "HOME": str(tmp_path), "NO_PROXY": "127.0.0.1,localhost",
    })
    return env


def serve(emu: EmulatorServer, tmp_path: Path) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "sms_mcp", "serve"],
                                 env=serve_env(emu, tmp_path))


# ------------------------------------------------------------------------------------------ one process, racing


@ERAS
async def test_many_concurrent_confirms_in_one_process_send_once(tmp_path: Path, era: str) -> None:
    settings = Settings.from_env({"SMS_MCP_DATA_DIR": str(tmp_path), "SMS_MCP_BACKEND": "sandbox",
                                  "SMS_MCP_SANDBOX_RECEIPT_DELAY": "0"})
    transport = SandboxTransport.from_settings(settings)
    args = notify("13700003001")
    async with Client(build_server(settings, transport), mode=era) as client:  # type: ignore[arg-type]
        plan = await call(client, "send_sms", args)
        confirm = {**args, "confirm_token": plan["confirm_token"]}
        results: list[dict[str, Any]] = []

        async def one() -> None:
            results.append(await call(client, "send_sms", confirm))

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(one)
        assert len(transport.core.messages()) == 1
    assert [r["status"] for r in results] == ["accepted"] * 20
    assert sorted(r["replayed"] for r in results) == [False] + [True] * 19
    assert len({r["biz_id"] for r in results}) == 1
    state, chunks, sends = ledger_rows(tmp_path, plan["plan_id"])
    assert state == "sending" and [c[0] for c in chunks] == ["accepted"] and sends == 1
    assert audit_events(tmp_path, plan["plan_id"]).count("confirmed") == 1


async def test_concurrent_confirms_overlapping_a_slow_provider_send_once(emu: EmulatorServer, tmp_path: Path) -> None:
    """The provider takes 0.5 s: every other confirmation arrives while the one API call is in flight, waits for
    its outcome and reports it."""
    number = "13700003002"
    args = notify(number)
    async with over_http(emu, tmp_path) as client:
        plan = await call(client, "send_sms", args)
        emu.faults.add("delay_before", action="SendSms", seconds=0.5)  # every SendSms, were there several
        results: list[dict[str, Any]] = []

        async def one() -> None:
            results.append(await call(client, "send_sms", {**args, "confirm_token": plan["confirm_token"]}))

        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(one)
    assert len(sent_to(emu, number)) == 1
    assert [r["status"] for r in results] == ["accepted"] * 8
    assert sorted(r["replayed"] for r in results) == [False] + [True] * 7
    assert ledger_rows(tmp_path, plan["plan_id"])[1][0][0] == "accepted"


# ------------------------------------------------------------------------------------------ two processes


async def test_two_serve_processes_on_one_data_dir_send_once(emu: EmulatorServer, tmp_path: Path) -> None:
    number = "13700003003"
    args = notify(number)
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(Client(serve(emu, tmp_path), mode="auto"))
        second = await stack.enter_async_context(Client(serve(emu, tmp_path), mode="legacy"))
        plan = await call(first, "send_sms", args)
        confirm = {**args, "confirm_token": plan["confirm_token"]}
        emu.faults.add("delay_before", action="SendSms", seconds=0.5)
        results: list[dict[str, Any]] = []

        async def one(client: Client) -> None:
            results.append(await call(client, "send_sms", confirm))

        async with anyio.create_task_group() as tg:
            for client in (first, second, first, second, first, second):
                tg.start_soon(one, client)
        assert len(sent_to(emu, number)) == 1
        assert [r["status"] for r in results] == ["accepted"] * 6
        assert sorted(r["replayed"] for r in results) == [False] + [True] * 5
        # Either process can reconcile the plan afterwards.
        report = await call(second, "query_details", {"plan_id": plan["plan_id"]})
        assert report["plan_status"] == "accepted" and report["summary"]["delivered"] == 1
    state, chunks, sends = ledger_rows(tmp_path / "data", plan["plan_id"])
    assert state == "sending" and chunks[0][0] == "accepted" and sends == 1
    assert audit_events(tmp_path / "data", plan["plan_id"]).count("confirmed") == 1
    assert len(sent_to(emu, number)) == 1


# ------------------------------------------------------------------------------------------ client timeout


@ERAS
async def test_replay_after_a_client_timeout_never_resends(emu: EmulatorServer, tmp_path: Path, era: str) -> None:
    """The provider recorded the send but answered late; the client gave up (its handler was cancelled): the
    outcome is unknown, a replay returns it without resending, reconciliation finds the record."""
    number = "1370000301" + ("1" if era == "auto" else "2")
    args = notify(number)
    async with over_http(emu, tmp_path, era) as client:
        plan = await call(client, "send_sms", args)
        confirm = {**args, "confirm_token": plan["confirm_token"]}
        emu.faults.add("delay_after", action="SendSms", count=1, seconds=1.5)
        with pytest.raises(MCPError):
            await client.call_tool("send_sms", confirm, read_timeout_seconds=0.5)
        # The cancelled handler recorded the interruption before unwinding.
        with anyio.fail_after(5):
            while ledger_rows(tmp_path, plan["plan_id"])[1][0][0] == "sending":
                await anyio.sleep(0.02)
        assert ledger_rows(tmp_path, plan["plan_id"])[1][0][0] == "unknown"
        replay = await call(client, "send_sms", confirm)
        assert replay["status"] == "unknown" and replay["replayed"] is True
        assert replay["chunks"][0]["state"] == "unknown" and "reconcile" in replay["next_step"].lower()
        # The same send cannot be prepared again while its outcome is unknown.
        assert "[sms_mcp.UNRECONCILED]" in await error(client, "send_sms", args)
        report = await call(client, "query_details", {"plan_id": plan["plan_id"]})
        assert report["reconciled"][0]["after"] == "accepted" and report["plan_status"] == "accepted"
        again = await call(client, "send_sms", confirm)
        assert again["status"] == "accepted" and again["replayed"] is True
    assert len(sent_to(emu, number)) == 1
    _, chunks, sends = ledger_rows(tmp_path, plan["plan_id"])
    assert chunks[0][0] == "accepted" and sends == 1
    assert audit_events(tmp_path, plan["plan_id"]) == ["prepared", "confirmed", "unknown", "reconciled_accepted"]


# ------------------------------------------------------------------------------------------ dropped connections


async def test_drop_after_is_unknown_then_reconciled_accepted(emu: EmulatorServer, tmp_path: Path) -> None:
    number = "13700003021"
    args = notify(number)
    async with over_http(emu, tmp_path) as client:
        plan = await call(client, "send_sms", args)
        emu.faults.add("drop_after", action="SendSms", count=1)
        result = await call(client, "send_sms", {**args, "confirm_token": plan["confirm_token"]})
        assert result["status"] == "unknown" and result["error_code"] == "sms_mcp.OUTCOME_UNKNOWN"
        assert len(sent_to(emu, number)) == 1  # it did reach the provider
        assert "UNRECONCILED" in await error(client, "send_sms", args)
        report = await call(client, "query_details", {"plan_id": plan["plan_id"]})
        assert [(r["before"], r["after"]) for r in report["reconciled"]] == [("unknown", "accepted")]
        assert plan["plan_id"] in report["reconciled"][0]["evidence"]  # matched by OutId
        assert report["plan_status"] == "accepted" and report["summary"]["delivered"] == 1
        # Settled for good: a second query reconciles nothing more, and the same send is still not "fresh".
        assert (await call(client, "query_details", {"plan_id": plan["plan_id"]}))["reconciled"] == []
        replay = await call(client, "send_sms", {**args, "confirm_token": plan["confirm_token"]})
        assert replay["status"] == "accepted" and replay["replayed"] is True
    assert len(sent_to(emu, number)) == 1
    assert ledger_rows(tmp_path, plan["plan_id"])[1][0][0] == "accepted"


@pytest.mark.parametrize("fault", ["drop_before", "error_500", "error_503"])
async def test_unknown_that_never_arrived_is_reconciled_not_sent_then_a_fresh_plan_sends_once(
    emu: EmulatorServer, tmp_path: Path, fault: str
) -> None:
    number = {"drop_before": "13700003022", "error_500": "13700003023", "error_503": "13700003024"}[fault]
    args = notify(number)
    async with over_http(emu, tmp_path) as client:
        plan = await call(client, "send_sms", args)
        emu.faults.add(fault, action="SendSms", count=1)
        result = await call(client, "send_sms", {**args, "confirm_token": plan["confirm_token"]})
        assert result["status"] == "unknown"  # a 5xx or a lost connection may have run: not "rejected"
        assert sent_to(emu, number) == []
        refused = await error(client, "send_sms", args)
        assert "[sms_mcp.UNRECONCILED]" in refused and plan["plan_id"] in refused
        replay = await call(client, "send_sms", {**args, "confirm_token": plan["confirm_token"]})
        assert replay["status"] == "unknown" and replay["replayed"] is True
        assert sent_to(emu, number) == []
        report = await call(client, "query_details", {"plan_id": plan["plan_id"]})
        assert [(r["before"], r["after"]) for r in report["reconciled"]] == [("unknown", "not_sent")]
        assert report["plan_status"] == "not_sent"
        # The old token still replays "not_sent" and sends nothing; the same arguments may be planned afresh.
        old = await call(client, "send_sms", {**args, "confirm_token": plan["confirm_token"]})
        assert old["status"] == "not_sent" and old["replayed"] is True
        fresh = await call(client, "send_sms", args)
        assert fresh["plan_id"] != plan["plan_id"]
        sent = await call(client, "send_sms", {**args, "confirm_token": fresh["confirm_token"]})
        assert sent["status"] == "accepted"
        recorded = sent_to(emu, number)
        assert len(recorded) == 1 and recorded[0]["out_id"] == fresh["plan_id"]
    assert ledger_rows(tmp_path, plan["plan_id"])[1][0][0] == "not_sent"
    assert ledger_rows(tmp_path, plan["plan_id"])[2] == 0  # its budget was released
    assert ledger_rows(tmp_path, fresh["plan_id"])[1][0][0] == "accepted"


async def test_malformed_answer_is_unknown_and_reconciled_accepted(emu: EmulatorServer, tmp_path: Path) -> None:
    number = "13700003025"
    args = notify(number)
    async with over_http(emu, tmp_path) as client:
        plan = await call(client, "send_sms", args)
        emu.faults.add("malformed", action="SendSms", count=1)
        result = await call(client, "send_sms", {**args, "confirm_token": plan["confirm_token"]})
        assert result["status"] == "unknown"
        report = await call(client, "query_details", {"plan_id": plan["plan_id"]})
        assert report["plan_status"] == "accepted"
    assert len(sent_to(emu, number)) == 1


# ------------------------------------------------------------------------------------------ SIGKILL mid-send


class RawServer:
    """`sms-mcp serve` driven line by line (2025-11-25 handshake), so the test can kill it mid-request."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "sms_mcp", "serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        self.next_id = 1
        self.request("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                    "clientInfo": {"name": "t", "version": "1"}})
        self._write({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def _write(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin
        self.proc.stdin.write((json.dumps(message, ensure_ascii=False) + "\n").encode())
        self.proc.stdin.flush()

    def send(self, method: str, params: dict[str, Any]) -> int:
        self.next_id += 1
        self._write({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        return self.next_id

    def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        wanted = self.send(method, params)
        assert self.proc.stdout
        while True:
            message = json.loads(self.proc.stdout.readline())
            if message.get("id") == wanted:
                return message["result"]

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


@pytest.mark.parametrize("reached", [True, False], ids=["reached_provider", "never_arrived"])
async def test_sigkill_mid_send_then_a_new_process_reconciles(
    emu: EmulatorServer, tmp_path: Path, reached: bool
) -> None:
    number = "13700003031" if reached else "13700003032"
    args = notify(number)
    data = tmp_path / "data"
    raw = RawServer(serve_env(emu, tmp_path))
    try:
        plan = raw.request("tools/call", {"name": "send_sms", "arguments": args})["structuredContent"]
        if reached:  # the provider records the send, then answers slowly
            emu.faults.add("delay_after", action="SendSms", count=1, seconds=3.0)
        else:  # the request is held, then its connection dropped before the provider sees it
            emu.faults.add("delay_before", action="SendSms", count=1, seconds=1.5)
            emu.faults.add("drop_before", action="SendSms", count=1)
        raw.send("tools/call", {"name": "send_sms", "arguments": {**args, "confirm_token": plan["confirm_token"]}})
        # Kill between the intent and the outcome: the chunk is "sending" (and, if reached, recorded upstream).
        wait_for(lambda: ledger_rows(data, plan["plan_id"])[1][0][0] == "sending"
                 and (not reached or len(sent_to(emu, number)) == 1))
        owner = ledger_rows(data, plan["plan_id"])[1][0][2]
        assert f":{raw.proc.pid}:" in owner  # host:pid:random, holding a lease it renews while the call is out
        raw.kill()
    finally:
        if raw.proc.poll() is None:
            raw.proc.kill()
            raw.proc.wait(timeout=10)
    if not reached:
        await anyio.sleep(1.7)  # let the emulator finish with the held request (it drops it, unrecorded)
    assert ledger_rows(data, plan["plan_id"])[1][0][0] == "sending"  # the dead process recorded nothing more

    async with Client(serve(emu, tmp_path), mode="legacy") as client:
        assert "[sms_mcp.UNRECONCILED]" in await error(client, "send_sms", args)
        # The replay waits until the dead owner's lease has expired, then finds the chunk orphaned: never resent.
        replay = await call(client, "send_sms", {**args, "confirm_token": plan["confirm_token"]})
        assert replay["status"] == "unknown" and replay["replayed"] is True
        assert ledger_rows(data, plan["plan_id"])[1][0][0] == "unknown"
        report = await call(client, "query_details", {"plan_id": plan["plan_id"]})
        expected = "accepted" if reached else "not_sent"
        assert [(r["before"], r["after"]) for r in report["reconciled"]] == [("unknown", expected)]
        assert report["plan_status"] == expected
        if not reached:
            fresh = await call(client, "send_sms", args)
            await call(client, "send_sms", {**args, "confirm_token": fresh["confirm_token"]})
    assert len(sent_to(emu, number)) == 1
    assert ledger_rows(data, plan["plan_id"])[1][0][0] == ("accepted" if reached else "not_sent")


# ------------------------------------------------------------------------------------------ the grace period


class Clock:
    def __init__(self) -> None:
        self.now = 1_756_692_000.0  # 2025-09-01 10:00 UTC+8

    def __call__(self) -> float:
        return self.now


class LostSends:
    """The sandbox on a fake clock, except that every SendSms times out before reaching the emulator (the test
    then decides whether the request "lands late")."""

    name = "sandbox"

    def __init__(self, core: EmulatorCore) -> None:
        self.core = core

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def call(self, action: str, params: dict[str, str]) -> dict[str, Any]:
        if action == "SendSms":
            raise OutcomeUnknownError("timeout", "no answer in time")
        return self.core.handle(action, params)


@pytest.mark.parametrize("reach", [True, False])
async def test_not_sent_is_concluded_only_after_the_grace_period(tmp_path: Path, reach: bool) -> None:
    """A record can show up late (the provider was slow): "no record" means not_sent only after the grace."""
    clock = Clock()
    core = EmulatorCore(None, receipt_delay=0.0, clock=clock)
    settings = Settings.from_env({"SMS_MCP_DATA_DIR": str(tmp_path), "SMS_MCP_RECONCILE_GRACE_SECONDS": "30"})
    service = SmsService(settings, LostSends(core), clock=clock)  # type: ignore[arg-type]
    args = notify("13700003041")
    args.pop("phone_numbers")
    plan = await service.send_sms(["13700003041"], **args)
    result = await service.send_sms(["13700003041"], **args, confirm_token=plan.confirm_token)
    assert result.status == "unknown"
    clock.now += 10
    early = await service.query_details(plan_id=plan.plan_id)
    assert early.plan_status == "unknown" and early.reconciled[0].after == "unknown"
    assert "too early" in early.reconciled[0].evidence.lower()
    if reach:  # the late request lands at the provider after all, inside the grace period
        core.handle("SendSms", {**(await service.ledger.chunks(plan.plan_id))[0].params})
    clock.now += 25
    final = await service.query_details(plan_id=plan.plan_id)
    assert final.plan_status == ("accepted" if reach else "not_sent")
    assert len(core.messages()) == (1 if reach else 0)
    service.ledger.close()
    core.close()
