"""PostgreSQL-only behaviour of the ledger adapter, on real servers (tests/pg_server.py): the versioned schema and
its migration when replicas start at once, and what happens while PostgreSQL is down (stopped, or killed like a
crash) and after it is back. The port's contract itself is tests/test_ledger_contract_postgres.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_contract import ALICE, LEASE, T0, confirmed, plan, token_hash
from pg_server import PostgresServer, postgres_for_tests
from psycopg import AsyncConnection

from sms_mcp.core.lifecycle import ChunkState, PlanState
from sms_mcp.core.ports import ChunkAnswer, LedgerUnavailable, Principal, SendLimits
from sms_mcp.ledger.pg_schema import LATEST
from sms_mcp.ledger.postgres import PostgresLedger, redact

ROOT = Path(__file__).resolve().parent.parent


def _database(url: str) -> str:
    return url.rsplit("/", 1)[1]


# ---------------------------------------------------------------------------------------------- schema
async def test_schema_is_created_versioned_and_reopened_without_change(pg_server: PostgresServer) -> None:
    url = pg_server.create_database()
    first = await PostgresLedger.open(url)
    await first.create_plan(plan("p1"))
    await first.aclose()
    again = await PostgresLedger.open(url)  # a restart: nothing to migrate, nothing lost
    assert (await again.health()).schema_version == LATEST
    assert (await again.get_plan("p1")) is not None
    await again.aclose()
    rows = pg_server.psql(_database(url), "SELECT version FROM schema_version ORDER BY version")
    assert rows.splitlines() == [str(v) for v in range(1, LATEST + 1)]


def test_replicas_starting_at_once_migrate_exactly_once(pg_server: PostgresServer) -> None:
    """Eight real processes open the same empty database at the same moment (a barrier file releases them)."""
    url = pg_server.create_database()
    go = pg_server.root / f"go-{_database(url)}"
    script = textwrap.dedent(f"""
        import asyncio, os, sys, time
        from sms_mcp.ledger.postgres import PostgresLedger
        async def main():
            while not os.path.exists({str(go)!r}):
                time.sleep(0.005)
            ledger = await PostgresLedger.open(sys.argv[1])
            print((await ledger.health()).schema_version)
            await ledger.aclose()
        asyncio.run(main())
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=ROOT) for _ in range(8)]
    time.sleep(1.0)  # let them all import and wait at the barrier
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [err[-500:] for _, err in outs]
    assert [out.strip() for out, _ in outs] == [str(LATEST)] * 8
    assert pg_server.psql(_database(url), "SELECT COUNT(*) FROM schema_version") == str(LATEST)


async def test_a_newer_schema_is_refused_with_one_clear_line(pg_server: PostgresServer) -> None:
    url = pg_server.create_database()
    (await PostgresLedger.open(url)).location  # noqa: B018 - migrate it
    pg_server.psql(_database(url), "INSERT INTO schema_version (version, description) VALUES (99, 'the future')")
    with pytest.raises(LedgerUnavailable) as refused:
        await PostgresLedger.open(url)
    assert "schema version 99" in str(refused.value) and "Upgrade sms-mcp" in str(refused.value)
    assert pg_server.password not in str(refused.value)


