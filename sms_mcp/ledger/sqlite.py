"""The embedded ledger: SQLite in WAL mode with synchronous commits, shared safely by server processes.

The adapter of :class:`sms_mcp.core.ports.LedgerPort` that stdio users get by default (``<data dir>/
ledger.sqlite3``). SQLite is blocking, so every call runs in a worker thread: one writer connection (writes
serialise on SQLite's lock anyway; ``BEGIN IMMEDIATE`` takes it before reading what the write depends on) and
one reader connection (WAL readers never wait for a writer). While another process holds the write lock, the
event loop keeps serving pings, reads and progress.

Writes are *group-committed*: a synchronous commit costs an fsync (milliseconds on a VM disk), far more than the
work of a claim or a settle, so the writes that arrive while the writer is busy (the claims and settles of the
chunks in flight) wait for it and then run together, in arrival order, each in its own savepoint of one
transaction, and share one commit. Each caller still returns only after the commit that made its own write
durable; one write's failure rolls back only its savepoint; a failed commit fails every write of the group. A
write whose caller is cancelled before the group takes it never runs (as before: a write waiting for the
connection was never started).

Schema versions (``PRAGMA user_version``): 0 is the unversioned schema of sms-mcp 0.1 (plans, chunks, sends);
1 adds the principal, the template on the plan, and leases. A version-0 ledger is migrated in place, in one
transaction, on open; a ledger from a newer sms-mcp is refused rather than misread.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Generic, TypeVar

import anyio

from sms_mcp.core import lifecycle
from sms_mcp.core.lifecycle import ChunkState, PlanState, Transition
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
from sms_mcp.sqlite_wal import enable_wal

SCHEMA_VERSION = 1
#: Event-loop turns a group commit waits for more writes before it takes them (see _commit_group).
GATHER_TURNS = 4
#: Chunks whose decoded request and recipients a ledger keeps (about 25 kB each at 100 recipients: ~10 MB).
CONTENT_CACHE_CHUNKS = 400
T = TypeVar("T")

# Version 0 (sms-mcp 0.1.0) plus, created fresh, the version-1 columns.
SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS plans (
    plan_id           TEXT PRIMARY KEY,
    token_hash        TEXT NOT NULL UNIQUE,
    tool              TEXT NOT NULL,
    args_hash         TEXT NOT NULL,
    state             TEXT NOT NULL,
    created_at        REAL NOT NULL,
    expires_at        REAL NOT NULL,
    updated_at        REAL NOT NULL,
    sent_at           REAL,
    plan_json         TEXT NOT NULL,
    content_hash      TEXT,
    principal_subject TEXT NOT NULL DEFAULT 'local',
    principal_client  TEXT NOT NULL DEFAULT 'stdio',
    template_code     TEXT NOT NULL DEFAULT '',
    template_type     TEXT NOT NULL DEFAULT '',
    owner             TEXT,
    lease_expires     REAL
);
CREATE INDEX IF NOT EXISTS plans_args ON plans(args_hash);
CREATE INDEX IF NOT EXISTS plans_content ON plans(content_hash);
CREATE TABLE IF NOT EXISTS chunks (
    plan_id       TEXT NOT NULL,
    chunk_no      INTEGER NOT NULL,
    state         TEXT NOT NULL,
    action        TEXT NOT NULL,
    params_json   TEXT NOT NULL,
    recipients    TEXT NOT NULL,
    out_id        TEXT NOT NULL,
    owner         TEXT,
    claimed_at    REAL,
    biz_id        TEXT,
    request_id    TEXT,
    error_code    TEXT,
    error_message TEXT,
    updated_at    REAL NOT NULL,
    lease_expires REAL,
    PRIMARY KEY (plan_id, chunk_no)
);
CREATE TABLE IF NOT EXISTS sends (
    number            TEXT NOT NULL,
    sign_name         TEXT NOT NULL,
    template_code     TEXT NOT NULL,
    template_type     TEXT NOT NULL,
    sent_at           REAL NOT NULL,
    plan_id           TEXT NOT NULL,
    chunk_no          INTEGER NOT NULL,
    principal_subject TEXT NOT NULL DEFAULT 'local'
);
CREATE INDEX IF NOT EXISTS sends_number ON sends(number, sign_name);
CREATE INDEX IF NOT EXISTS sends_time ON sends(sent_at);
"""

