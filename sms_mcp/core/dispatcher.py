"""The dispatcher: a confirmed plan's chunks claimed, sent once, settled (see :mod:`sms_mcp.core.lifecycle`).

Confirming takes the plan's lease; only the lease holder claims chunks, each claim writing the intent (and
checking the limits) before the one API call; the holder renews the lease while it works. Every other
confirmation of the same plan (a replay, a concurrent call, another process) waits for the recorded outcome and
reports it. A decline and a confirmation racing for the same plan: whichever the ledger records first wins, and
the other reports the winner's outcome.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio

from sms_mcp.config import Settings
from sms_mcp.core import errors, lifecycle
from sms_mcp.core.audit import AuditLog
from sms_mcp.core.errors import SmsError
from sms_mcp.core.lifecycle import ChunkState, Outcome, PlanState
from sms_mcp.core.limits import evaluate, send_limits, when
from sms_mcp.core.models import Plan, SendResult, TemplateInfo
from sms_mcp.core.outcomes import assemble
from sms_mcp.core.planner import SendRequest, token_hash
from sms_mcp.core.policy import Policy
from sms_mcp.core.ports import (
    ChunkAnswer,
    ChunkRecord,
    ClaimStatus,
    Lease,
    LedgerPort,
    LedgerUnavailable,
    PlanRecord,
    Principal,
)
from sms_mcp.core.principal_policy import PrincipalPolicy
from sms_mcp.core.throttle import Limiters
from sms_mcp.dysmsapi import GatewayError, OutcomeUnknownError, Transport, WarmableTransport

log = logging.getLogger("sms_mcp.dispatcher")

#: ``await progress(done, total, message)``: the skin forwards it as MCP progress notifications.
Progress = Callable[[float, float, str], Awaitable[None]]
#: A per-principal daily message budget (None: none), e.g. from the gateway's policy file.
BudgetFor = Callable[[Principal], "int | None"]
SEND_CONCURRENCY = 8
#: Chunks claimed ahead of a free call slot (their intent durable, their call not yet made): a slot that frees is
#: used at once instead of after a claim's commit. Kept small: should the process die, or the confirmation be
#: interrupted, such a chunk ends ``unknown`` (reconciled to not_sent), like a chunk whose call was in flight.
#: Reconciliation counts its grace from the claim, so a chunk claimed ahead may start its call only within the
#: grace's slack beyond the longest call (``claim_ahead_window``); none is claimed ahead when there is no slack.
CLAIM_AHEAD = 2
#: How long a claim holds without renewal. Renewed every third of it while a call is in flight, so only a
#: process that stopped (crash, SIGKILL, a host gone) loses it; then its leftovers are recovered.
LEASE_SECONDS = 10.0
POLL_SECONDS = 0.05
#: Test-only hook: when set to a path, a process that won a confirmation writes the plan id there and stops
#: before claiming any chunk, so a test can kill it exactly between the plan claim and the chunk claims.
PAUSE_AFTER_CONFIRM = "SMS_MCP_TEST_PAUSE_AFTER_CONFIRM"

UNKNOWN_TOKEN_STEP = ("Call the tool without confirm_token to prepare a plan, show it to the user, then confirm with "
                      "the token it returns.")


def unknown_token() -> SmsError:
    """The one answer for a token that is not yours: unknown, another principal's, or made up."""
    return SmsError("sms_mcp.UNKNOWN_TOKEN", "This confirm_token is not valid; nothing was sent.", UNKNOWN_TOKEN_STEP)