async def test_a_failed_migration_changes_nothing(pg_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL's DDL is transactional: a migration step that fails leaves the version and tables as they were."""
    from sms_mcp.ledger import pg_schema

    url = pg_server.create_database()
    broken = (*pg_schema.MIGRATIONS, (LATEST + 1, "broken", "CREATE TABLE half_done (x INT); SELECT 1/0;"))
    monkeypatch.setattr(pg_schema, "MIGRATIONS", broken)
    monkeypatch.setattr(pg_schema, "LATEST", LATEST + 1)
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        with pytest.raises(Exception, match="division by zero"):
            await pg_schema.migrate(conn)
    assert pg_server.psql(_database(url), "SELECT to_regclass('schema_version') IS NULL") == "t"
    assert pg_server.psql(_database(url), "SELECT to_regclass('half_done') IS NULL") == "t"


# ---------------------------------------------------------------------------------------------- credentials
async def test_location_and_errors_never_show_the_password(pg_server: PostgresServer) -> None:
    url = pg_server.create_database()
    ledger = await PostgresLedger.open(url)
    try:
        health = await ledger.health()
        assert health.location == f"postgresql://127.0.0.1:{pg_server.port}/{_database(url)}"
        assert pg_server.password not in health.location
    finally:
        await ledger.aclose()
    wrong = url.replace(pg_server.password, "not-the-password")
    started = time.monotonic()
    with pytest.raises(LedgerUnavailable) as refused:
        await PostgresLedger.open(wrong)
    assert "password authentication failed" in refused.value.reason
    assert "not-the-password" not in str(refused.value) and pg_server.password not in str(refused.value)
    assert time.monotonic() - started < 30
    assert redact("postgresql://u:secret@/db?host=/tmp/x") == "postgresql://[socket /tmp/x]/db"
    assert "secret" not in redact("postgresql://u:secret@h:5/db") and redact("::not a url::").startswith("postgresql")


async def test_the_unix_socket_url_works(pg_server: PostgresServer) -> None:
    url = pg_server.create_database()
    ledger = await PostgresLedger.open(pg_server.socket_url(_database(url)))
    try:
        assert (await ledger.health()).location.startswith("postgresql://[socket ")
    finally:
        await ledger.aclose()


# ---------------------------------------------------------------------------------------------- PostgreSQL down
@pytest.fixture(scope="module")
def own_server() -> Iterator[PostgresServer]:
    """A server of its own, so that stopping it disturbs no other test."""
    with postgres_for_tests() as server:
        yield server


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_postgres_down_gives_a_clear_error_and_the_adapter_recovers_by_itself(
    own_server: PostgresServer, how: str
) -> None:
    if not own_server.running():
        own_server.start()
    url = own_server.create_database()
    ledger = await PostgresLedger.open(url, acquire_timeout=3.0)
    try:
        await confirmed(ledger, plan("p1", chunks=2))
        assert (await ledger.claim_chunk("p1", 1, LEASE, T0 + 2, SendLimits())).status.value == "claimed"

        own_server.stop("fast") if how == "stop" else own_server.kill()
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "health": ledger.health,
            "get_plan": lambda: ledger.get_plan("p1"),
            "plan_by_token": lambda: ledger.plan_by_token(token_hash("p1")),
            "chunks": lambda: ledger.chunks("p1"),
            "claim_chunk": lambda: ledger.claim_chunk("p1", 2, LEASE, T0 + 3, SendLimits(daily_limit=10)),
            "confirm_plan": lambda: ledger.confirm_plan("p1", ALICE, LEASE, T0 + 3),
            "recover": lambda: ledger.recover("p1", T0 + 3),
            "sends_since": lambda: ledger.sends_since(0),
            "outstanding_like": lambda: ledger.outstanding_like("content-p1"),
        }
        for name, call in calls.items():
            started = time.monotonic()
            with pytest.raises(LedgerUnavailable) as down:
                await call()
            assert time.monotonic() - started < 10, name
            assert down.value.location == redact(url) and own_server.password not in str(down.value), name
            assert "PostgreSQL cannot be reached" in down.value.reason, (name, down.value.reason)
            assert "reconnects by itself" in down.value.hint

        own_server.start()
        # The same adapter instance, without being reopened: the very next call works, and nothing changed.
        chunks = await ledger.chunks("p1")
        assert [c.state for c in chunks] == [ChunkState.SENDING, ChunkState.PENDING]
        assert await ledger.sends_since(0) == 1  # the claim attempted while down wrote no intent
        claim = await ledger.claim_chunk("p1", 2, LEASE, T0 + 4, SendLimits())
        assert claim.status.value == "claimed"
        assert (await ledger.get_plan("p1")).state is PlanState.SENDING
    finally:
        if not own_server.running():
            own_server.start()
        await ledger.aclose()


async def test_open_while_postgres_is_down_refuses_with_the_cause(own_server: PostgresServer) -> None:
    url = own_server.create_database()
    own_server.stop()
    try:
        started = time.monotonic()
        with pytest.raises(LedgerUnavailable) as down:
            await PostgresLedger.open(url, acquire_timeout=3.0)
        assert time.monotonic() - started < 20
        assert "Connection refused" in down.value.reason or "connection" in down.value.reason.lower()
    finally:
        own_server.start()