# Version 0 -> 1. A v0 plan was made by the one local principal; its template is in its JSON; a v0 claim had no
# lease (its owner was judged by pid), so it gets one of the length v0 allowed a call (read + connect + 30 s).
MIGRATE_0_TO_1 = [
    "ALTER TABLE plans ADD COLUMN principal_subject TEXT NOT NULL DEFAULT 'local'",
    "ALTER TABLE plans ADD COLUMN principal_client TEXT NOT NULL DEFAULT 'stdio'",
    "ALTER TABLE plans ADD COLUMN template_code TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE plans ADD COLUMN template_type TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE plans ADD COLUMN owner TEXT",
    "ALTER TABLE plans ADD COLUMN lease_expires REAL",
    "ALTER TABLE chunks ADD COLUMN lease_expires REAL",
    "ALTER TABLE sends ADD COLUMN principal_subject TEXT NOT NULL DEFAULT 'local'",
    "UPDATE plans SET template_code = COALESCE(json_extract(plan_json, '$.template_code'), ''), "
    "template_type = COALESCE(json_extract(plan_json, '$.template_type'), '')",
    "UPDATE plans SET lease_expires = COALESCE(sent_at, updated_at) + 60 WHERE state = 'sending'",
    "UPDATE chunks SET lease_expires = COALESCE(claimed_at, updated_at) + 60 WHERE state = 'sending'",
    "CREATE INDEX IF NOT EXISTS plans_content ON plans(content_hash)",
]

CORRUPT_HINT = ("Stop every sms-mcp using this data directory, move the file aside (keep it: it records which "
                "SMS were sent) and start again, or restore it from a backup. A new, empty ledger forgets earlier "
                "plans, so check query_details for recent sends before sending again.")
READONLY_HINT = "Make the data directory and the file writable by this user, or set SMS_MCP_DATA_DIR elsewhere."


def _fault(path: Path, err: BaseException) -> LedgerUnavailable:
    if isinstance(err, LedgerUnavailable):
        return LedgerUnavailable(str(path), err.reason, err.hint)
    text = str(err).lower()
    if "readonly" in text or "read-only" in text or "unable to open" in text or isinstance(err, PermissionError):
        return LedgerUnavailable(str(path), f"cannot be written ({err})", READONLY_HINT)
    if "not a database" in text or "malformed" in text or "corrupt" in text or "disk i/o" in text:
        return LedgerUnavailable(str(path), f"is unreadable or corrupted ({err})", CORRUPT_HINT)
    if "locked" in text or "busy" in text:
        return LedgerUnavailable(str(path), f"stayed locked by another process ({err})",
                                 "Retry; if it persists, find the process holding the ledger open.")
    return LedgerUnavailable(str(path), f"failed ({err})", CORRUPT_HINT)


class _Connection:
    """One SQLite connection used by one task at a time, in a worker thread."""

    def __init__(self, path: Path, busy_timeout_ms: int) -> None:
        self.db = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None,
                                  check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        self.limiter = anyio.CapacityLimiter(1)


class _Write(Generic[T]):
    """One write waiting for, or in, a group commit."""

    __slots__ = ("done", "error", "fn", "result", "taken")

    def __init__(self, fn: Callable[[sqlite3.Connection], T]) -> None:
        self.fn = fn
        self.taken = False  # a group took it: it runs (or ran), whatever happens to its caller
        self.done = False
        self.result: T | None = None
        self.error: BaseException | None = None