def new_owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Dispatcher:
    def __init__(
        self, settings: Settings, transport: Transport, ledger: LedgerPort, audit: AuditLog, policy: Policy,
        clock: Callable[[], float], served: Callable[[], dict[str, Any]], *, budget_for: BudgetFor | None = None,
        lease_seconds: float = LEASE_SECONDS, limiters: Limiters | None = None, max_wait: float | None = None,
        principal_policy: PrincipalPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.transport = transport
        self.ledger = ledger
        self.audit = audit
        self.policy = policy
        self.clock = clock
        self.served = served
        self.budget_for: BudgetFor = budget_for or (lambda _principal: None)
        self.principal_policy = principal_policy
        self.lease = Lease(new_owner_id(), lease_seconds)
        self.limiters = limiters or Limiters()
        #: How long (real seconds) a replay waits for another owner's chunks before reporting them unknown: long
        #: enough for a live owner's call to end, or a dead owner's lease to expire.
        self.max_wait = max_wait if max_wait is not None else \
            lease_seconds + settings.read_timeout + settings.connect_timeout + 30.0

    # ----------------------------------------------------------------- looking a plan up
    async def _own_plan(self, token: str, principal: Principal) -> PlanRecord:
        record = await self.ledger.plan_by_token(token_hash(token))
        if record is None or record.principal != principal:
            raise unknown_token()
        return record

    async def awaiting(self, token: str, request: SendRequest, principal: Principal) -> Plan | None:
        """The plan this exact confirmation would send, if it is still waiting (for the human prompt). None when
        the token is unknown, not the caller's, used, expired or bound to other arguments."""
        try:
            record = await self._own_plan(token, principal)
        except SmsError:
            return None
        if record.args_hash != request.args_hash or record.state is not PlanState.PREPARED:
            return None
        if record.expires_at <= self.clock():
            return None
        return Plan.model_validate(record.summary)

    async def result(self, record: PlanRecord, replayed: bool) -> SendResult:
        chunks = await self.ledger.chunks(record.plan_id)
        return assemble(record, Plan.model_validate(record.summary), chunks, self.served(), replayed)

    def _cancelled(self, record: PlanRecord, message: str) -> SendResult:
        return SendResult(
            **self.served(), status=Outcome.CANCELLED.value, plan_id=record.plan_id,
            plan=Plan.model_validate(record.summary),
            message=message, next_step="Ask the user what they want instead; a new send needs a new plan.",
        )

    # ----------------------------------------------------------------- the human's answers
    async def decline(self, token: str, principal: Principal) -> SendResult:
        """The human said no: the plan is cancelled for good; nothing is sent. If a confirmation won the race,
        its outcome is reported instead — never "nothing was sent" when something may have been."""
        record = await self._own_plan(token, principal)
        change = await self.ledger.decline_plan(record.plan_id, principal, self.clock())
        fresh = change.plan or record
        if change.won:
            self.audit.write("declined", record.plan_id, principal=_who(principal))
        if fresh.state is PlanState.SENDING:
            result = await self._wait_for_outcome(fresh)
            return result.model_copy(update={"message": "The user declined, but another confirmation had already "
                                             "sent this plan. " + result.message})
        return self._cancelled(fresh, "The user declined the confirmation; the plan is cancelled and nothing was "
                                      "sent.")

    async def unanswered(self, token: str, request: SendRequest, principal: Principal) -> SendResult:
        """The prompt was dismissed without a choice (or timed out): the plan keeps waiting; the token stays
        valid. Unless another confirmation decided it meanwhile: then that is reported."""
        record = await self._own_plan(token, principal)
        if record.args_hash != request.args_hash:
            raise _mismatch(record)
        if record.state is PlanState.SENDING:
            return await self._wait_for_outcome(record)
        if record.state is PlanState.CANCELLED:
            return self._cancelled(record, "The plan was declined and cancelled; nothing was sent.")
        if record.expires_at <= self.clock():
            raise _expired(record)
        return SendResult(
            **self.served(), status=Outcome.PENDING_CONFIRMATION.value, plan_id=record.plan_id,
            plan=Plan.model_validate(record.summary), expires_at=_iso(record.expires_at),
            message="The user did not answer the confirmation prompt (it was dismissed without a choice); "
                    "nothing was sent and the plan still awaits confirmation.",
            next_step="Ask the user in the conversation whether to send this plan. Only if they explicitly say "
                      "yes, call again with the same arguments and the same confirm_token (valid until "
                      f"{_iso(record.expires_at)}). If they say no, do not call again.",
        )

    # ----------------------------------------------------------------- confirming
    async def confirm(self, token: str, request: SendRequest, principal: Principal,
                      progress: Progress | None) -> SendResult:
        record = await self._own_plan(token, principal)
        if record.args_hash != request.args_hash:
            raise _mismatch(record)
        if record.state is PlanState.PREPARED:
            if record.expires_at <= self.clock():
                raise _expired(record)
            async with self._warming(record):
                # Read once, before the plan is claimed: the limits are checked again on exactly the messages the
                # plan will send, and the send works from the same list (a prepared plan's chunks are all pending,
                # and only the lease holder, this caller if it wins below, can change them).
                chunks = await self.ledger.chunks(record.plan_id)
                await self._check_again(record, request, principal, chunks)
                change = await self.ledger.confirm_plan(record.plan_id, principal, self.lease, self.clock())
                fresh = change.plan or record
                if change.won:
                    self.audit.write("confirmed", record.plan_id, principal=_who(principal))
                    return await self._drive(fresh, progress, chunks)
                record = fresh
        if record.state is PlanState.CANCELLED:  # declined, possibly while this confirmation was on its way
            raise SmsError("sms_mcp.PLAN_CANCELLED", f"Plan {record.plan_id} was declined and cancelled; nothing "
                           "was sent.", "Prepare a new plan if the user now wants to send.")
        if record.state is PlanState.PREPARED:  # the claim lost only to the clock
            raise _expired(record)
        return await self._wait_for_outcome(record)

    @contextlib.asynccontextmanager
    async def _warming(self, record: PlanRecord) -> AsyncIterator[None]:
        """While the confirmation checks and claims, the transport (if it can) opens the connections its calls
        will use, so their handshakes overlap that work instead of following it. In the background only: never
        awaited, its failure changes nothing (each call opens its own connection, as without it), it sends no
        request, and it is cancelled when the confirmation ends."""
        chunk_count = record.summary.get("chunk_count")
        connections = min(SEND_CONCURRENCY, chunk_count if isinstance(chunk_count, int) else 1)
        if not isinstance(self.transport, WarmableTransport) or connections <= 0:
            yield
            return
        error: Exception | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._warm, self.transport, connections, record.plan_id)
            try:
                yield
            except Exception as exc:  # re-raised as itself below, not wrapped in the task group's ExceptionGroup
                error = exc
            finally:
                tg.cancel_scope.cancel()
        if error is not None:
            raise error

    @staticmethod
    async def _warm(transport: WarmableTransport, connections: int, plan_id: str) -> None:
        try:
            await transport.warm(connections)
        except Exception as exc:  # best effort: the calls open their own connections
            log.debug("plan %s: opening %d connection(s) ahead failed (%s: %s)", plan_id, connections,
                      type(exc).__name__, exc)

    async def _check_again(self, record: PlanRecord, request: SendRequest, principal: Principal,
                           chunks: list[ChunkRecord]) -> None:
        """Time has passed since the plan was made: the operator's configuration (a restart with a new allow-list,
        cap or promotional setting) and the budgets are checked again (the claims re-check the budgets
        atomically; this answers early, with a clear refusal, when they are already used up)."""
        self.policy.check_can_send()
        self.policy.check_recipients(request.phones)
        template = TemplateInfo.model_construct(template_code=record.template_code, type=record.template_type)
        self.policy.check_template(template)
        if self.principal_policy is not None:  # the caller's own rules (policy file), on top of the server's
            self.principal_policy.check_plan(principal, request.phones, template)
        await precheck_limits(self.ledger, self.settings, self.clock(), record.template_code, record.template_type,
                              [r for c in chunks for r in c.recipients], principal, self.budget_for(principal))

    async def _drive(self, record: PlanRecord, progress: Progress | None, chunks: list[ChunkRecord]) -> SendResult:
        """The lease holder sends every chunk of its plan (``chunks``: as read before it won the plan), renewing
        the lease until it is done."""
        pause = os.environ.get(PAUSE_AFTER_CONFIRM)
        if pause:
            Path(pause).write_text(record.plan_id)
            await anyio.sleep(3600)
        pending = [c for c in chunks if c.state is ChunkState.PENDING]
        total = len(chunks)
        done = total - len(pending)
        made: list[int] = []  # chunk numbers whose API call this caller made
        failures: list[BaseException] = []
        calls = anyio.Semaphore(SEND_CONCURRENCY)
        ahead = CLAIM_AHEAD if claim_ahead_window(self.settings) > 0 else 0
        claimed_ahead = anyio.Semaphore(SEND_CONCURRENCY + ahead)

        async def one(chunk: ChunkRecord) -> None:
            nonlocal done
            try:
                await self._send_chunk(record, chunk, made, claimed_ahead, calls)
            except (SmsError, LedgerUnavailable) as err:  # reported after the other chunks are done
                failures.append(err)
                return
            done += 1
            if progress is not None:
                await progress(done, total, f"chunk {chunk.chunk_no}/{total} done")

        async def renew() -> None:
            while True:
                await anyio.sleep(self.lease.seconds / 3)
                try:
                    renewed = await self.ledger.renew_lease(record.plan_id, self.lease, self.clock())
                except LedgerUnavailable:
                    renewed = False
                if not renewed:
                    log.warning("plan %s: lease lost; remaining chunks will not be sent", record.plan_id)
                    return

        try:
            async with anyio.create_task_group() as outer:
                outer.start_soon(renew)
                async with anyio.create_task_group() as tg:
                    for chunk in pending:
                        tg.start_soon(one, chunk)
                outer.cancel_scope.cancel()
        except BaseException:
            # Interrupted (client timeout, shutdown): chunks never claimed are given up now rather than when the
            # lease runs out; a chunk in flight was recorded unknown by _send_chunk.
            with anyio.CancelScope(shield=True):
                await self._abandon_pending(record.plan_id, "The confirmation was interrupted before this part "
                                            "was sent; it was never sent.")
            raise
        try:
            if failures:
                raise failures[0]
            fresh = await self.ledger.get_plan(record.plan_id) or record
            return await self.result(fresh, replayed=not made)
        except LedgerUnavailable as err:
            if not made:
                raise
            raise _failed_mid_send(record.plan_id, err) from None

    async def _abandon_pending(self, plan_id: str, why: str) -> None:
        move = lifecycle.ABANDON_CHUNK
        try:
            for chunk in await self.ledger.chunks(plan_id):
                if chunk.state is ChunkState.PENDING:
                    await self.ledger.settle_chunk(plan_id, chunk.chunk_no, move.sources, move.target,
                                                   ChunkAnswer(error_code="sms_mcp.CONFIRMATION_LOST",
                                                               error_message=why), self.clock())
        except LedgerUnavailable:
            log.warning("plan %s: could not give up its pending chunks; its lease expiry will", plan_id)

    async def _send_chunk(self, record: PlanRecord, chunk: ChunkRecord, made: list[int],
                          claimed_ahead: anyio.Semaphore, calls: anyio.Semaphore) -> None:
        """One API call, at most once ever: intent first (with the limits, atomically), then the call, then the
        outcome. The chunk number goes into ``made`` once the call may have left.

        ``calls`` bounds the calls in flight; ``claimed_ahead`` bounds them plus the chunks claimed and waiting for
        a call slot (CLAIM_AHEAD), so a slot that frees goes straight to a chunk whose intent is already durable
        instead of waiting for a claim's commit. Both are released before the settle, so the next claim can share
        the settle's commit (the ledger group-commits the writes that wait for it)."""
        plan_id, n = record.plan_id, chunk.chunk_no
        async with claimed_ahead:
            await self.limiters[chunk.action].acquire()
            now = self.clock()
            limits = send_limits(record.template_type, now, self.settings.daily_limit,
                                 self.budget_for(record.principal))
            claim = await self.ledger.claim_chunk(plan_id, n, self.lease, now, limits)
            if claim.status is not ClaimStatus.CLAIMED:
                if claim.status is ClaimStatus.REFUSED and claim.refusal is not None:
                    self.audit.write(ChunkState.REJECTED.value, plan_id, chunk=n, code=claim.refusal.code,
                                     principal=_who(record.principal))
                return
            claimed, window = time.monotonic(), claim_ahead_window(self.settings)
            try:
                if window <= 0:  # nothing claimed ahead: a slot is free for every claimed chunk
                    await calls.acquire()
                    slot = True
                else:
                    slot = False
                    with anyio.move_on_after(window):
                        await calls.acquire()
                        slot = True
                    if slot and time.monotonic() - claimed > window:  # (the process stalled meanwhile)
                        calls.release()
                        slot = False
            except BaseException:
                # Interrupted between the claim and the call: no request was made, but a claimed chunk can only
                # leave ``sending`` as unknown; reconciliation then finds no record of it (not_sent).
                await self._never_called(record, n, "The confirmation was interrupted after this part was claimed "
                                         "and before its request was made.")
                raise
            if not slot:
                await self._never_called(record, n, "No call slot freed in time after this part was claimed; its "
                                         "request was not made.")
                return
            try:
                made.append(n)
                state, answer = await self._call(record, chunk)
            finally:
                calls.release()
        # (No checkpoint between the slot's release and the shielded settle: a cancellation cannot skip it.)
        await self._settle(plan_id, n, state, answer)
        self.audit.write(state.value, plan_id, chunk=n, recipients=len(chunk.recipients), biz_id=answer.biz_id,
                         code=answer.error_code, principal=_who(record.principal))
        log.info("plan %s chunk %d: %s", plan_id, n, state.value)

    async def _never_called(self, record: PlanRecord, chunk_no: int, why: str) -> None:
        """A claimed chunk whose request was not made: it can only leave ``sending`` as unknown, and reconciliation
        then finds no record of it (not_sent) once the grace has passed."""
        await self._settle(record.plan_id, chunk_no, ChunkState.UNKNOWN,
                           ChunkAnswer(error_code="sms_mcp.OUTCOME_UNKNOWN", error_message=why))
        self.audit.write(ChunkState.UNKNOWN.value, record.plan_id, chunk=chunk_no, reason="not called",
                         principal=_who(record.principal))

    async def _call(self, record: PlanRecord, chunk: ChunkRecord) -> tuple[ChunkState, ChunkAnswer]:
        """The chunk's one API call and what its answer means (an interrupted call is recorded here)."""
        plan_id, n = record.plan_id, chunk.chunk_no
        try:
            body = await self.transport.call(chunk.action, dict(chunk.params))
        except GatewayError as err:
            # 4xx: the gateway refused before the action ran. 5xx: it may have run.
            meaning, _ = errors.explain(err.code, err.message)
            state = ChunkState.UNKNOWN if err.status >= 500 else ChunkState.REJECTED
            return state, ChunkAnswer(request_id=err.request_id or None, error_code=err.code,
                                      error_message=f"HTTP {err.status}: {meaning}")
        except OutcomeUnknownError as err:
            return ChunkState.UNKNOWN, ChunkAnswer(
                error_code="sms_mcp.OUTCOME_UNKNOWN", error_message=f"No answer from Alibaba Cloud ({err.reason}).")
        except BaseException:
            # Cancelled (client timeout, shutdown) or a bug: the request may be on the wire. Record, then unwind.
            await self._settle(plan_id, n, ChunkState.UNKNOWN, ChunkAnswer(
                error_code="sms_mcp.OUTCOME_UNKNOWN", error_message="The call was interrupted while sending."))
            self.audit.write(ChunkState.UNKNOWN.value, plan_id, chunk=n, reason="interrupted",
                             principal=_who(record.principal))
            raise
        request_id = str(body.get("RequestId") or "") or None
        if body.get("Code") == "OK":
            return ChunkState.ACCEPTED, ChunkAnswer(biz_id=str(body.get("BizId") or "") or None,
                                                    request_id=request_id)
        code = str(body.get("Code") or "Unknown")
        meaning, _ = errors.explain(code, str(body.get("Message") or ""))
        return ChunkState.REJECTED, ChunkAnswer(request_id=request_id, error_code=code, error_message=meaning)

    async def _settle(self, plan_id: str, chunk_no: int, target: ChunkState, answer: ChunkAnswer) -> None:
        """Record the answer even if this task is being cancelled: the API call has been made."""
        move = lifecycle.settle(target)
        with anyio.CancelScope(shield=True):
            try:
                await self.ledger.settle_chunk(plan_id, chunk_no, move.sources, move.target, answer, self.clock())
            except LedgerUnavailable as err:
                raise _failed_mid_send(plan_id, err) from None

    # ----------------------------------------------------------------- replays
    async def _wait_for_outcome(self, record: PlanRecord) -> SendResult:
        """Another caller holds (or held) the plan: wait until its chunks are settled, recovering what a dead
        owner left, then report the recorded outcome (sending nothing)."""
        deadline = time.monotonic() + self.max_wait
        while True:
            chunks = await self.ledger.chunks(record.plan_id)
            waiting = [c for c in chunks if c.state in (ChunkState.PENDING, ChunkState.SENDING)]
            if not waiting:
                break
            now = self.clock()
            plan = await self.ledger.get_plan(record.plan_id) or record
            expired = any(((c.lease_expires if c.state is ChunkState.SENDING else plan.lease_expires) or 0.0) <= now
                          for c in waiting)
            if expired and await self.ledger.recover(record.plan_id, now):  # (a write: only when one expired)
                continue
            if time.monotonic() >= deadline:
                break
            await anyio.sleep(POLL_SECONDS)
        fresh = await self.ledger.get_plan(record.plan_id) or record
        return await self.result(fresh, replayed=True)