async def test_a_transaction_cut_by_the_crash_leaves_no_intent(own_server: PostgresServer) -> None:
    """The database dies while a claim's transaction is open (it holds the budget lock and has written the
    chunk's intent, not committed): after the restart the chunk is still pending and nothing was counted."""
    url = own_server.create_database()
    ledger = await PostgresLedger.open(url, acquire_timeout=3.0)
    try:
        await confirmed(ledger, plan("p1"))
        await ledger.create_plan(plan("p2"))
        conn = await AsyncConnection.connect(url)  # a claim half-way, as another replica would have it
        await conn.execute("UPDATE chunks SET state = 'sending', owner = %s WHERE plan_id = 'p1'", (LEASE.owner,))
        await conn.execute("INSERT INTO sends SELECT '13800138000', 's', 't', 'alice', %s, 'p1', 1", (T0,))
        own_server.kill()
        with contextlib.suppress(Exception):
            await conn.close()
        own_server.start()
        # The pool's connections died with the server; the first call after the restart, a write, still works:
        # its BEGIN failed on the dead connection, so it ran again on a fresh one.
        assert (await ledger.confirm_plan("p2", ALICE, LEASE, T0 + 5)).won
        assert [c.state for c in await ledger.chunks("p1")] == [ChunkState.PENDING]
        assert await ledger.sends_since(0) == 0
    finally:
        if not own_server.running():
            own_server.start()
        await ledger.aclose()


# ---------------------------------------------------------------------------------------------- the CLI
def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cli(args: list[str], tmp: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SMS_MCP_", "ALIBABA_CLOUD_"))}
    base.update(SMS_MCP_BACKEND="sandbox", SMS_MCP_DATA_DIR=str(tmp / "data"), HOME=str(tmp), **env)
    return subprocess.run([sys.executable, "-m", "sms_mcp", *args], env=base, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL, cwd=ROOT)


def test_doctor_and_serve_with_a_postgres_ledger(own_server: PostgresServer, tmp_path: Path) -> None:
    if not own_server.running():
        own_server.start()
    url = own_server.create_database()
    doctor = _cli(["doctor", "--json"], tmp_path, SMS_MCP_LEDGER_URL=url)
    assert doctor.returncode == 0, doctor.stderr[-1000:]
    ledger = json.loads(doctor.stdout)["ledger"]
    assert ledger == {"location": redact(url), "ok": True, "schema_version": LATEST, "plans": 0}
    own_server.stop()
    try:
        down = _cli(["doctor"], tmp_path, SMS_MCP_LEDGER_URL=url)
        serve = _cli(["serve"], tmp_path, SMS_MCP_LEDGER_URL=url)
        http = _cli(["serve", "--http", "--port", str(_free_port())], tmp_path, SMS_MCP_LEDGER_URL=url)
    finally:
        own_server.start()
    assert http.returncode != 0 and "Traceback" not in http.stderr and redact(url) in http.stderr
    assert down.returncode != 0 and "Connection refused" in down.stderr
    # serve refuses to start, in one line naming the database (never its password), without a traceback.
    assert serve.returncode != 0 and "Traceback" not in serve.stderr
    refusal = [line for line in serve.stderr.splitlines() if "cannot serve" in line]
    assert len(refusal) == 1 and redact(url) in refusal[0] and "Connection refused" in refusal[0]
    for out in (doctor, down, serve, http):
        assert own_server.password not in out.stdout + out.stderr


def test_a_ledger_url_that_is_not_postgres_is_refused_without_echoing_it(tmp_path: Path) -> None:
    bad = _cli(["serve"], tmp_path, SMS_MCP_LEDGER_URL="mysql://u:hunter2@db/sms")
    assert bad.returncode != 0 and "SMS_MCP_LEDGER_URL=<hidden" in bad.stderr
    assert "the scheme (mysql) is not postgresql://" in bad.stderr and "hunter2" not in bad.stderr
    from sms_mcp.config import Settings

    settings = Settings.from_env({"SMS_MCP_LEDGER_URL": "postgresql://u:hunter2@db:5432/sms"})
    assert settings.ledger_url == "postgresql://u:hunter2@db:5432/sms" and "hunter2" not in repr(settings)


async def test_a_replica_frozen_inside_a_transaction_blocks_claims_only_briefly(pg_server: PostgresServer) -> None:
    """Another replica froze (SIGSTOP, a partition) while holding the daily budget's lock inside its claim's
    transaction. Claims that need that lock fail within the lock timeout with a clear error and claim nothing;
    the server ends the frozen session after the idle-in-transaction bound, and claims go through again."""
    from sms_mcp.ledger.postgres import _lock_key

    url = pg_server.create_database()
    ledger = await PostgresLedger.open(url, lock_timeout=1.0, idle_in_transaction=3.0)
    try:
        await confirmed(ledger, plan("p1"))
        frozen = await AsyncConnection.connect(url, options="-c idle_in_transaction_session_timeout=3000")
        await frozen.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key("daily"),))  # BEGIN implied; never ends
        limits = SendLimits(day_start=T0 - 3600, daily_limit=5)
        started = time.monotonic()
        with pytest.raises(LedgerUnavailable) as blocked:
            await ledger.claim_chunk("p1", 1, LEASE, T0 + 2, limits)
        assert time.monotonic() - started < 10
        assert "did not finish in time" in blocked.value.reason
        assert [c.state for c in await ledger.chunks("p1")] == [ChunkState.PENDING]
        assert await ledger.sends_since(0) == 0
        await asyncio.sleep(3.5)  # the server ends the frozen session, releasing its lock
        assert (await ledger.claim_chunk("p1", 1, LEASE, T0 + 6, limits)).status.value == "claimed"
        with contextlib.suppress(Exception):
            await frozen.close()
    finally:
        await ledger.aclose()


