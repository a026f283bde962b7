"""The PostgreSQL adapter of the ledger port: one ledger shared by every replica of a team gateway.

Selected by ``SMS_MCP_LEDGER_URL=postgresql://…``. psycopg 3, async, over a bounded connection pool; the schema
is created and migrated on start (:mod:`sms_mcp.ledger.pg_schema`, versioned, safe when replicas start at once).

How the port's guarantees hold across replicas:

* **Claims are compare-and-set.** Every state change is one ``UPDATE … WHERE state = ANY(<sources>)`` built from
  :func:`sms_mcp.core.lifecycle.transition`. PostgreSQL re-checks the ``WHERE`` of a row another transaction
  changed concurrently once that one commits (READ COMMITTED), so of N concurrent confirmations on N replicas
  exactly one matches; the others change nothing and read the winner's state.
* **Chunk ownership by lease.** A chunk claim, a lease renewal and recovery each lock the plan's row first
  (``SELECT … FOR UPDATE``), so "the owner's lease is still valid" and "the owner's lease expired" are never
  decided at the same time: a claim either happens before recovery (and its chunk carries a fresh lease) or
  after it (and finds the plan's lease gone).
* **Budgets are atomic across replicas.** The daily budget, the per-principal budget and the per-number
  flow-control mirror are checked and counted inside the claim's transaction, under transaction-scoped advisory
  locks (one per budget and one per number, taken in a fixed order so two claims cannot deadlock). Two
  confirmations on different replicas that would pass a limit together serialise on the lock, and the second
  counts the first's messages. Why locks and not SERIALIZABLE: the contended case (many confirmations to the
  same numbers, or any confirmations under a daily limit) is exactly where SERIALIZABLE aborts and retries
  most; a short critical section under an explicit lock never aborts and never needs a retry loop. Why advisory
  locks and not ``FOR UPDATE`` on counter rows: the keys (numbers, principals) need no rows to exist first.
* **PostgreSQL down.** Every driver failure that means "the database cannot be reached or cannot write"
  becomes :class:`~sms_mcp.core.ports.LedgerUnavailable` (never a driver exception). A claim whose commit did
  not answer raised before the API call, so nothing is sent without a durable intent; if that commit did land,
  the chunk's lease expires and recovery makes it ``unknown`` (reconciled, never resent). A connection the
  database closed while it sat in the pool (a restart) is replaced and the call run again when that is safe (a
  read, or a write whose BEGIN failed), so a replica recovers by itself when the database is back.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from sms_mcp.core.lifecycle import (
    ABANDON_CHUNK,
    CHUNK_NOTHING_SENT,
    CHUNK_OPEN,
    CLAIM_CHUNK,
    CONFIRM,
    DECLINE,
    ORPHAN_CHUNK,
    REFUSE_CHUNK,
    ChunkState,
    PlanState,
    transition,
)
from sms_mcp.core.limits import evaluate
from sms_mcp.core.ports import (
    ChunkAnswer,
    ChunkClaim,
    ChunkRecord,
    ClaimStatus,
    Lease,
    LedgerHealth,
    LedgerUnavailable,
    NewPlan,
    PlanChange,
    PlanRecord,
    Principal,
    Recipient,
    Recovered,
    SendLimits,
    SentMessage,
)
from sms_mcp.ledger.pg_schema import SchemaTooNew, migrate

#: Connections one replica keeps at most. A tool call holds one for a single short transaction, never across an
#: API call, so a few serve many concurrent calls; PostgreSQL's max_connections must cover replicas x this.
POOL_SIZE = 10
#: How long a call waits for a connection before answering "ledger unavailable" (the database is down or the
#: pool is exhausted), and the connect timeout of each new connection.
ACQUIRE_TIMEOUT = 5.0

#: Bounds on waiting inside the database, so that no call hangs on a replica that froze mid-transaction: a lock
#: (another claim's budget lock) is waited for at most LOCK_TIMEOUT, a statement runs at most STATEMENT_TIMEOUT,
#: and a session left idle inside a transaction (its process stopped) is ended after IDLE_IN_TRANSACTION, which
#: releases its locks. Our transactions never wait on anything but the database (never on an API call).
LOCK_TIMEOUT = 10.0
STATEMENT_TIMEOUT = 30.0
IDLE_IN_TRANSACTION = 30.0

T = TypeVar("T")

# What recovery records (the same codes and words as the SQLite adapter's).
ORPHAN_CODE = "sms_mcp.OUTCOME_UNKNOWN"
ORPHAN_MESSAGE = "The sending process stopped (its lease expired) before it recorded an answer."
ABANDON_CODE = "sms_mcp.CONFIRMATION_LOST"
ABANDON_MESSAGE = "The process that confirmed this plan stopped before it sent this part; it was never sent."


def _lock_key(key: str) -> int:
    """A stable signed 64-bit advisory-lock key for a budget or number (a collision only serialises more)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


