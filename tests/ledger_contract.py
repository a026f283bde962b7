"""The ledger port's contract: every adapter of :class:`sms_mcp.core.ports.LedgerPort` must pass these tests.

How an adapter runs it — one module, one fixture::

    # tests/test_ledger_contract_<adapter>.py
    import pytest
    from ledger_contract import *  # noqa: F403  (the contract's tests, collected in this module)

    @pytest.fixture
    async def make_ledger(tmp_path):
        opened = []

        async def factory():
            # Every call opens a NEW connection (instance) to the SAME store: two-connection tests race them.
            ledger = await MyLedger.open(...)
            opened.append(ledger)
            return ledger

        yield factory
        for ledger in opened:
            await ledger.aclose()

The store must start empty for each test. Times are the caller's (``now`` arguments), so the tests need no
clock. Nothing here depends on SQLite.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from sms_mcp.core.lifecycle import ChunkState, IllegalTransition, PlanState, reconcile, settle
from sms_mcp.core.limits import flow_windows
from sms_mcp.core.ports import (
    ChunkAnswer,
    ClaimStatus,
    Lease,
    LedgerPort,
    NewChunk,
    NewPlan,
    Principal,
    Recipient,
    SendLimits,
)

MakeLedger = Callable[[], Awaitable[LedgerPort]]
T0 = 1_756_692_030.0  # 2025-09-01 10:00:30 UTC+8
ALICE = Principal("alice", "cli-1")
BOB = Principal("bob", "cli-1")
LEASE = Lease("host-a:1:aaaa", 30.0)
OTHER = Lease("host-b:2:bbbb", 30.0)


def plan(plan_id: str, *, numbers: tuple[str, ...] = ("13800138000",), chunks: int = 1,
         principal: Principal = ALICE, ttl: float = 600.0, content: str | None = None,
         template_type: str = "notification") -> NewPlan:
    parts = tuple(
        NewChunk(chunk_no=n, action="SendSms", params={"PhoneNumbers": ",".join(numbers), "OutId": f"{plan_id}-{n}"},
                 recipients=tuple(Recipient(x, "速通科技") for x in numbers), out_id=f"{plan_id}-{n}")
        for n in range(1, chunks + 1)
    )
    return NewPlan(
        plan_id=plan_id, token_hash=hashlib.sha256(plan_id.encode()).hexdigest(), tool="send_sms",
        args_hash="args-" + plan_id, content_hash=content or ("content-" + plan_id), principal=principal,
        template_code="SMS_900000002", template_type=template_type, created_at=T0, expires_at=T0 + ttl,
        summary={"plan_id": plan_id, "text": "【速通科技】您好", "n": [1, 2]}, chunks=parts,
    )


def token_hash(plan_id: str) -> str:
    return hashlib.sha256(plan_id.encode()).hexdigest()


async def gather(*calls: Callable[[], Awaitable[Any]]) -> list[Any]:
    """Run the calls concurrently (each on its own connection when the caller made them so)."""
    results: list[Any] = [None] * len(calls)

    async def one(i: int, call: Callable[[], Awaitable[Any]]) -> None:
        results[i] = await call()

    async with anyio.create_task_group() as tg:
        for i, call in enumerate(calls):
            tg.start_soon(one, i, call)
    return results


async def confirmed(ledger: LedgerPort, p: NewPlan, lease: Lease = LEASE, now: float = T0 + 1) -> None:
    await ledger.create_plan(p)
    change = await ledger.confirm_plan(p.plan_id, p.principal, lease, now)
    assert change.won


async def test_contract_create_and_read_back(make_ledger: MakeLedger) -> None:
    ledger = await make_ledger()
    p = plan("p1", numbers=("13800138000", "+85291234567"), chunks=2)
    await ledger.create_plan(p)
    other = await make_ledger()
    for reader in (ledger, other):
        got = await reader.plan_by_token(token_hash("p1"))
        assert got is not None and got == await reader.get_plan("p1")
        assert got.state is PlanState.PREPARED and got.principal == ALICE
        assert (got.tool, got.args_hash, got.content_hash) == ("send_sms", "args-p1", "content-p1")
        assert (got.template_code, got.template_type) == ("SMS_900000002", "notification")
        assert got.expires_at == T0 + 600 and got.owner is None and got.sent_at is None
        assert dict(got.summary) == {"plan_id": "p1", "text": "【速通科技】您好", "n": [1, 2]}
        chunks = await reader.chunks("p1")
        assert [c.chunk_no for c in chunks] == [1, 2]
        assert all(c.state is ChunkState.PENDING for c in chunks)
        assert chunks[0].recipients == (Recipient("13800138000", "速通科技"), Recipient("+85291234567", "速通科技"))
        assert dict(chunks[1].params) == {"PhoneNumbers": "13800138000,+85291234567", "OutId": "p1-2"}
        assert chunks[1].out_id == "p1-2"
    assert await ledger.plan_by_token(token_hash("nope")) is None
    assert await ledger.get_plan("nope") is None
    assert await ledger.chunks("nope") == []


async def test_contract_health(make_ledger: MakeLedger) -> None:
    ledger = await make_ledger()
    health = await ledger.health()
    assert health.schema_version >= 1 and health.plans == 0 and health.location
    await ledger.create_plan(plan("p1"))
    assert (await ledger.health()).plans == 1


async def test_contract_claims_are_exactly_once_across_connections(make_ledger: MakeLedger) -> None:
    ledgers = [await make_ledger() for _ in range(6)]
    p = plan("p1")
    await ledgers[0].create_plan(p)
    leases = [Lease(f"owner-{i}", 30.0) for i in range(6)]
    changes = await gather(*[lambda lg=lg, ls=ls: lg.confirm_plan("p1", ALICE, ls, T0 + 1)
                             for lg, ls in zip(ledgers, leases, strict=True)])
    winners = [i for i, c in enumerate(changes) if c.won]
    assert len(winners) == 1
    owner = leases[winners[0]].owner
    for change in changes:  # every caller, winner or loser, sees the winner's state
        assert change.plan.state is PlanState.SENDING and change.plan.owner == owner
        assert change.plan.lease_expires == T0 + 31 and change.plan.sent_at == T0 + 1
    # The chunk: only the lease holder can claim it, and only once, however many connections try at once.
    limits = SendLimits()
    claims = await gather(*[lambda lg=lg: lg.claim_chunk("p1", 1, leases[winners[0]], T0 + 2, limits)
                            for lg in ledgers])
    assert sorted(c.status.value for c in claims) == ["claimed"] + ["taken"] * 5
    chunk = (await ledgers[3].chunks("p1"))[0]
    assert chunk.state is ChunkState.SENDING and chunk.owner == owner and chunk.claimed_at == T0 + 2
    assert chunk.lease_expires == T0 + 32
    assert await ledgers[4].sends_since(0) == 1  # the intent counts against the budgets once


async def test_contract_concurrent_confirm_and_decline_one_wins_and_both_see_it(make_ledger: MakeLedger) -> None:
    for round_no in range(10):
        a, b = await make_ledger(), await make_ledger()
        pid = f"race{round_no}"
        await a.create_plan(plan(pid))
        confirm, decline = await gather(lambda a=a, pid=pid: a.confirm_plan(pid, ALICE, LEASE, T0 + 1),
                                         lambda b=b, pid=pid: b.decline_plan(pid, ALICE, T0 + 1))
        assert confirm.won != decline.won
        final = PlanState.SENDING if confirm.won else PlanState.CANCELLED
        assert confirm.plan.state is final and decline.plan.state is final
        # The loser can never win later.
        assert not (await a.confirm_plan(pid, ALICE, OTHER, T0 + 2)).won
        assert not (await b.decline_plan(pid, ALICE, T0 + 2)).won
        assert (await a.get_plan(pid)).state is final


async def test_contract_confirm_and_decline_bound_to_principal_and_time(make_ledger: MakeLedger) -> None:
    ledger = await make_ledger()
    await ledger.create_plan(plan("p1", ttl=10))
    # Another principal (even with the same subject through another client) changes nothing.
    for stranger in (BOB, Principal("alice", "cli-2")):
        assert not (await ledger.confirm_plan("p1", stranger, LEASE, T0 + 1)).won
        assert not (await ledger.decline_plan("p1", stranger, T0 + 1)).won
    assert (await ledger.get_plan("p1")).state is PlanState.PREPARED
    # An expired plan cannot be confirmed, but can still be declined.
    expired = await ledger.confirm_plan("p1", ALICE, LEASE, T0 + 10)
    assert not expired.won and expired.plan.state is PlanState.PREPARED
    assert (await ledger.decline_plan("p1", ALICE, T0 + 11)).won
    assert (await ledger.get_plan("p1")).state is PlanState.CANCELLED
    # A missing plan: not won, no plan.
    missing = await ledger.confirm_plan("nope", ALICE, LEASE, T0)
    assert not missing.won and missing.plan is None


async def test_contract_chunk_claim_needs_the_valid_lease(make_ledger: MakeLedger) -> None:
    ledger = await make_ledger()
    limits = SendLimits()
    await ledger.create_plan(plan("p0"))
    assert (await ledger.claim_chunk("p0", 1, LEASE, T0 + 1, limits)).status is ClaimStatus.LEASE_LOST  # unconfirmed
    await confirmed(ledger, plan("p1", chunks=3))
    assert (await ledger.claim_chunk("p1", 1, OTHER, T0 + 2, limits)).status is ClaimStatus.LEASE_LOST
    claim = await ledger.claim_chunk("p1", 1, LEASE, T0 + 2, limits)
    assert claim.status is ClaimStatus.CLAIMED and claim.chunk.state is ChunkState.SENDING
    assert (await ledger.claim_chunk("p1", 1, LEASE, T0 + 3, limits)).status is ClaimStatus.TAKEN
    # The lease (taken at T0+1 for 30 s) has expired at T0+31: the owner may not claim any more.
    assert (await ledger.claim_chunk("p1", 2, LEASE, T0 + 31, limits)).status is ClaimStatus.LEASE_LOST
    assert (await ledger.chunks("p1"))[1].state is ChunkState.PENDING
    assert await ledger.sends_since(0) == 1


async def test_contract_lease_renewal(make_ledger: MakeLedger) -> None:
    ledger = await make_ledger()
    await confirmed(ledger, plan("p1", chunks=2))  # lease until T0+31
    await ledger.claim_chunk("p1", 1, LEASE, T0 + 2, SendLimits())  # chunk lease until T0+32
    assert not await ledger.renew_lease("p1", OTHER, T0 + 10)
    assert await ledger.renew_lease("p1", LEASE, T0 + 20)  # both to T0+50
    assert (await ledger.get_plan("p1")).lease_expires == T0 + 50
    assert (await ledger.chunks("p1"))[0].lease_expires == T0 + 50
    assert await ledger.recover("p1", T0 + 40) == []  # renewed: nothing is orphaned
    assert not await ledger.renew_lease("p1", LEASE, T0 + 50)  # expired leases are never revived
    assert (await ledger.get_plan("p1")).lease_expires == T0 + 50
    assert not await ledger.renew_lease("nope", LEASE, T0)


async def test_contract_recover_after_the_owner_died(make_ledger: MakeLedger) -> None:
    ledger, other = await make_ledger(), await make_ledger()
    await confirmed(ledger, plan("p1", chunks=3))  # lease until T0+31
    await ledger.claim_chunk("p1", 1, LEASE, T0 + 2, SendLimits())
    await ledger.claim_chunk("p1", 2, LEASE, T0 + 2, SendLimits())
    assert await ledger.settle_chunk("p1", 2, frozenset({ChunkState.SENDING}), ChunkState.ACCEPTED,
                                     ChunkAnswer(biz_id="B2"), T0 + 3)
    assert await other.recover("p1", T0 + 20) == []  # the owner's lease is valid: nothing to recover
    assert await ledger.sends_since(0) == 2
    recovered = await other.recover("p1", T0 + 40)
    assert [(r.chunk_no, r.before, r.after) for r in recovered] == [
        (1, ChunkState.SENDING, ChunkState.UNKNOWN), (3, ChunkState.PENDING, ChunkState.NOT_SENT)]
    chunks = await ledger.chunks("p1")
    assert [c.state for c in chunks] == [ChunkState.UNKNOWN, ChunkState.ACCEPTED, ChunkState.NOT_SENT]
    assert chunks[0].error_code == "sms_mcp.OUTCOME_UNKNOWN" and chunks[2].error_code
    assert await ledger.sends_since(0) == 2  # the unknown chunk still counts; the never-sent one never did
    assert await other.recover("p1", T0 + 50) == []  # deterministic and idempotent
    # The dead owner, were it to come back, can neither claim nor renew.
    assert (await ledger.claim_chunk("p1", 3, LEASE, T0 + 41, SendLimits())).status is not ClaimStatus.CLAIMED
    assert not await ledger.renew_lease("p1", LEASE, T0 + 41)
    # An unconfirmed or cancelled plan has nothing to recover.
    await ledger.create_plan(plan("p2"))
    assert await ledger.recover("p2", T0 + 1000) == []
    assert await ledger.recover("nope", T0) == []


async def test_contract_settle_and_release(make_ledger: MakeLedger) -> None:
    ledger = await make_ledger()
    await confirmed(ledger, plan("p1", chunks=3))
    for n in (1, 2, 3):
        await ledger.claim_chunk("p1", n, LEASE, T0 + 2, SendLimits())
    assert await ledger.sends_since(0) == 3
    ok = settle(ChunkState.ACCEPTED)
    assert await ledger.settle_chunk("p1", 1, ok.sources, ok.target, ChunkAnswer("BIZ", "REQ"), T0 + 3)
    assert not await ledger.settle_chunk("p1", 1, ok.sources, ok.target, ChunkAnswer("X"), T0 + 4)  # once only
    bad = settle(ChunkState.REJECTED)
    assert await ledger.settle_chunk("p1", 2, bad.sources, bad.target,
                                     ChunkAnswer(request_id="R2", error_code="isv.X", error_message="no"), T0 + 3)
    lost = settle(ChunkState.UNKNOWN)
    assert await ledger.settle_chunk("p1", 3, lost.sources, lost.target,
                                     ChunkAnswer(error_code="sms_mcp.OUTCOME_UNKNOWN", error_message="?"), T0 + 3)
    assert await ledger.sends_since(0) == 2  # the rejected chunk's message was released
    not_sent = reconcile(ChunkState.NOT_SENT)
    assert await ledger.settle_chunk("p1", 3, not_sent.sources, not_sent.target,
                                     ChunkAnswer(error_code="sms_mcp.OUTCOME_UNKNOWN", error_message="?"), T0 + 60)
    assert await ledger.sends_since(0) == 1
    c1, c2, c3 = await ledger.chunks("p1")
    assert (c1.state, c1.biz_id, c1.request_id, c1.error_code) == (ChunkState.ACCEPTED, "BIZ", "REQ", None)
    assert (c2.state, c2.request_id, c2.error_code, c2.error_message) == (ChunkState.REJECTED, "R2", "isv.X", "no")
    assert c3.state is ChunkState.NOT_SENT
    # Final states never change again, whatever the caller claims to expect.
    for target in (ChunkState.ACCEPTED, ChunkState.NOT_SENT):
        move = reconcile(target)
        assert not await ledger.settle_chunk("p1", 3, move.sources, move.target, ChunkAnswer(), T0 + 70)


async def test_contract_illegal_transitions_are_refused(make_ledger: MakeLedger) -> None:
    ledger = await make_ledger()
    await confirmed(ledger, plan("p1"))
    for sources, target in (({ChunkState.ACCEPTED}, ChunkState.PENDING), ({ChunkState.PENDING}, ChunkState.ACCEPTED),
                            ({ChunkState.UNKNOWN}, ChunkState.SENDING), ({ChunkState.NOT_SENT}, ChunkState.ACCEPTED)):
        with pytest.raises(IllegalTransition):
            await ledger.settle_chunk("p1", 1, frozenset(sources), target, ChunkAnswer(), T0 + 2)
    assert (await ledger.chunks("p1"))[0].state is ChunkState.PENDING


async def test_contract_outstanding_like(make_ledger: MakeLedger) -> None:
    ledger = await make_ledger()
    await ledger.create_plan(plan("p1", content="same"))
    assert await ledger.outstanding_like("same") is None  # prepared only: nothing confirmed yet
    assert (await ledger.confirm_plan("p1", ALICE, LEASE, T0 + 1)).won
    assert await ledger.outstanding_like("same") == "p1"  # confirmed, chunk still pending (owner may die here)
    await ledger.claim_chunk("p1", 1, LEASE, T0 + 2, SendLimits())
    assert await ledger.outstanding_like("same") == "p1"
    lost = settle(ChunkState.UNKNOWN)
    await ledger.settle_chunk("p1", 1, lost.sources, lost.target, ChunkAnswer(), T0 + 3)
    assert await ledger.outstanding_like("same") == "p1"
    assert await ledger.outstanding_like("other") is None
    found = reconcile(ChunkState.ACCEPTED)
    await ledger.settle_chunk("p1", 1, found.sources, found.target, ChunkAnswer(), T0 + 4)
    assert await ledger.outstanding_like("same") is None
    await ledger.create_plan(plan("p2", content="same2"))
    await ledger.decline_plan("p2", ALICE, T0 + 1)
    assert await ledger.outstanding_like("same2") is None


async def test_contract_daily_limit_is_atomic_across_connections(make_ledger: MakeLedger) -> None:
    ledgers = [await make_ledger() for _ in range(4)]
    for i in range(4):
        await confirmed(ledgers[i], plan(f"p{i}", numbers=(f"1380013800{i}",)), lease=Lease(f"o{i}", 30))
    limits = SendLimits(day_start=T0 - 3600, daily_limit=2)
    claims = await gather(*[lambda i=i: ledgers[i].claim_chunk(f"p{i}", 1, Lease(f"o{i}", 30), T0 + 2, limits)
                            for i in range(4)])
    assert sorted(c.status.value for c in claims) == ["claimed"] * 2 + ["refused"] * 2
    for claim in claims:
        if claim.status is ClaimStatus.REFUSED:
            assert claim.refusal.code == "sms_mcp.DAILY_LIMIT"
            assert claim.chunk.state is ChunkState.REJECTED and claim.chunk.error_code == "sms_mcp.DAILY_LIMIT"
    assert await ledgers[0].sends_since(T0 - 3600) == 2
    # Yesterday's sends do not count against today.
    assert await ledgers[0].sends_since(T0 + 3) == 0


async def test_contract_principal_daily_limit_counts_only_that_subject(make_ledger: MakeLedger) -> None:
    a, b = await make_ledger(), await make_ledger()
    await confirmed(a, plan("a1", numbers=("13800138001",)))
    await confirmed(a, plan("a2", numbers=("13800138002",)))
    await confirmed(b, plan("b1", numbers=("13800138003",), principal=BOB), lease=OTHER)
    limits = SendLimits(day_start=T0 - 3600, principal_daily_limit=1)
    assert (await a.claim_chunk("a1", 1, LEASE, T0 + 2, limits)).status is ClaimStatus.CLAIMED
    refused = await b.claim_chunk("a2", 1, LEASE, T0 + 2, limits)
    assert refused.status is ClaimStatus.REFUSED and refused.refusal.code == "sms_mcp.PRINCIPAL_DAILY_LIMIT"
    assert (await b.claim_chunk("b1", 1, OTHER, T0 + 2, limits)).status is ClaimStatus.CLAIMED  # Bob's own budget
    assert await a.sends_since(0, ALICE) == 1 and await a.sends_since(0, BOB) == 1 and await a.sends_since(0) == 2


async def test_contract_flow_control_is_atomic_across_connections(make_ledger: MakeLedger) -> None:
    """Two confirmations of verification codes to the same number and signature in the same minute: Alibaba
    allows one. Both pass a pre-check made before either claims; the claims themselves let one through."""
    ledgers = [await make_ledger() for _ in range(3)]
    leases = [Lease(f"o{i}", 30) for i in range(3)]
    for i in range(3):
        await confirmed(ledgers[i], plan(f"v{i}", template_type="verification"), lease=leases[i])
    limits = SendLimits(flow_windows=flow_windows("verification", T0 + 2))
    claims = await gather(*[lambda i=i: ledgers[i].claim_chunk(f"v{i}", 1, leases[i], T0 + 2, limits)
                            for i in range(3)])
    assert sorted(c.status.value for c in claims) == ["claimed", "refused", "refused"]
    refusal = next(c.refusal for c in claims if c.status is ClaimStatus.REFUSED)
    assert refusal.code == "isv.BUSINESS_LIMIT_CONTROL" and "138****8000" in refusal.message
    assert refusal.retry_at == T0 - 30 + 60  # the next natural minute (UTC+8)
    assert "13800138000" not in refusal.message  # masked
    # Another number is not affected.
    await confirmed(ledgers[0], plan("v9", numbers=("13900139000",), template_type="verification"))
    assert (await ledgers[0].claim_chunk("v9", 1, LEASE, T0 + 2, limits)).status is ClaimStatus.CLAIMED


async def test_contract_send_history(make_ledger: MakeLedger) -> None:
    ledger = await make_ledger()
    await confirmed(ledger, plan("p1", numbers=("13800138000", "13900139000")))
    await ledger.claim_chunk("p1", 1, LEASE, T0 + 2, SendLimits())
    recent = await ledger.recent_sends(T0, ["13800138000", "13700137000"])
    assert [(m.number, m.sign_name, m.template_code, m.sent_at) for m in recent] == [
        ("13800138000", "速通科技", "SMS_900000002", T0 + 2)]
    assert await ledger.recent_sends(T0 + 3, ["13800138000"]) == []
    assert await ledger.sends_since(T0 + 2) == 2 and await ledger.sends_since(T0 + 2.5) == 0


#: What ``from ledger_contract import *`` brings into an adapter's module: every contract test.
__all__ = sorted(name for name in dict(globals()) if name.startswith("test_contract_"))
