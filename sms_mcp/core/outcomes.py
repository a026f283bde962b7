"""What a plan's recorded outcome means for the agent: the SendResult, with its message and next step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sms_mcp.core import errors
from sms_mcp.core.lifecycle import ChunkState, Outcome, outcome
from sms_mcp.core.models import ChunkOutcome, Plan, SendResult
from sms_mcp.core.ports import ChunkRecord, PlanRecord

ACCEPTED_IS_NOT_DELIVERED = (
    "Accepted is not delivered: Alibaba took the request; carriers report delivery 10-30 s later."
)


def assemble(record: PlanRecord, plan: Plan, chunks: Sequence[ChunkRecord], served: dict[str, Any],
             replayed: bool) -> SendResult:
    """The plan's result, derived from its chunks' recorded outcomes."""
    plan_id = record.plan_id
    outcomes = [ChunkOutcome(chunk_no=c.chunk_no, recipient_count=len(c.recipients), state=c.state.value,  # type: ignore[arg-type]
                             out_id=c.out_id, biz_id=c.biz_id, request_id=c.request_id, error_code=c.error_code,
                             error_message=c.error_message) for c in chunks]
    count: dict[ChunkState, int] = {}
    for c in chunks:
        count[c.state] = count.get(c.state, 0) + len(c.recipients)
    first_ok = next((c for c in chunks if c.state is ChunkState.ACCEPTED), None)
    first_bad = next((c for c in chunks if c.state not in (ChunkState.ACCEPTED, ChunkState.PENDING)), None)
    reconcile = f"query_details(plan_id='{plan_id}')"
    status = outcome(record.state, (c.state for c in chunks))
    accepted = count.get(ChunkState.ACCEPTED, 0)
    if status is Outcome.UNKNOWN:
        open_count = count.get(ChunkState.UNKNOWN, 0) + count.get(ChunkState.SENDING, 0) + \
            count.get(ChunkState.PENDING, 0)
        message = (f"It is UNKNOWN whether {open_count} recipient(s) were sent; nothing is resent automatically."
                   + (f" {accepted} recipient(s) were accepted." if accepted else ""))
        next_step = (f"Do NOT prepare the same send again. Call {reconcile} to reconcile against Alibaba's "
                     "records first; only a not_sent outcome allows a fresh plan.")
    elif status is Outcome.ACCEPTED:
        message = (f"Alibaba accepted the request for {plan.recipient_count} recipient(s)"
                   + (f" in {len(chunks)} requests" if len(chunks) > 1 else "") + ". " + ACCEPTED_IS_NOT_DELIVERED)
        next_step = f"Wait 10-30 s, then call {reconcile} to see delivery receipts. Do not send again."
    elif status is Outcome.NOT_SENT:
        lost = first_bad is not None and first_bad.error_code == "sms_mcp.CONFIRMATION_LOST"
        message = ("The server that confirmed this plan stopped before sending it; nothing was sent."
                   if lost else "Reconciliation showed that nothing of this plan reached Alibaba; nothing was sent.")
        next_step = "With the user's consent, a fresh plan with the same arguments may now be prepared."
    elif status is Outcome.REJECTED:
        message = f"Alibaba rejected the request ({first_bad.error_code if first_bad else '?'}); nothing was sent."
        step = errors.explain(first_bad.error_code or "")[1] if first_bad else ""
        next_step = step or "Fix the cause and prepare a new plan."
    else:  # partial
        refused = sum(v for s, v in count.items() if s is not ChunkState.ACCEPTED)
        message = (f"Partly sent: {accepted} recipient(s) accepted, {refused} not sent "
                   f"({first_bad.error_code if first_bad else '?'}). See chunks.")
        next_step = (f"Check {reconcile} for the accepted ones. To reach the others, fix the cause and prepare "
                     "a new plan with only those numbers, with the user's consent.")
    return SendResult(
        **served, status=status.value, plan_id=plan_id, plan=plan,  # type: ignore[arg-type]
        biz_id=first_ok.biz_id if first_ok else None,
        request_id=(first_ok or first_bad).request_id if (first_ok or first_bad) else None,
        error_code=first_bad.error_code if first_bad else None,
        error_message=first_bad.error_message if first_bad else None,
        chunks=outcomes, replayed=replayed, message=message, next_step=next_step,
    )