def _json(value: Any) -> str:
    """JSON text with every non-ASCII character escaped: storable whatever the strings hold (NUL, surrogates)."""
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"))


def _text(value: str | None) -> str | None:
    """A diagnostic from the provider (error code and message, request and biz ids) as PostgreSQL text can hold
    it: NUL and unpaired surrogates replaced. Only these are altered; what identifies a send never is."""
    if value is None:
        return None
    return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def _budget_keys(limits: SendLimits, subject: str, numbers: Sequence[str]) -> list[str]:
    """The advisory locks a claim takes: one per budget it is checked against and one per number (flow control),
    in one fixed order (sorted) in every transaction, so that no two claims can wait for each other in a cycle."""
    keys: list[str] = []
    if limits.daily_limit is not None:
        keys.append("daily")
    if limits.principal_daily_limit is not None:
        keys.append(f"principal:{subject}")
    if limits.flow_windows:
        keys += [f"number:{n}" for n in numbers]
    return sorted(keys)


def redact(url: str) -> str:
    """The URL without credentials (host, port and database only): what logs and answers may show."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        parts = conninfo_to_dict(url)
    except Exception:  # an unparsable URL: name nothing of it
        return "postgresql://(unparsable URL)"
    host = str(parts.get("host") or "localhost")
    if "/" in host:
        host = f"[socket {host}]"
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{host}{port}/{parts.get('dbname') or ''}"


def _unavailable_errors() -> tuple[type[BaseException], ...]:
    import psycopg
    from psycopg import errors
    from psycopg_pool import PoolClosed, PoolTimeout

    return (psycopg.OperationalError, psycopg.InterfaceError, errors.ReadOnlySqlTransaction, PoolTimeout,
            PoolClosed, OSError)


class PostgresLedger:
    """The ledger port on PostgreSQL. Create with :meth:`open` (connects, migrates); close with :meth:`aclose`."""

    def __init__(self, url: str, *, pool_size: int = POOL_SIZE, acquire_timeout: float = ACQUIRE_TIMEOUT,
                 lock_timeout: float = LOCK_TIMEOUT, statement_timeout: float = STATEMENT_TIMEOUT,
                 idle_in_transaction: float = IDLE_IN_TRANSACTION) -> None:
        try:
            from psycopg.rows import dict_row
            from psycopg_pool import AsyncConnectionPool
        except ImportError:  # pragma: no cover - the extra is part of the test install
            raise LedgerUnavailable(
                redact(url), "the PostgreSQL driver is not installed",
                "Install it with: pip install 'sms-mcp[postgres]'",
            ) from None
        self.location = redact(url)
        self._url = url
        self._pool_size = pool_size
        self._acquire_timeout = acquire_timeout
        self._idle_in_transaction = idle_in_transaction
        self._unavailable = _unavailable_errors()
        #: Set while the last attempt found the database unreachable: calls then probe it directly and fail at
        #: once, instead of each waiting ``acquire_timeout`` for a pool connection that cannot come.
        self._down_since: float | None = None
        self._pool = AsyncConnectionPool(
            url, min_size=1, max_size=pool_size, open=False, timeout=acquire_timeout,
            # No check before lending a connection (a round trip per call): a connection the database closed
            # (a restart) fails on its first statement, and _run replaces it and runs the call again.
            # Give up reconnecting in the background at once and reconnect on demand: the first call after the
            # database is back connects, instead of waiting for a back-off timer.
            reconnect_timeout=0.0,
            kwargs={"autocommit": True, "row_factory": dict_row, "connect_timeout": max(1, int(acquire_timeout)),
                    "application_name": "sms-mcp",
                    "options": f"-c lock_timeout={int(lock_timeout * 1000)} "
                               f"-c statement_timeout={int(statement_timeout * 1000)} "
                               f"-c idle_in_transaction_session_timeout={int(idle_in_transaction * 1000)}"},
            name="sms-mcp-ledger",
        )

    @classmethod
    async def open(cls, url: str, **kwargs: Any) -> PostgresLedger:
        """Connect and bring the schema up to date; LedgerUnavailable (one clear line) when that fails."""
        ledger = cls(url, **kwargs)
        try:
            cause = await ledger._probe()  # a refused connection or a wrong password: say so at once
            if cause is not None:
                raise ledger._unreachable(cause)
            await ledger._pool.open(wait=False)
            await ledger._read(migrate)
        except SchemaTooNew as exc:
            await ledger.aclose()
            raise LedgerUnavailable(ledger.location, str(exc).split(";")[0],
                                    "Upgrade sms-mcp on this replica.") from None
        except BaseException:
            await ledger.aclose()
            raise
        return ledger

    async def aclose(self) -> None:
        await self._pool.close()

    # ------------------------------------------------------------------ plumbing
    async def _probe(self) -> BaseException | None:
        """One direct connection attempt, outside the pool: None if the database answers, else why not."""
        from psycopg import AsyncConnection

        try:
            probe = await AsyncConnection.connect(self._url, connect_timeout=max(1, int(self._acquire_timeout)))
        except Exception as cause:
            return cause
        await probe.close()
        return None

    def _unreachable(self, exc: BaseException) -> LedgerUnavailable:
        if self._down_since is None:
            self._down_since = time.monotonic()
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        return LedgerUnavailable(
            self.location, f"PostgreSQL cannot be reached or cannot write ({first})",
            "Check that the database is running and reachable; sms-mcp reconnects by itself when it is back.",
        )

    async def _down(self, exc: BaseException) -> LedgerUnavailable:
        from psycopg import errors
        from psycopg_pool import PoolTimeout

        if isinstance(exc, (errors.LockNotAvailable, errors.QueryCanceled)):
            # The database answered: a lock or a statement took longer than its bound (another replica froze
            # mid-transaction, or the database is overloaded). Nothing of this call was committed.
            return LedgerUnavailable(
                self.location, "PostgreSQL did not finish in time (a lock or statement timeout)",
                "Another replica may be stuck inside a transaction (its session is ended after "
                f"{self._idle_in_transaction:g} s of inactivity) or the database is overloaded; try again shortly.",
            )
        if isinstance(exc, PoolTimeout):
            # The pool only says it waited; one direct attempt tells "down" (and why) from "busy".
            cause = await self._probe()
            if cause is None:
                return LedgerUnavailable(
                    self.location, f"all {self._pool_size} ledger connections stayed busy",
                    "The database is reachable but overloaded; try again shortly.",
                )
            exc = cause
        return self._unreachable(exc)

    async def _read(self, work: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``work(conn)`` on a pooled connection in autocommit mode (reads; each statement its own)."""
        return await self._run(work, write=False)

    async def _write(self, work: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``work(conn)`` in one transaction: committed when it returns, rolled back when it raises."""
        return await self._run(work, write=True)

    async def _run(self, work: Callable[[Any], Awaitable[T]], *, write: bool) -> T:
        from psycopg import DataError, OperationalError

        if self._down_since is not None:  # the last call found the database unreachable: is it back?
            await self._reconnect()
        for attempt in (1, 2):
            begun = False
            try:
                async with self._pool.connection() as conn:
                    if write:
                        async with conn.transaction():
                            begun = True
                            result = await work(conn)
                    else:
                        result = await work(conn)
                return result
            except self._unavailable as exc:
                # A pooled connection that the database closed while it sat idle (a restart) fails on its first
                # statement. Safe to run again on a fresh connection: a read, or a write whose BEGIN failed (so
                # none of its statements reached the database). A write that failed later is never repeated.
                stale = (isinstance(exc, OperationalError) and exc.sqlstate is None  # no answer: the socket died
                         and (not write or not begun) and attempt == 1)
                if not stale:
                    raise await self._down(exc) from None
                await self._reconnect(force=True)
            except (DataError, UnicodeError) as exc:  # e.g. NUL in a principal's name: rolled back, nothing kept
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                raise LedgerUnavailable(
                    self.location, f"PostgreSQL cannot store a value of this call ({first})",
                    "Nothing of this call was recorded; remove control characters from the request.",
                ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _reconnect(self, force: bool = False) -> None:
        """After a connection failure: fail at once (LedgerUnavailable) while the database does not answer;
        once it does, have the pool test its idle connections and replace the dead ones, all at once."""
        cause = await self._probe()
        if cause is not None:
            raise self._unreachable(cause)
        if self._down_since is not None or force:
            self._down_since = None
            await self._pool.check()

    @staticmethod
    async def _one(conn: Any, sql: str, args: Sequence[Any] = ()) -> dict[str, Any] | None:
        cur = await conn.execute(sql, args)
        return await cur.fetchone()

    @staticmethod
    def _plan(row: dict[str, Any] | None) -> PlanRecord | None:
        if row is None:
            return None
        return PlanRecord(
            plan_id=row["plan_id"], tool=row["tool"], args_hash=row["args_hash"], content_hash=row["content_hash"],
            principal=Principal(row["principal_subject"], row["principal_client"]),
            template_code=row["template_code"], template_type=row["template_type"], state=PlanState(row["state"]),
            created_at=row["created_at"], expires_at=row["expires_at"], sent_at=row["sent_at"],
            owner=row["owner"], lease_expires=row["lease_expires"], summary=json.loads(row["summary"]),
        )

    @staticmethod
    def _chunk(row: dict[str, Any]) -> ChunkRecord:
        body = json.loads(row["body"])
        return ChunkRecord(
            plan_id=row["plan_id"], chunk_no=row["chunk_no"], state=ChunkState(row["state"]),
            action=body["action"], params=body["params"],
            recipients=tuple(Recipient(number, sign) for number, sign in body["recipients"]),
            out_id=body["out_id"], owner=row["owner"], claimed_at=row["claimed_at"],
            lease_expires=row["lease_expires"], biz_id=row["biz_id"], request_id=row["request_id"],
            error_code=row["error_code"], error_message=row["error_message"],
        )

    # ------------------------------------------------------------------ health
    async def health(self) -> LedgerHealth:
        async def work(conn: Any) -> Any:
            version = await self._one(conn, "SELECT COALESCE(MAX(version), 0) AS v FROM schema_version")
            plans = await self._one(conn, "SELECT COUNT(*) AS n FROM plans")
            return LedgerHealth(location=self.location, schema_version=int(version["v"] if version else 0),
                                plans=int(plans["n"] if plans else 0))

        return await self._read(work)

    # ------------------------------------------------------------------ plans
    async def create_plan(self, plan: NewPlan) -> None:
        async def work(conn: Any) -> Any:
            await conn.execute(
                "INSERT INTO plans (plan_id, token_hash, tool, args_hash, content_hash, principal_subject, "
                "principal_client, template_code, template_type, state, created_at, expires_at, updated_at, "
                "summary) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (plan.plan_id, plan.token_hash, plan.tool, plan.args_hash, plan.content_hash,
                 plan.principal.subject, plan.principal.client_id, plan.template_code, plan.template_type,
                 PlanState.PREPARED.value, plan.created_at, plan.expires_at, plan.created_at,
                 _json(dict(plan.summary))),
            )
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO chunks (plan_id, chunk_no, state, body, updated_at) VALUES (%s, %s, %s, %s, %s)",
                    [(plan.plan_id, c.chunk_no, ChunkState.PENDING.value,
                      _json({"action": c.action, "params": dict(c.params), "out_id": c.out_id,
                             "recipients": [[r.number, r.sign_name] for r in c.recipients]}), plan.created_at)
                     for c in plan.chunks],
                )

        return await self._write(work)

    async def plan_by_token(self, token_hash: str) -> PlanRecord | None:
        async def work(conn: Any) -> Any:
            return self._plan(await self._one(conn, "SELECT * FROM plans WHERE token_hash = %s", (token_hash,)))

        return await self._read(work)

    async def get_plan(self, plan_id: str) -> PlanRecord | None:
        async def work(conn: Any) -> Any:
            return self._plan(await self._one(conn, "SELECT * FROM plans WHERE plan_id = %s", (plan_id,)))

        return await self._read(work)

    async def confirm_plan(self, plan_id: str, principal: Principal, lease: Lease, now: float) -> PlanChange:
        async def work(conn: Any) -> Any:
            row = await self._one(
                conn,
                "UPDATE plans SET state = %s, sent_at = %s, updated_at = %s, owner = %s, lease_expires = %s "
                "WHERE plan_id = %s AND state = ANY(%s) AND expires_at > %s "
                "AND principal_subject = %s AND principal_client = %s RETURNING *",
                (CONFIRM.target.value, now, now, lease.owner, now + lease.seconds, plan_id,
                 list(CONFIRM.source_values), now, principal.subject, principal.client_id),
            )
            if row is not None:
                return PlanChange(True, self._plan(row))
            return PlanChange(False, await self._current_plan(conn, plan_id))

        return await self._write(work)

    async def decline_plan(self, plan_id: str, principal: Principal, now: float) -> PlanChange:
        async def work(conn: Any) -> Any:
            row = await self._one(
                conn,
                "UPDATE plans SET state = %s, updated_at = %s WHERE plan_id = %s AND state = ANY(%s) "
                "AND principal_subject = %s AND principal_client = %s RETURNING *",
                (DECLINE.target.value, now, plan_id, list(DECLINE.source_values), principal.subject,
                 principal.client_id),
            )
            if row is not None:
                return PlanChange(True, self._plan(row))
            return PlanChange(False, await self._current_plan(conn, plan_id))

        return await self._write(work)

    async def _current_plan(self, conn: Any, plan_id: str) -> PlanRecord | None:
        """The plan as it is now (the winner's state), read in the loser's transaction after the winner's commit.
        Whether the caller may see it (its principal) is the domain's decision, as with the SQLite adapter."""
        return self._plan(await self._one(conn, "SELECT * FROM plans WHERE plan_id = %s", (plan_id,)))

    async def renew_lease(self, plan_id: str, lease: Lease, now: float) -> bool:
        until = now + lease.seconds

        async def work(conn: Any) -> Any:
            cur = await conn.execute(
                "UPDATE plans SET lease_expires = %s WHERE plan_id = %s AND state = %s AND owner = %s "
                "AND lease_expires > %s",
                (until, plan_id, PlanState.SENDING.value, lease.owner, now),
            )
            if cur.rowcount != 1:
                return False
            await conn.execute(
                "UPDATE chunks SET lease_expires = %s WHERE plan_id = %s AND state = %s AND owner = %s "
                "AND lease_expires > %s",
                (until, plan_id, ChunkState.SENDING.value, lease.owner, now),
            )
            return True

        return await self._write(work)

    async def outstanding_like(self, content_hash: str) -> str | None:
        async def work(conn: Any) -> Any:
            row = await self._one(
                conn,
                "SELECT p.plan_id FROM plans p WHERE p.content_hash = %s AND p.state = %s AND EXISTS ("
                "SELECT 1 FROM chunks c WHERE c.plan_id = p.plan_id AND c.state = ANY(%s)) "
                "ORDER BY p.created_at LIMIT 1",
                (content_hash, PlanState.SENDING.value, sorted(s.value for s in CHUNK_OPEN)),
            )
            return row["plan_id"] if row else None

        return await self._read(work)

    # ------------------------------------------------------------------ chunks
    async def chunks(self, plan_id: str) -> list[ChunkRecord]:
        async def work(conn: Any) -> Any:
            cur = await conn.execute("SELECT * FROM chunks WHERE plan_id = %s ORDER BY chunk_no", (plan_id,))
            return [self._chunk(row) for row in await cur.fetchall()]

        return await self._read(work)

    async def claim_chunk(
        self, plan_id: str, chunk_no: int, lease: Lease, now: float, limits: SendLimits
    ) -> ChunkClaim:
        # Round trips matter here (every send makes one claim): statements that do not depend on each other's
        # answers go out together in a pipeline. PostgreSQL still runs them one after another, in this order.
        async def work(conn: Any) -> Any:
            async with conn.pipeline() as pipeline:  # the plan's row first, as renewal and recovery lock it
                plan_cur = await conn.execute(
                    "SELECT state, owner, lease_expires, principal_subject, template_code FROM plans "
                    "WHERE plan_id = %s FOR UPDATE", (plan_id,))
                chunk_cur = await conn.execute(
                    "SELECT * FROM chunks WHERE plan_id = %s AND chunk_no = %s FOR UPDATE", (plan_id, chunk_no))
                await pipeline.sync()
            plan, row = await plan_cur.fetchone(), await chunk_cur.fetchone()
            if row is None or plan is None:
                return ChunkClaim(ClaimStatus.TAKEN, None)
            chunk = self._chunk(row)
            lease_valid = (plan["state"] == PlanState.SENDING.value and plan["owner"] == lease.owner
                           and plan["lease_expires"] is not None and plan["lease_expires"] > now)
            if not lease_valid:
                return ChunkClaim(ClaimStatus.LEASE_LOST, chunk)
            if chunk.state.value not in CLAIM_CHUNK.source_values:
                return ChunkClaim(ClaimStatus.TAKEN, chunk)

            subject = plan["principal_subject"]
            numbers = sorted({r.number for r in chunk.recipients})
            daily = mine = recent = None
            async with conn.pipeline() as pipeline:
                # The budget locks, then (under them) what the budgets have used.
                for key in _budget_keys(limits, subject, numbers):
                    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(key),))
                if limits.daily_limit is not None:
                    daily = await conn.execute("SELECT COUNT(*) AS n FROM sends WHERE sent_at >= %s",
                                               (limits.day_start,))
                if limits.principal_daily_limit is not None:
                    mine = await conn.execute(
                        "SELECT COUNT(*) AS n FROM sends WHERE principal_subject = %s AND sent_at >= %s",
                        (subject, limits.day_start))
                if limits.history_since is not None:
                    recent = await conn.execute(
                        "SELECT number, sign_name, template_code, sent_at FROM sends "
                        "WHERE number = ANY(%s) AND sent_at >= %s", (numbers, limits.history_since))
                await pipeline.sync()
            used_today = int((await daily.fetchone())["n"]) if daily is not None else 0
            used_by_principal = int((await mine.fetchone())["n"]) if mine is not None else 0
            history = [SentMessage(r["number"], r["sign_name"], r["template_code"], r["sent_at"])
                       for r in await recent.fetchall()] if recent is not None else []
            refusal = evaluate(limits, plan["template_code"], chunk.recipients, used_today=used_today,
                               used_today_by_principal=used_by_principal, history=history)
            if refusal is not None:
                refused = await self._one(
                    conn,
                    "UPDATE chunks SET state = %s, error_code = %s, error_message = %s, updated_at = %s "
                    "WHERE plan_id = %s AND chunk_no = %s AND state = ANY(%s) RETURNING *",
                    (REFUSE_CHUNK.target.value, refusal.code, refusal.message, now, plan_id, chunk_no,
                     list(REFUSE_CHUNK.source_values)),
                )
                return ChunkClaim(ClaimStatus.REFUSED, self._chunk(refused) if refused else chunk, refusal)

            async with conn.pipeline() as pipeline, conn.cursor() as inserts:
                claim_cur = await conn.execute(
                    "UPDATE chunks SET state = %s, owner = %s, claimed_at = %s, lease_expires = %s, updated_at = %s "
                    "WHERE plan_id = %s AND chunk_no = %s AND state = ANY(%s) RETURNING *",
                    (CLAIM_CHUNK.target.value, lease.owner, now, now + lease.seconds, now, plan_id, chunk_no,
                     list(CLAIM_CHUNK.source_values)),
                )
                await inserts.executemany(
                    "INSERT INTO sends (number, sign_name, template_code, principal_subject, sent_at, plan_id, "
                    "chunk_no) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    [(r.number, r.sign_name, plan["template_code"], subject, now, plan_id, chunk_no)
                     for r in chunk.recipients],
                )
                await pipeline.sync()
            claimed = await claim_cur.fetchone()
            if claimed is None:  # cannot happen under the row lock; raising rolls back the rows just counted
                raise RuntimeError(f"chunk {plan_id}/{chunk_no} changed under its row lock")
            return ChunkClaim(ClaimStatus.CLAIMED, self._chunk(claimed))

        return await self._write(work)

    async def settle_chunk(
        self, plan_id: str, chunk_no: int, sources: frozenset[ChunkState], target: ChunkState,
        answer: ChunkAnswer, now: float,
    ) -> bool:
        change = transition(sources, target)  # refuses a move the lifecycle does not allow (a bug, not a race)
        async def work(conn: Any) -> Any:
            cur = await conn.execute(
                "UPDATE chunks SET state = %s, biz_id = COALESCE(%s, biz_id), "
                "request_id = COALESCE(%s, request_id), error_code = %s, error_message = %s, updated_at = %s "
                "WHERE plan_id = %s AND chunk_no = %s AND state = ANY(%s)",
                (change.target.value, _text(answer.biz_id), _text(answer.request_id), _text(answer.error_code),
                 _text(answer.error_message),
                 now, plan_id, chunk_no, list(change.source_values)),
            )
            if cur.rowcount != 1:
                return False
            if change.target in CHUNK_NOTHING_SENT:  # nothing reached a handset: release its budget
                await conn.execute("DELETE FROM sends WHERE plan_id = %s AND chunk_no = %s", (plan_id, chunk_no))
            return True

        return await self._write(work)

    async def recover(self, plan_id: str, now: float) -> list[Recovered]:
        async def work(conn: Any) -> Any:
            recovered: list[Recovered] = []
            plan = await self._one(conn, "SELECT state, lease_expires FROM plans WHERE plan_id = %s FOR UPDATE",
                                   (plan_id,))
            if plan is None or plan["state"] != PlanState.SENDING.value:
                return []
            cur = await conn.execute(
                "UPDATE chunks SET state = %s, error_code = %s, error_message = %s, updated_at = %s "
                "WHERE plan_id = %s AND state = ANY(%s) AND lease_expires <= %s RETURNING chunk_no",
                (ORPHAN_CHUNK.target.value, ORPHAN_CODE, ORPHAN_MESSAGE, now, plan_id,
                 list(ORPHAN_CHUNK.source_values), now),
            )
            recovered += [Recovered(r["chunk_no"], ChunkState.SENDING, ORPHAN_CHUNK.target)
                          for r in await cur.fetchall()]
            if plan["lease_expires"] is None or plan["lease_expires"] <= now:
                cur = await conn.execute(
                    "UPDATE chunks SET state = %s, error_code = %s, error_message = %s, updated_at = %s "
                    "WHERE plan_id = %s AND state = ANY(%s) RETURNING chunk_no",
                    (ABANDON_CHUNK.target.value, ABANDON_CODE, ABANDON_MESSAGE, now, plan_id,
                     list(ABANDON_CHUNK.source_values)),
                )
                recovered += [Recovered(r["chunk_no"], ChunkState.PENDING, ABANDON_CHUNK.target)
                              for r in await cur.fetchall()]
            return sorted(recovered, key=lambda r: r.chunk_no)

        return await self._write(work)

    # ------------------------------------------------------------------ history
    async def sends_since(self, since: float, principal: Principal | None = None) -> int:
        async def work(conn: Any) -> Any:
            if principal is None:
                row = await self._one(conn, "SELECT COUNT(*) AS n FROM sends WHERE sent_at >= %s", (since,))
            else:
                row = await self._one(
                    conn, "SELECT COUNT(*) AS n FROM sends WHERE principal_subject = %s AND sent_at >= %s",
                    (principal.subject, since),
                )
            return int(row["n"]) if row else 0

        return await self._read(work)

    async def recent_sends(self, since: float, numbers: Sequence[str]) -> list[SentMessage]:
        async def work(conn: Any) -> Any:
            cur = await conn.execute(
                "SELECT number, sign_name, template_code, sent_at FROM sends WHERE number = ANY(%s) "
                "AND sent_at >= %s ORDER BY sent_at", (sorted(set(numbers)), since),
            )
            return [SentMessage(r["number"], r["sign_name"], r["template_code"], r["sent_at"])
                    for r in await cur.fetchall()]


        return await self._read(work)
