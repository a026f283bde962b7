"""The dispatcher's pipeline: at most SEND_CONCURRENCY calls in flight, at most CLAIM_AHEAD more chunks claimed and
waiting for a call slot; every call made only after its claim is durable, and within the reconcile grace's slack
after it (else not at all); an interrupted confirmation leaves its claimed chunks ``unknown`` (reconciled to
not_sent when they never left) and its unclaimed ones ``not_sent``. Sends reach the real emulator core; only the
moment a call starts is held by the test."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp_harness import reconcile_at_once

from sms_mcp.config import Settings
from sms_mcp.core.dispatcher import CLAIM_AHEAD, SEND_CONCURRENCY, claim_ahead_window
from sms_mcp.core.service import SmsService
from sms_mcp.emulator.core import EmulatorCore
from sms_mcp.wire.sandbox import SandboxTransport

TEMPLATE = "SMS_900000002"
CHUNKS = 14


def recipients(count: int) -> list[dict[str, Any]]:
    return [{"phone_number": f"1370010{i:04d}", "sign_name": "速通科技",
             "template_param": {"name": f"客户{i}", "order_no": f"P{i}", "date": "周三"}} for i in range(count)]


def chunk_states(ledger_path: Path) -> dict[int, str]:
    db = sqlite3.connect(ledger_path)
    try:
        return dict(db.execute("SELECT chunk_no, state FROM chunks").fetchall())
    finally:
        db.close()


class GatedSends(SandboxTransport):
    """Each SendBatchSms waits at the gate before it reaches the emulator; at that moment the test checks that
    its chunk's intent is already on disk and that no more chunks are claimed than the pipeline allows."""

    def __init__(self, core: EmulatorCore, ledger_path: Path) -> None:
        super().__init__(core)
        self.ledger_path = ledger_path
        self.gate = anyio.Event()
        self.in_flight = 0
        self.most_in_flight = 0
        self.most_claimed = 0
        self.started: list[str] = []

    async def call(self, action: str, params: dict[str, str]) -> dict[str, Any]:
        if action != "SendBatchSms":
            return await super().call(action, params)
        states = chunk_states(self.ledger_path)
        number = int(params["OutId"].rsplit("-", 1)[1])
        assert states[number] == "sending", "a call started before its claim was committed"
        self.most_claimed = max(self.most_claimed, sum(s == "sending" for s in states.values()))
        self.started.append(params["OutId"])
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.gate.wait()
            return await super().call(action, params)
        finally:
            self.in_flight -= 1


def settings(data_dir: Path, grace: float | None = None) -> Settings:
    env = {"SMS_MCP_DATA_DIR": str(data_dir), "SMS_MCP_BACKEND": "sandbox", "SMS_MCP_SANDBOX_RECEIPT_DELAY": "0"}
    if grace is not None:
        env["SMS_MCP_RECONCILE_GRACE_SECONDS"] = str(grace)
    return Settings.from_env(env)


@pytest.fixture
def gated(tmp_path: Path) -> tuple[SmsService, GatedSends]:
    core = EmulatorCore(None, receipt_delay=0.0)
    transport = GatedSends(core, tmp_path / "ledger.sqlite3")
    service = SmsService(settings(tmp_path), transport)  # the default grace: 30 s, room to claim ahead
    assert claim_ahead_window(service.settings) > 1
    return service, transport


def sending(transport: GatedSends) -> int:
    return sum(s == "sending" for s in chunk_states(transport.ledger_path).values())


async def test_the_pipeline_bounds_calls_and_claims(gated: tuple[SmsService, GatedSends]) -> None:
    service, transport = gated
    batch = recipients(100 * CHUNKS)
    plan = await service.send_batch_sms(batch, TEMPLATE)
    async with anyio.create_task_group() as tg:
        result: dict[str, Any] = {}

        async def confirm() -> None:
            result["sent"] = await service.send_batch_sms(batch, TEMPLATE, confirm_token=plan.confirm_token)

        tg.start_soon(confirm)
        with anyio.fail_after(30):
            while transport.in_flight < SEND_CONCURRENCY:
                await anyio.sleep(0.01)
            await anyio.sleep(0.2)  # time for the claims ahead to be made, and for any excess to show
        states = chunk_states(transport.ledger_path)
        assert sum(s == "sending" for s in states.values()) == SEND_CONCURRENCY + CLAIM_AHEAD
        assert transport.in_flight == SEND_CONCURRENCY
        transport.gate.set()
    sent = result["sent"]
    assert sent.status == "accepted" and len(sent.chunks) == CHUNKS
    assert transport.most_in_flight == SEND_CONCURRENCY
    assert transport.most_claimed <= SEND_CONCURRENCY + CLAIM_AHEAD
    assert len(transport.started) == CHUNKS == len(set(transport.started))
    assert len(transport.core.messages()) == 100 * CHUNKS
    service.ledger.close()