@pytest.mark.parametrize("ci", ["", "true"])
def test_missing_postgres_binaries_skip_locally_and_fail_under_ci(
    monkeypatch: pytest.MonkeyPatch, ci: str
) -> None:
    import pg_server

    def nothing() -> Path:
        raise pg_server.PostgresUnavailable("no PostgreSQL server binaries (test)")

    monkeypatch.setattr(pg_server, "find_bindir", nothing)
    monkeypatch.setenv("CI", ci)
    expected = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(expected, match="no PostgreSQL server binaries"), pg_server.postgres_for_tests():
        raise AssertionError("a server started without binaries")


# ---------------------------------------------------------------------------------------------- hostile strings
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=40)  # NUL, unpaired surrogates, RTL, emoji …


def test_what_will_be_sent_round_trips_exactly_whatever_it_contains(pg_server: PostgresServer) -> None:
    """PostgreSQL's text cannot hold NUL or an unpaired surrogate; the ledger must still store exactly the
    parameters, recipients and OutId that will be sent (as the SQLite ledger does), and the plan as shown."""
    loop = asyncio.new_event_loop()
    ledger = loop.run_until_complete(PostgresLedger.open(pg_server.create_database()))
    seen = 0

    async def check(value: str, out_id: str, key: str) -> None:
        nonlocal seen
        seen += 1
        base = plan(f"h{seen}")
        chunk = replace(base.chunks[0], params={**base.chunks[0].params, key: value, "OutId": out_id},
                        out_id=out_id)
        hostile = replace(base, summary={"text": value, key: [value, out_id]}, chunks=(chunk,))
        await ledger.create_plan(hostile)
        got = await ledger.get_plan(hostile.plan_id)
        assert got is not None and dict(got.summary) == dict(hostile.summary)
        (stored,) = await ledger.chunks(hostile.plan_id)
        assert dict(stored.params) == dict(chunk.params) and stored.out_id == out_id
        assert stored.recipients == chunk.recipients

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(value=ANY_TEXT, out_id=ANY_TEXT, key=ANY_TEXT)
    def round_trip(value: str, out_id: str, key: str) -> None:
        loop.run_until_complete(check(value, out_id, key))

    try:
        round_trip()
    finally:
        loop.run_until_complete(ledger.aclose())
        loop.close()


async def test_provider_text_is_stored_safely_and_bad_principals_change_nothing(pg_server: PostgresServer) -> None:
    ledger = await PostgresLedger.open(pg_server.create_database())
    try:
        await confirmed(ledger, plan("p1"))
        await ledger.claim_chunk("p1", 1, LEASE, T0 + 2, SendLimits())
        bad = ChunkAnswer(biz_id="B\x00", request_id="R\ud800", error_code="isv.X\x00", error_message="no\x00 \ud800!")
        assert await ledger.settle_chunk("p1", 1, frozenset({ChunkState.SENDING}), ChunkState.REJECTED, bad, T0 + 3)
        (chunk,) = await ledger.chunks("p1")
        assert (chunk.biz_id, chunk.error_code, chunk.error_message) == ("B\ufffd", "isv.X\ufffd", "no\ufffd ?!")
        # A principal whose name PostgreSQL cannot hold: refused with a clear reason, nothing recorded.
        stranger = replace(plan("p2"), principal=Principal("eve\x00", "cli"))
        with pytest.raises(LedgerUnavailable) as refused:
            await ledger.create_plan(stranger)
        assert "cannot store a value" in refused.value.reason
        assert await ledger.get_plan("p2") is None
    finally:
        await ledger.aclose()