async def precheck_limits(
    ledger: LedgerPort, settings: Settings, now: float, template_code: str, template_type: str,
    recipients: list[Any], principal: Principal, principal_daily_limit: int | None,
) -> None:
    """The limits, checked before anything is claimed, for a clear early answer. Not decisive: the chunk
    claims check them again atomically."""
    limits = send_limits(template_type, now, settings.daily_limit, principal_daily_limit)
    used = await ledger.sends_since(limits.day_start) if limits.daily_limit is not None else 0
    mine = await ledger.sends_since(limits.day_start, principal) if principal_daily_limit is not None else 0
    since = limits.history_since
    history = await ledger.recent_sends(since, [r.number for r in recipients]) if since is not None else []
    refusal = evaluate(limits, template_code, recipients, used_today=used, used_today_by_principal=mine,
                       history=history)
    if refusal is None:
        return
    if refusal.code == "isv.BUSINESS_LIMIT_CONTROL":
        step = f"Do not resend now; tell the user it can be tried again after {when(refusal.retry_at or now)}."
    elif refusal.code == "sms_mcp.PRINCIPAL_DAILY_LIMIT":
        step = "Wait until tomorrow (UTC+8) or ask the operator to raise your daily limit."
    else:
        step = "Wait until tomorrow (UTC+8) or ask the operator to raise the limit."
    raise SmsError(refusal.code, refusal.message, step)