async def test_an_interrupted_confirmation_records_each_chunk_for_what_it_is(
        gated: tuple[SmsService, GatedSends]) -> None:
    service, transport = gated
    batch = recipients(100 * CHUNKS)
    plan = await service.send_batch_sms(batch, TEMPLATE)
    with anyio.CancelScope() as scope:  # the client gives up while the first calls hang

        async def give_up_when_full() -> None:
            while transport.in_flight < SEND_CONCURRENCY or \
                    sum(s == "sending" for s in chunk_states(transport.ledger_path).values()) < \
                    SEND_CONCURRENCY + CLAIM_AHEAD:
                await anyio.sleep(0.01)
            scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(give_up_when_full)
            await service.send_batch_sms(batch, TEMPLATE, confirm_token=plan.confirm_token)
    assert scope.cancelled_caught
    states = chunk_states(transport.ledger_path)
    assert list(states.values()).count("unknown") == SEND_CONCURRENCY + CLAIM_AHEAD
    assert list(states.values()).count("not_sent") == CHUNKS - SEND_CONCURRENCY - CLAIM_AHEAD
    assert len(transport.started) == SEND_CONCURRENCY and transport.core.messages() == []
    # What each claimed chunk says, then reconciliation: none of them reached the provider.
    reasons = sorted(c.error_message or "" for c in await service.ledger.chunks(plan.plan_id)
                     if c.state.value == "unknown")
    assert sum("before its request was made" in r for r in reasons) == CLAIM_AHEAD
    assert sum("interrupted while sending" in r for r in reasons) == SEND_CONCURRENCY
    service.ledger.close()
    later = SmsService(reconcile_at_once(service.settings), transport)  # (as if the grace had passed)
    details = await later.query_details(plan_id=plan.plan_id)
    assert details.plan_status == "not_sent"
    assert set(chunk_states(transport.ledger_path).values()) == {"not_sent"}
    later.ledger.close()


async def test_without_slack_in_the_grace_nothing_is_claimed_ahead(tmp_path: Path) -> None:
    core = EmulatorCore(None, receipt_delay=0.0)
    transport = GatedSends(core, tmp_path / "ledger.sqlite3")
    minimum = settings(tmp_path).min_reconcile_grace_seconds
    service = SmsService(settings(tmp_path, grace=minimum), transport)
    batch = recipients(100 * CHUNKS)
    plan = await service.send_batch_sms(batch, TEMPLATE)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: service.send_batch_sms(batch, TEMPLATE, confirm_token=plan.confirm_token))
        with anyio.fail_after(30):
            while transport.in_flight < SEND_CONCURRENCY:
                await anyio.sleep(0.01)
        await anyio.sleep(0.2)
        assert sending(transport) == SEND_CONCURRENCY  # each claim is followed at once by its call
        transport.gate.set()
    assert transport.most_claimed == SEND_CONCURRENCY and len(core.messages()) == 100 * CHUNKS
    service.ledger.close()


async def test_a_chunk_claimed_ahead_is_not_called_once_the_grace_could_not_cover_it(tmp_path: Path) -> None:
    core = EmulatorCore(None, receipt_delay=0.0)
    transport = GatedSends(core, tmp_path / "ledger.sqlite3")
    minimum = settings(tmp_path).min_reconcile_grace_seconds
    service = SmsService(settings(tmp_path, grace=minimum + 0.4), transport)  # a claim may wait 0.2 s for a slot
    batch = recipients(100 * CHUNKS)
    plan = await service.send_batch_sms(batch, TEMPLATE)
    result: dict[str, Any] = {}

    async def confirm() -> None:
        result["sent"] = await service.send_batch_sms(batch, TEMPLATE, confirm_token=plan.confirm_token)

    async with anyio.create_task_group() as tg:
        tg.start_soon(confirm)
        with anyio.fail_after(30):  # the first calls hang past the window: every later chunk gives up its call
            while list(chunk_states(transport.ledger_path).values()).count("unknown") < CHUNKS - SEND_CONCURRENCY:
                await anyio.sleep(0.02)
        transport.gate.set()
    sent = result["sent"]
    assert len(transport.started) == SEND_CONCURRENCY and len(core.messages()) == 100 * SEND_CONCURRENCY
    states = [c.state for c in sent.chunks]
    assert states.count("accepted") == SEND_CONCURRENCY
    late = [c for c in sent.chunks if c.state != "accepted"]
    assert len(late) == CHUNKS - SEND_CONCURRENCY and sent.status == "unknown"
    assert all(c.state == "unknown" and "request was not made" in (c.error_message or "") for c in late)
    service.ledger.close()
