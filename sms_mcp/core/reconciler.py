"""The reconciler: a plan's receipts from Alibaba, and its ``unknown`` chunks settled against them.

A chunk whose outcome is unknown is matched by its OutId in QuerySendDetails: a record means ``accepted``; no
record means ``not_sent`` only once the reconcile grace has passed since the claim (a request can reach Alibaba
until the client's timeouts expire, and Alibaba's records can lag the submission); before that it stays
``unknown`` ("too early").
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio

from sms_mcp.config import Settings
from sms_mcp.core import lifecycle
from sms_mcp.core.audit import AuditLog
from sms_mcp.core.errors import SmsError
from sms_mcp.core.lifecycle import ChunkState, Outcome, PlanState
from sms_mcp.core.models import DeliveryRecord, DeliveryReport, DeliverySummary, Plan, Reconciliation
from sms_mcp.core.outcomes import assemble
from sms_mcp.core.phones import mask
from sms_mcp.core.ports import ChunkAnswer, ChunkRecord, LedgerPort, Principal
from sms_mcp.core.throttle import Limiters

CHINA_TZ = timezone(timedelta(hours=8))
QUERY_CONCURRENCY = 8
UNKNOWN = ChunkState.UNKNOWN.value
#: ``await read(action, params)``: the service's read call (errors already mapped for the agent).
Read = Callable[[str, dict[str, str]], Awaitable[dict[str, Any]]]


def china_today(now: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if now is None else now, CHINA_TZ).strftime("%Y%m%d")


def details(body: dict[str, Any]) -> list[dict[str, Any]]:
    wrapper = body.get("SmsSendDetailDTOs") or {}
    return list(wrapper.get("SmsSendDetailDTO") or []) if isinstance(wrapper, dict) else []


def record(d: dict[str, Any]) -> DeliveryRecord:
    status_code = int(d.get("SendStatus") or 1)
    status = {3: "delivered", 2: "failed"}.get(status_code, "pending")
    return DeliveryRecord(
        phone_number=mask(str(d.get("PhoneNum") or "")), status=status,  # type: ignore[arg-type]
        send_status=status_code, err_code=d.get("ErrCode") or None, content=d.get("Content") or None,
        template_code=d.get("TemplateCode") or None, out_id=d.get("OutId") or None,
        send_date=d.get("SendDate") or None, receive_date=d.get("ReceiveDate") or None,
    )


def summary(records: list[DeliveryRecord]) -> DeliverySummary:
    return DeliverySummary(
        delivered=sum(r.status == "delivered" for r in records),
        failed=sum(r.status == "failed" for r in records),
        pending=sum(r.status == "pending" for r in records),
    )


def details_next_step(records: list[DeliveryRecord]) -> str:
    if any(r.status == "pending" for r in records):
        return "Some receipts are pending; query again in 10-30 s. Do not resend."
    if any(r.status == "failed" for r in records):
        return "Some messages failed (see err_code); tell the user. Resend only if they ask, as a new plan."
    if not records:
        return "No record found for that number and date."
    return "All queried messages were delivered."


class Reconciler:
    def __init__(self, settings: Settings, ledger: LedgerPort, audit: AuditLog, clock: Callable[[], float],
                 read: Read, limiters: Limiters, served: Callable[[], dict[str, Any]]) -> None:
        self.settings = settings
        self.ledger = ledger
        self.audit = audit
        self.clock = clock
        self.read = read
        self.limiters = limiters
        self.served = served

    async def plan_details(self, plan_id: str, principal: Principal) -> DeliveryReport:
        """Receipts for every recipient of a plan, reconciling chunks whose outcome was unknown on the way."""
        row = await self.ledger.get_plan(plan_id)
        if row is None or row.principal != principal:  # another principal's plan is not there for them
            raise SmsError("sms_mcp.UNKNOWN_PLAN", f"No plan {plan_id!r} in this server's ledger.",
                           "Use the plan_id returned by send_sms or send_batch_sms.")
        if row.state is not PlanState.SENDING:
            raise SmsError("sms_mcp.PLAN_NOT_SENT", f"Plan {plan_id} is {row.state.value}: nothing was sent.",
                           "Confirm it first (with the user's consent) if it should be sent."
                           if row.state is PlanState.PREPARED else "There are no receipts for it.")
        recovered = await self.ledger.recover(plan_id, self.clock())
        chunks = [c for c in await self.ledger.chunks(plan_id)
                  if c.state in (ChunkState.ACCEPTED, ChunkState.UNKNOWN)]
        date = china_today(row.sent_at or row.created_at)
        limiter = anyio.Semaphore(QUERY_CONCURRENCY)
        found: dict[tuple[int, str], dict[str, Any] | None] = {}

        async def one(chunk: ChunkRecord, number: str) -> None:
            async with limiter:
                await self.limiters["QuerySendDetails"].acquire()
                params = {"PhoneNumber": number, "SendDate": date, "PageSize": "50", "CurrentPage": "1"}
                if chunk.biz_id:
                    params["BizId"] = chunk.biz_id
                body = await self.read("QuerySendDetails", params)
                # The OutId ties a record to this chunk even when the BizId never reached us.
                matches = [d for d in details(body) if d.get("OutId") == chunk.out_id]
                found[(chunk.chunk_no, number)] = matches[0] if matches else None

        async with anyio.create_task_group() as tg:
            for chunk in chunks:
                for r in chunk.recipients:
                    tg.start_soon(one, chunk, r.number)

        reconciled: list[Reconciliation] = [
            Reconciliation(chunk_no=r.chunk_no, before=r.before.value, after=r.after.value,
                           evidence="Its server stopped before sending it (its lease expired).")
            for r in recovered if r.after is ChunkState.NOT_SENT]
        now = self.clock()
        grace = self.settings.reconcile_grace_seconds
        for chunk in chunks:
            if chunk.state is not ChunkState.UNKNOWN:
                continue
            hits = sum(found.get((chunk.chunk_no, r.number)) is not None for r in chunk.recipients)
            age = now - (chunk.claimed_at or 0.0)
            if hits:
                move = lifecycle.reconcile(ChunkState.ACCEPTED)
                await self.ledger.settle_chunk(plan_id, chunk.chunk_no, move.sources, move.target, ChunkAnswer(), now)
                reconciled.append(Reconciliation(
                    chunk_no=chunk.chunk_no, before=UNKNOWN, after=ChunkState.ACCEPTED.value,
                    evidence=f"Alibaba has records with OutId {chunk.out_id} for {hits} of {len(chunk.recipients)} "
                             "numbers."))
            elif age >= grace:
                move = lifecycle.reconcile(ChunkState.NOT_SENT)
                await self.ledger.settle_chunk(plan_id, chunk.chunk_no, move.sources, move.target, ChunkAnswer(
                    error_code=chunk.error_code, error_message=chunk.error_message), now)
                reconciled.append(Reconciliation(
                    chunk_no=chunk.chunk_no, before=UNKNOWN, after=ChunkState.NOT_SENT.value,
                    evidence=f"No record with OutId {chunk.out_id} for any of its {len(chunk.recipients)} numbers "
                             f"{int(age)} s after the attempt."))
            else:
                reconciled.append(Reconciliation(
                    chunk_no=chunk.chunk_no, before=UNKNOWN, after=UNKNOWN,
                    evidence=f"No record yet; too early to conclude. Query again in {max(1, int(grace - age))} s."))
        for r in reconciled:
            if r.after != r.before:
                self.audit.write(f"reconciled_{r.after}", plan_id, chunk=r.chunk_no,
                                 principal={"subject": principal.subject, "client_id": principal.client_id})
        records: list[DeliveryRecord] = []
        final_chunks = await self.ledger.chunks(plan_id)
        for chunk in final_chunks:
            if chunk.state not in (ChunkState.ACCEPTED, ChunkState.UNKNOWN):
                continue
            for r in chunk.recipients:
                detail = found.get((chunk.chunk_no, r.number))
                records.append(record(detail) if detail else DeliveryRecord(
                    phone_number=mask(r.number), status="pending", send_status=1))
        result = assemble(row, Plan.model_validate(row.summary), final_chunks, self.served(), replayed=True)
        status = lifecycle.outcome(row.state, (c.state for c in final_chunks))
        if status is Outcome.NOT_SENT:
            next_step = result.next_step
        elif status is Outcome.UNKNOWN:
            next_step = ("The outcome is still unknown; query again shortly. Do not prepare the same send again "
                         "before this reports not_sent or accepted.")
        else:
            next_step = details_next_step(records)
        return DeliveryReport(
            **self.served(), plan_id=plan_id, plan_status=result.status, reconciled=reconciled,
            biz_id=result.biz_id, send_date=date, total_count=len(records), current_page=1,
            page_size=len(records), records=records, summary=summary(records), next_step=next_step,
        )