class SqliteLedger:
    """:class:`~sms_mcp.core.ports.LedgerPort` on one SQLite file. Open with :meth:`open`."""

    def __init__(self, path: Path, writer: _Connection, reader: _Connection) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        self._inode = self._identity()
        self._queue: list[_Write[Any]] = []  # writes waiting for the next group commit
        #: (plan_id, chunk_no) -> the chunk's decoded params and recipients (immutable once stored).
        self._contents: dict[tuple[str, int], tuple[Mapping[str, str], tuple[Recipient, ...]]] = {}
        self._committing: anyio.Event | None = None  # set when the group being committed is done

    # ------------------------------------------------------------------ opening
    @classmethod
    async def open(cls, path: str | Path, *, busy_timeout: float = 30.0) -> SqliteLedger:
        """Open (creating or migrating) the ledger; raises :class:`LedgerUnavailable` with one clear line."""
        return await anyio.to_thread.run_sync(cls.open_sync, Path(path), busy_timeout)

    @classmethod
    def open_sync(cls, path: Path, busy_timeout: float = 30.0) -> SqliteLedger:
        writer = reader = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = _Connection(path, int(busy_timeout * 1000))
            enable_wal(writer.db, busy_timeout)
            writer.db.execute("PRAGMA synchronous=FULL")  # an intent or outcome, once written, survives a crash
            cls._migrate(writer.db)
            reader = _Connection(path, int(busy_timeout * 1000))
            reader.db.execute("PRAGMA query_only=1")
            reader.db.execute("SELECT COUNT(*) FROM plans").fetchone()
        except (sqlite3.Error, OSError, LedgerUnavailable) as err:
            for conn in (writer, reader):
                if conn is not None:
                    conn.db.close()
            raise _fault(path, err) from None
        try:
            os.chmod(path, 0o600)  # it holds full phone numbers
        except OSError:
            pass
        return cls(path, writer, reader)

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")  # also proves the file is writable
        try:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise LedgerUnavailable(
                    "", f"has schema version {version}, newer than this sms-mcp understands ({SCHEMA_VERSION})",
                    "Upgrade sms-mcp, or point SMS_MCP_DATA_DIR at another directory.")
            existing = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if version == 0 and "plans" in existing:
                columns = {r[1] for r in db.execute("PRAGMA table_info(plans)")}
                if "content_hash" not in columns:  # a ledger written by 0.1.0 before this column existed
                    db.execute("ALTER TABLE plans ADD COLUMN content_hash TEXT")
                for statement in MIGRATE_0_TO_1:
                    db.execute(statement)
            else:
                for statement in SCHEMA_V1.split(";"):  # (executescript would commit the transaction)
                    if statement.strip():
                        db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    async def aclose(self) -> None:
        for conn in (self._writer, self._reader):
            async with conn.limiter:
                conn.db.close()

    def close(self) -> None:
        for conn in (self._writer, self._reader):
            conn.db.close()

    # ------------------------------------------------------------------ running off the loop
    def _check_file(self) -> None:
        """The file this ledger opened must still be the one at its path: a ledger deleted or replaced while
        serving would otherwise keep working on an orphaned file that no other process sees."""
        if self._identity() != self._inode:
            raise LedgerUnavailable(str(self.path), "was deleted or replaced while this server was running",
                                    "Stop every sms-mcp using this data directory; restore the file from a backup "
                                    "if you have one; then start again.")

    async def _run(self, conn: _Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
        def work() -> T:
            self._check_file()
            return fn(conn.db)

        try:
            return await anyio.to_thread.run_sync(work, limiter=conn.limiter)
        except (sqlite3.Error, OSError) as err:
            raise _fault(self.path, err) from None

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._run(self._reader, fn)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` inside a ``BEGIN IMMEDIATE`` transaction, in its own savepoint: durable (committed) when this
        returns, rolled back if it raises. Writes that queue up while a group is being committed form the next
        group (see the module docstring)."""
        op: _Write[T] = _Write(fn)
        self._queue.append(op)
        while not op.done:
            if self._committing is None:
                await self._commit_group()
                continue
            flushed = self._committing
            try:
                await flushed.wait()
            except BaseException:
                if not op.taken:  # cancelled before any group took it: it never runs
                    self._queue.remove(op)
                    raise
                with anyio.CancelScope(shield=True):  # it is running: wait for its outcome, then unwind
                    while not op.done:
                        await (self._committing or flushed).wait()
                raise
        if op.error is not None:
            raise op.error
        return op.result  # type: ignore[return-value]

    async def _commit_group(self) -> None:
        """Take every queued write and run them in one transaction, one commit (shielded: the writes of other
        callers are in it)."""
        self._committing = committed = anyio.Event()
        group: list[_Write[Any]] = []
        try:
            with anyio.CancelScope(shield=True):
                # A few turns of the event loop first (microseconds when nothing else is ready): the tasks already
                # woken (the next chunk's claim, let in by a settling chunk's slot, is a lock or two away) add
                # their writes to this group instead of waiting a whole commit for the next one.
                for _ in range(GATHER_TURNS):
                    await anyio.lowlevel.cancel_shielded_checkpoint()
                group, self._queue = self._queue, []
                for op in group:
                    op.taken = True
                if group:
                    try:
                        await self._run(self._writer, lambda db: self._transaction(db, group))
                    except BaseException as err:  # the transaction failed as a whole: nothing of it is durable
                        for op in group:
                            op.error = err
                        if not isinstance(err, LedgerUnavailable):
                            raise
        finally:
            for op in group:
                op.done = True
            self._committing = None
            committed.set()

    def _transaction(self, db: sqlite3.Connection, group: list[_Write[Any]]) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            for op in group:
                db.execute("SAVEPOINT write")
                try:
                    op.result = op.fn(db)
                except Exception as err:  # this write fails alone; the group goes on
                    db.execute("ROLLBACK TO write")
                    op.error = _fault(self.path, err) if isinstance(err, (sqlite3.Error, OSError)) else err
                db.execute("RELEASE write")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    @staticmethod
    def _apply(db: sqlite3.Connection, table: str, where: str, args: tuple[Any, ...],
               move: Transition[Any], sets: str = "", set_args: tuple[Any, ...] = ()) -> int:
        """The compare-and-set of a lifecycle transition: every state change of this adapter goes here."""
        marks = ",".join("?" * len(move.sources))
        cur = db.execute(
            f"UPDATE {table} SET state = ?{', ' + sets if sets else ''} WHERE {where} AND state IN ({marks})",
            (move.target.value, *set_args, *args, *move.source_values),
        )
        return cur.rowcount

    # ------------------------------------------------------------------ rows
    @staticmethod
    def _plan(row: sqlite3.Row | None) -> PlanRecord | None:
        if row is None:
            return None
        return PlanRecord(
            plan_id=row["plan_id"], tool=row["tool"], args_hash=row["args_hash"], content_hash=row["content_hash"],
            principal=Principal(row["principal_subject"], row["principal_client"]),
            template_code=row["template_code"], template_type=row["template_type"], state=PlanState(row["state"]),
            created_at=row["created_at"], expires_at=row["expires_at"], sent_at=row["sent_at"],
            owner=row["owner"], lease_expires=row["lease_expires"], summary=json.loads(row["plan_json"]),
        )

    def _chunk(self, row: sqlite3.Row) -> ChunkRecord:
        key = (row["plan_id"], row["chunk_no"])
        content = self._contents.get(key)
        if content is None:
            content = self._remember(key, json.loads(row["params_json"]),
                                     tuple(Recipient(r["number"], r["sign"]) for r in json.loads(row["recipients"])))
        params, recipients = content
        return ChunkRecord(
            plan_id=key[0], chunk_no=key[1], state=ChunkState(row["state"]), action=row["action"], params=params,
            recipients=recipients, out_id=row["out_id"], owner=row["owner"], claimed_at=row["claimed_at"],
            lease_expires=row["lease_expires"], biz_id=row["biz_id"], request_id=row["request_id"],
            error_code=row["error_code"], error_message=row["error_message"],
        )

    def _remember(self, key: tuple[str, int], params: Mapping[str, str],
                  recipients: tuple[Recipient, ...]) -> tuple[Mapping[str, str], tuple[Recipient, ...]]:
        """A chunk's request and recipients never change once its plan is stored, so they are decoded once per
        process (a confirmation reads every chunk three times: to drive it, to claim it, to report it)."""
        content = (MappingProxyType(dict(params)), recipients)  # read-only: every reader shares it
        if len(self._contents) >= CONTENT_CACHE_CHUNKS:
            self._contents.clear()  # (simple and bounded; the next reads decode again)
        self._contents[key] = content
        return content

    @classmethod
    def _get_plan(cls, db: sqlite3.Connection, plan_id: str) -> PlanRecord | None:
        return cls._plan(db.execute("SELECT * FROM plans WHERE plan_id = ?", (plan_id,)).fetchone())

    def _get_chunk(self, db: sqlite3.Connection, plan_id: str, chunk_no: int) -> ChunkRecord | None:
        row = db.execute("SELECT * FROM chunks WHERE plan_id = ? AND chunk_no = ?", (plan_id, chunk_no)).fetchone()
        return None if row is None else self._chunk(row)

    # ------------------------------------------------------------------ health
    async def health(self) -> LedgerHealth:
        def probe(db: sqlite3.Connection) -> LedgerHealth:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            problems = db.execute("PRAGMA quick_check").fetchall()
            if [tuple(p) for p in problems] != [("ok",)]:
                raise sqlite3.DatabaseError(f"integrity check failed: {problems[0][0]}")
            plans = int(db.execute("SELECT COUNT(*) FROM plans").fetchone()[0])
            return LedgerHealth(location=str(self.path), schema_version=version, plans=plans)

        health = await self._read(probe)
        await self._write(lambda db: db.execute("SELECT 1").fetchone())  # the write lock can be taken
        return health

    # ------------------------------------------------------------------ plans
    async def create_plan(self, plan: NewPlan) -> None:
        def insert(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO plans (plan_id, token_hash, tool, args_hash, content_hash, state, created_at, "
                "expires_at, updated_at, plan_json, principal_subject, principal_client, template_code, "
                "template_type) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (plan.plan_id, plan.token_hash, plan.tool, plan.args_hash, plan.content_hash,
                 PlanState.PREPARED.value, plan.created_at, plan.expires_at, plan.created_at,
                 json.dumps(dict(plan.summary), ensure_ascii=False), plan.principal.subject,
                 plan.principal.client_id, plan.template_code, plan.template_type),
            )
            db.executemany(
                "INSERT INTO chunks (plan_id, chunk_no, state, action, params_json, recipients, out_id, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(plan.plan_id, c.chunk_no, ChunkState.PENDING.value, c.action,
                  json.dumps(dict(c.params), ensure_ascii=False),
                  json.dumps([{"number": r.number, "sign": r.sign_name} for r in c.recipients], ensure_ascii=False),
                  c.out_id, plan.created_at) for c in plan.chunks],
            )

        await self._write(insert)
        for c in plan.chunks:  # the confirmation that follows reads them back: no need to decode them again
            self._remember((plan.plan_id, c.chunk_no), c.params, tuple(c.recipients))

    async def plan_by_token(self, token_hash: str) -> PlanRecord | None:
        return await self._read(lambda db: self._plan(
            db.execute("SELECT * FROM plans WHERE token_hash = ?", (token_hash,)).fetchone()))

    async def get_plan(self, plan_id: str) -> PlanRecord | None:
        return await self._read(lambda db: self._get_plan(db, plan_id))

    async def confirm_plan(self, plan_id: str, principal: Principal, lease: Lease, now: float) -> PlanChange:
        def confirm(db: sqlite3.Connection) -> PlanChange:
            won = self._apply(
                db, "plans", "plan_id = ? AND principal_subject = ? AND principal_client = ? AND expires_at > ?",
                (plan_id, principal.subject, principal.client_id, now), lifecycle.CONFIRM,
                "updated_at = ?, sent_at = ?, owner = ?, lease_expires = ?",
                (now, now, lease.owner, now + lease.seconds),
            ) == 1
            return PlanChange(won, self._get_plan(db, plan_id))

        return await self._write(confirm)

    async def decline_plan(self, plan_id: str, principal: Principal, now: float) -> PlanChange:
        def decline(db: sqlite3.Connection) -> PlanChange:
            won = self._apply(db, "plans", "plan_id = ? AND principal_subject = ? AND principal_client = ?",
                              (plan_id, principal.subject, principal.client_id), lifecycle.DECLINE,
                              "updated_at = ?", (now,)) == 1
            return PlanChange(won, self._get_plan(db, plan_id))

        return await self._write(decline)

    async def renew_lease(self, plan_id: str, lease: Lease, now: float) -> bool:
        def renew(db: sqlite3.Connection) -> bool:
            until = now + lease.seconds
            cur = db.execute("UPDATE plans SET lease_expires = ? WHERE plan_id = ? AND owner = ? AND state = ? "
                             "AND lease_expires > ?", (until, plan_id, lease.owner, PlanState.SENDING.value, now))
            if cur.rowcount != 1:
                return False
            db.execute("UPDATE chunks SET lease_expires = ? WHERE plan_id = ? AND owner = ? AND state = ? "
                       "AND lease_expires > ?", (until, plan_id, lease.owner, ChunkState.SENDING.value, now))
            return True

        return await self._write(renew)

    async def outstanding_like(self, content_hash: str) -> str | None:
        open_states = tuple(s.value for s in lifecycle.CHUNK_OPEN)

        def find(db: sqlite3.Connection) -> str | None:
            row = db.execute(
                "SELECT p.plan_id FROM plans p JOIN chunks c ON c.plan_id = p.plan_id WHERE p.content_hash = ? "
                f"AND p.state = ? AND c.state IN ({','.join('?' * len(open_states))}) ORDER BY p.created_at "
                "LIMIT 1", (content_hash, PlanState.SENDING.value, *open_states),
            ).fetchone()
            return row[0] if row else None

        return await self._read(find)

    # ------------------------------------------------------------------ chunks
    async def chunks(self, plan_id: str) -> list[ChunkRecord]:
        return await self._read(lambda db: [self._chunk(r) for r in db.execute(
            "SELECT * FROM chunks WHERE plan_id = ? ORDER BY chunk_no", (plan_id,)).fetchall()])

    async def claim_chunk(
        self, plan_id: str, chunk_no: int, lease: Lease, now: float, limits: SendLimits
    ) -> ChunkClaim:
        def claim(db: sqlite3.Connection) -> ChunkClaim:
            # Only the plan columns the claim needs (not its summary JSON): this runs once per chunk.
            plan = db.execute("SELECT state, owner, lease_expires, template_code, template_type, principal_subject, "
                              "principal_client FROM plans WHERE plan_id = ?", (plan_id,)).fetchone()
            chunk = self._get_chunk(db, plan_id, chunk_no)
            if plan is None or chunk is None:
                return ChunkClaim(ClaimStatus.TAKEN, chunk)
            state, owner, lease_expires, template_code, template_type, subject, client = plan
            if state != PlanState.SENDING.value or owner != lease.owner or (lease_expires or 0.0) <= now:
                return ChunkClaim(ClaimStatus.LEASE_LOST, chunk)
            if chunk.state is not ChunkState.PENDING:
                return ChunkClaim(ClaimStatus.TAKEN, chunk)
            refusal = evaluate(
                limits, template_code, chunk.recipients,
                used_today=self._count(db, limits.day_start) if limits.daily_limit is not None else 0,
                used_today_by_principal=self._count(db, limits.day_start, Principal(subject, client))
                if limits.principal_daily_limit is not None else 0,
                history=self._history(db, limits.history_since, [r.number for r in chunk.recipients])
                if limits.history_since is not None else (),
            )
            if refusal is not None:
                self._apply(db, "chunks", "plan_id = ? AND chunk_no = ?", (plan_id, chunk_no),
                            lifecycle.REFUSE_CHUNK, "error_code = ?, error_message = ?, updated_at = ?",
                            (refusal.code, refusal.message, now))
                return ChunkClaim(ClaimStatus.REFUSED, self._get_chunk(db, plan_id, chunk_no), refusal)
            claimed = self._apply(db, "chunks", "plan_id = ? AND chunk_no = ?", (plan_id, chunk_no),
                                  lifecycle.CLAIM_CHUNK, "owner = ?, claimed_at = ?, lease_expires = ?, updated_at = ?",
                                  (lease.owner, now, now + lease.seconds, now))
            if claimed != 1:  # cannot happen under the write lock (the chunk was pending a moment ago)
                raise sqlite3.DatabaseError(f"the claim of chunk {chunk_no} of {plan_id} changed {claimed} rows")
            db.executemany(
                "INSERT INTO sends (number, sign_name, template_code, template_type, sent_at, plan_id, chunk_no, "
                "principal_subject) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(r.number, r.sign_name, template_code, template_type, now, plan_id, chunk_no, subject)
                 for r in chunk.recipients],
            )
            # The row as the UPDATE above left it, without reading it back.
            return ChunkClaim(ClaimStatus.CLAIMED, dataclasses.replace(
                chunk, state=ChunkState.SENDING, owner=lease.owner, claimed_at=now,
                lease_expires=now + lease.seconds))

        return await self._write(claim)

    async def settle_chunk(
        self, plan_id: str, chunk_no: int, sources: frozenset[ChunkState], target: ChunkState,
        answer: ChunkAnswer, now: float,
    ) -> bool:
        move = lifecycle.transition(sources, target)

        def settle(db: sqlite3.Connection) -> bool:
            changed = self._apply(
                db, "chunks", "plan_id = ? AND chunk_no = ?", (plan_id, chunk_no), move,
                "biz_id = COALESCE(?, biz_id), request_id = COALESCE(?, request_id), "
                "error_code = ?, error_message = ?, updated_at = ?",
                (answer.biz_id, answer.request_id, answer.error_code, answer.error_message, now),
            ) == 1
            if changed and target in lifecycle.CHUNK_NOTHING_SENT:
                # Nothing reached the handsets: free the flow-control and daily budgets again.
                db.execute("DELETE FROM sends WHERE plan_id = ? AND chunk_no = ?", (plan_id, chunk_no))
            return changed

        return await self._write(settle)

    async def recover(self, plan_id: str, now: float) -> list[Recovered]:
        def recover(db: sqlite3.Connection) -> list[Recovered]:
            plan = self._get_plan(db, plan_id)
            if plan is None or plan.state is not PlanState.SENDING:
                return []
            done: list[Recovered] = []
            for row in db.execute("SELECT * FROM chunks WHERE plan_id = ? ORDER BY chunk_no", (plan_id,)).fetchall():
                chunk = self._chunk(row)
                where, args = "plan_id = ? AND chunk_no = ?", (plan_id, chunk.chunk_no)
                if chunk.state is ChunkState.SENDING and (chunk.lease_expires or 0.0) <= now:
                    if self._apply(db, "chunks", where, args, lifecycle.ORPHAN_CHUNK,
                                   "error_code = ?, error_message = ?, updated_at = ?",
                                   ("sms_mcp.OUTCOME_UNKNOWN", "The sending process stopped (its lease expired) "
                                    "before it recorded an answer.", now)):
                        done.append(Recovered(chunk.chunk_no, ChunkState.SENDING, ChunkState.UNKNOWN))
                elif chunk.state is ChunkState.PENDING and (plan.lease_expires or 0.0) <= now:
                    if self._apply(db, "chunks", where, args, lifecycle.ABANDON_CHUNK,
                                   "error_code = ?, error_message = ?, updated_at = ?",
                                   ("sms_mcp.CONFIRMATION_LOST", "The process that confirmed this plan stopped "
                                    "before it sent this part; it was never sent.", now)):
                        done.append(Recovered(chunk.chunk_no, ChunkState.PENDING, ChunkState.NOT_SENT))
            return done

        return await self._write(recover)

    # ------------------------------------------------------------------ history
    @staticmethod
    def _count(db: sqlite3.Connection, since: float, principal: Principal | None = None) -> int:
        if principal is None:
            return int(db.execute("SELECT COUNT(*) FROM sends WHERE sent_at >= ?", (since,)).fetchone()[0])
        return int(db.execute("SELECT COUNT(*) FROM sends WHERE sent_at >= ? AND principal_subject = ?",
                              (since, principal.subject)).fetchone()[0])

    @staticmethod
    def _history(db: sqlite3.Connection, since: float, numbers: Sequence[str]) -> list[SentMessage]:
        cursor = db.cursor()
        cursor.row_factory = None  # plain tuples: a day of sends to 10,000 numbers is tens of thousands of rows
        rows = cursor.execute(
            "SELECT number, sign_name, template_code, sent_at FROM sends "
            "WHERE number IN (SELECT value FROM json_each(?)) AND sent_at >= ?",
            (json.dumps(sorted(set(numbers))), since),
        ).fetchall()
        return [SentMessage(number, sign, template, sent_at) for number, sign, template, sent_at in rows]

    async def sends_since(self, since: float, principal: Principal | None = None) -> int:
        return await self._read(lambda db: self._count(db, since, principal))

    async def recent_sends(self, since: float, numbers: Sequence[str]) -> list[SentMessage]:
        return await self._read(lambda db: self._history(db, since, numbers))
