"""The SQLite ledger's group commit: writes that wait for the writer share one transaction and one commit, yet each
behaves as if it had been committed alone (durable when its call returns, failing alone, never run once its caller
gave up before the group took it). Checked against the file itself, through a second connection."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest
from ledger_contract import LEASE, T0, confirmed, plan

from sms_mcp.core.lifecycle import ChunkState
from sms_mcp.core.ports import ChunkAnswer, ClaimStatus, LedgerUnavailable, SendLimits
from sms_mcp.ledger.sqlite import SqliteLedger


def _states(path: Path, plan_id: str) -> dict[int, str]:
    """What a fresh connection (another process, a restart) reads from the file."""
    db = sqlite3.connect(path)
    try:
        return dict(db.execute("SELECT chunk_no, state FROM chunks WHERE plan_id = ?", (plan_id,)).fetchall())
    finally:
        db.close()


def _count_groups(ledger: SqliteLedger) -> list[int]:
    """Record the size of every group the ledger commits."""
    sizes: list[int] = []
    transaction = ledger._transaction

    def counted(db: sqlite3.Connection, group: list[Any]) -> None:
        transaction(db, group)
        sizes.append(len(group))

    ledger._transaction = counted  # type: ignore[method-assign]
    return sizes


async def test_concurrent_claims_and_settles_share_commits_and_each_is_durable_on_return(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = await SqliteLedger.open(path)
    try:
        p = plan("p1", numbers=tuple(f"1380013{i:04d}" for i in range(5)), chunks=40)
        await confirmed(ledger, p)
        sizes = _count_groups(ledger)
        seen_durable: list[bool] = []

        async def one(n: int) -> None:
            claim = await ledger.claim_chunk("p1", n, LEASE, T0 + 2, SendLimits())
            assert claim.status is ClaimStatus.CLAIMED and claim.chunk is not None
            assert claim.chunk.state is ChunkState.SENDING and claim.chunk.owner == LEASE.owner
            seen_durable.append(_states(path, "p1")[n] == "sending")  # on disk when the call returned
            await anyio.sleep(0)
            assert await ledger.settle_chunk("p1", n, frozenset({ChunkState.SENDING}), ChunkState.ACCEPTED,
                                             ChunkAnswer(biz_id=f"b{n}"), T0 + 3)
            seen_durable.append(_states(path, "p1")[n] == "accepted")

        async with anyio.create_task_group() as tg:
            for n in range(1, 41):
                tg.start_soon(one, n)
        assert seen_durable == [True] * 80
        assert set(_states(path, "p1").values()) == {"accepted"}
        assert sum(sizes) == 80 and len(sizes) < 80, sizes  # grouped: fewer commits than writes
        # The claimed record returned without a read-back is the row as stored.
        chunks = await ledger.chunks("p1")
        assert [c.biz_id for c in chunks] == [f"b{n}" for n in range(1, 41)]
    finally:
        await ledger.aclose()


async def test_a_failing_write_fails_alone_in_its_group(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = await SqliteLedger.open(path)
    try:
        await confirmed(ledger, plan("p1", chunks=3))
        sizes = _count_groups(ledger)

        def broken(db: sqlite3.Connection) -> None:
            db.execute("UPDATE chunks SET state = 'sending' WHERE plan_id = 'p1' AND chunk_no = 2")  # rolled back
            db.execute("INSERT INTO no_such_table VALUES (1)")

        results: dict[str, Any] = {}

        async def claim(n: int) -> None:
            results[f"claim{n}"] = (await ledger.claim_chunk("p1", n, LEASE, T0 + 2, SendLimits())).status

        async def bad() -> None:
            with pytest.raises(LedgerUnavailable):
                await ledger._write(broken)
            results["bad"] = "raised"

        async with anyio.create_task_group() as tg:
            tg.start_soon(claim, 1)
            tg.start_soon(bad)
            tg.start_soon(claim, 3)
        assert results == {"claim1": ClaimStatus.CLAIMED, "bad": "raised", "claim3": ClaimStatus.CLAIMED}
        assert max(sizes) >= 2, sizes  # they did share a group
        assert _states(path, "p1") == {1: "sending", 2: "pending", 3: "sending"}
    finally:
        await ledger.aclose()


async def test_a_write_cancelled_before_its_group_took_it_never_runs(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = await SqliteLedger.open(path)
    try:
        await confirmed(ledger, plan("p1", chunks=2))
        release = anyio.Event()
        started = anyio.Event()

        def slow(db: sqlite3.Connection) -> None:  # holds the writer: the next writes queue up behind it
            anyio.from_thread.run_sync(started.set)
            anyio.from_thread.run(release.wait)

        async with anyio.create_task_group() as tg:
            tg.start_soon(ledger._write, slow)
            await started.wait()
            with anyio.CancelScope() as scope:
                scope.cancel()  # (the claim is queued, then its caller gives up)
                await ledger.claim_chunk("p1", 1, LEASE, T0 + 2, SendLimits())
            tg.start_soon(ledger.claim_chunk, "p1", 2, LEASE, T0 + 2, SendLimits())
            await anyio.sleep(0.05)
            release.set()
        assert _states(path, "p1") == {1: "pending", 2: "sending"}
        assert ledger._queue == [] and ledger._committing is None
    finally:
        await ledger.aclose()