def claim_ahead_window(settings: Settings) -> float:
    """How long after its claim a chunk may still start its call: half the reconcile grace's slack beyond the
    longest a call can take (connect + read timeouts + margin), so "no record after the grace" still means that
    nothing can arrive any more. Zero or less: nothing is claimed ahead."""
    return (settings.reconcile_grace_seconds - settings.min_reconcile_grace_seconds) / 2


def _failed_mid_send(plan_id: str, err: LedgerUnavailable) -> SmsError:
    return SmsError(
        "sms_mcp.LEDGER_FAILED_MID_SEND",
        f"Plan {plan_id}: a request was made, but the ledger failed before its outcome was recorded or read back "
        f"({err.location}: {err.reason}). The SMS may have been sent.",
        f"Do NOT send again. Tell the user and the operator ({err.hint}); once the ledger works, call "
        f"query_details(plan_id='{plan_id}') to reconcile it.")


def _who(principal: Principal) -> dict[str, str]:
    return {"subject": principal.subject, "client_id": principal.client_id}


def _mismatch(record: PlanRecord) -> SmsError:
    return SmsError("sms_mcp.TOKEN_ARGUMENT_MISMATCH",
                    f"The token belongs to plan {record.plan_id}, which was prepared with different arguments; "
                    "nothing was sent.",
                    "Confirm with exactly the arguments of the plan, or prepare a new plan for the new arguments "
                    "and show it to the user.")


def _expired(record: PlanRecord) -> SmsError:
    return SmsError("sms_mcp.TOKEN_EXPIRED", f"The token of plan {record.plan_id} expired; nothing was sent.",
                    "Prepare the plan again (call without confirm_token), show it to the user and confirm with the "
                    "new token.")
