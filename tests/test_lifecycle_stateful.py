"""The lifecycle's invariants under any interleaving: a hypothesis state machine over two server instances, each
with its own ledger connection to one SQLite file (as two processes would be), the emulator counting messages.

Steps: prepare (often an identical re-prepare: three numbers only), confirm (a replay when repeated), decline,
the human dismissing the prompt, an owner dying between any two of its transitions (after the plan claim, after
the chunk claim, after the API call), time passing (token expiry, lease expiry, reconcile grace), a restart, and
reconciliation. After every step, against what the emulator recorded: at most one message per chunk; none for
a declined, cancelled or unconfirmed plan; none for a chunk recorded rejected, not_sent or never claimed; one for
an accepted chunk; an unknown chunk never resent.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sms_mcp.config import Settings
from sms_mcp.core.errors import SmsError
from sms_mcp.core.lifecycle import ChunkState, PlanState
from sms_mcp.core.planner import SendRequest
from sms_mcp.core.ports import LOCAL_PRINCIPAL, Lease, SendLimits
from sms_mcp.core.service import SmsService
from sms_mcp.emulator.core import EmulatorCore
from sms_mcp.wire.sandbox import SandboxTransport

T = TypeVar("T")
NUMBERS = ("13700008001", "13700008002", "13700008003")
ARGS = {"sign_name": "速通科技", "template_code": "SMS_900000002",
        "template_param": {"name": "王女士", "order_no": "S1", "date": "周一"}}
LEASE = 10.0
GRACE = 30.0
TTL = 600.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_756_692_030.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Made:
    plan_id: str
    token: str
    number: str
    content_hash: str


class Lifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="lifecycle-"))
        self.clock = Clock()
        self.core = EmulatorCore(None, receipt_delay=0.0, clock=self.clock)
        self.loop = asyncio.new_event_loop()
        self.settings = Settings.from_env({"SMS_MCP_DATA_DIR": str(self.tmp), "SMS_MCP_BACKEND": "sandbox",
                                           "SMS_MCP_CONFIRM_TTL_SECONDS": str(TTL)})
        self.settings = self.settings.model_copy(update={"reconcile_grace_seconds": GRACE}) \
            if hasattr(self.settings, "model_copy") else self.settings
        self.services = [self._service(), self._service()]
        self.plans: list[Made] = []
        self.dead = 0

    def _service(self) -> SmsService:
        return SmsService(self.settings, SandboxTransport(self.core), clock=self.clock, lease_seconds=LEASE,
                          max_wait=0.05)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        for service in self.services:
            service.ledger.close()
        self.loop.close()
        self.core.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    @property
    def ledger(self) -> Any:
        return self.services[0].ledger

    def sent(self, out_id: str) -> int:
        return sum(1 for m in self.core.messages() if m["out_id"] == out_id)

    # ------------------------------------------------------------------ rules
    @rule(s=st.integers(0, 1), n=st.integers(0, len(NUMBERS) - 1))
    def prepare(self, s: int, n: int) -> None:
        number = NUMBERS[n]
        content = SendRequest.send_sms([number], ARGS["sign_name"], ARGS["template_code"], ARGS["template_param"],
                                       None).content_hash
        try:
            result = self.run(self.services[s].send_sms([number], **ARGS))  # type: ignore[arg-type]
        except SmsError as err:
            assert err.code == "sms_mcp.UNRECONCILED", err
            # Refused only while an identical confirmed plan is really outstanding.
            assert self.run(self.ledger.outstanding_like(content)) is not None
            return
        assert result.status == "pending_confirmation" and result.confirm_token
        # Prepared only when no identical plan's outcome is open (invariant 4).
        assert self.run(self.ledger.outstanding_like(content)) is None
        self.plans.append(Made(result.plan_id, result.confirm_token, number, content))

    @precondition(lambda self: self.plans)
    @rule(s=st.integers(0, 1), i=st.integers(0, 100))
    def confirm(self, s: int, i: int) -> None:
        made = self.plans[i % len(self.plans)]
        before = self.run(self.ledger.get_plan(made.plan_id))
        try:
            result = self.run(self.services[s].send_sms([made.number], **ARGS,  # type: ignore[arg-type]
                                                        confirm_token=made.token))
        except SmsError as err:
            if before.state is PlanState.CANCELLED:
                assert err.code == "sms_mcp.PLAN_CANCELLED"  # a confirm after a decline
            else:
                assert before.state is PlanState.PREPARED and err.code == "sms_mcp.TOKEN_EXPIRED", err
                assert before.expires_at <= self.clock()
            return
        assert before.state is not PlanState.CANCELLED
        if before.state is PlanState.PREPARED:  # this call won the confirmation: the sandbox accepts
            assert result.status == "accepted" and result.replayed is False
        else:
            assert result.replayed is True

    @precondition(lambda self: self.plans)
    @rule(s=st.integers(0, 1), i=st.integers(0, 100))
    def decline(self, s: int, i: int) -> None:
        made = self.plans[i % len(self.plans)]
        result = self.run(self.services[s].decline(made.token))
        after = self.run(self.ledger.get_plan(made.plan_id))
        if after.state is PlanState.CANCELLED:
            assert result.status == "cancelled" and self.sent(made.plan_id) == 0
        else:  # a decline after a send began reports the send, never "nothing was sent"
            assert after.state is PlanState.SENDING
            assert result.status != "cancelled" and "already sent" in result.message

    @precondition(lambda self: self.plans)
    @rule(s=st.integers(0, 1), i=st.integers(0, 100))
    def dismiss(self, s: int, i: int) -> None:
        made = self.plans[i % len(self.plans)]
        before = self.run(self.ledger.get_plan(made.plan_id))
        try:
            result = self.run(self.services[s].unanswered(made.token, "send_sms", {
                "phone_numbers": [made.number], **ARGS}))
        except SmsError as err:
            assert err.code == "sms_mcp.TOKEN_EXPIRED" and before.state is PlanState.PREPARED
            assert before.expires_at <= self.clock()
            result = None
        after = self.run(self.ledger.get_plan(made.plan_id))
        assert after.state is before.state  # a dismissed prompt changes nothing
        if before.state is PlanState.PREPARED and result is not None:
            assert result.status == "pending_confirmation"

    @precondition(lambda self: self.plans)
    @rule(i=st.integers(0, 100), stage=st.sampled_from(["plan_claimed", "chunk_claimed", "call_made"]))
    def owner_dies(self, i: int, stage: str) -> None:
        """A process confirms, then dies after ``stage`` (a crash leaves exactly these ledger writes behind)."""
        made = self.plans[i % len(self.plans)]
        self.dead += 1
        lease = Lease(f"dead-{self.dead}", LEASE)
        now = self.clock()
        if not self.run(self.ledger.confirm_plan(made.plan_id, LOCAL_PRINCIPAL, lease, now)).won:
            return
        if stage == "plan_claimed":
            return
        claim = self.run(self.ledger.claim_chunk(made.plan_id, 1, lease, now, SendLimits()))
        assert claim.status.value == "claimed"
        if stage == "call_made":
            body = self.core.handle(claim.chunk.action, dict(claim.chunk.params))
            assert body["Code"] == "OK"

    @rule(seconds=st.sampled_from([1.0, LEASE + 1, GRACE + 1, TTL + 1]))
    def time_passes(self, seconds: float) -> None:
        self.clock.now += seconds

    @rule(s=st.integers(0, 1))
    def restart(self, s: int) -> None:
        self.services[s].ledger.close()
        self.services[s] = self._service()

    @precondition(lambda self: self.plans)
    @rule(s=st.integers(0, 1), i=st.integers(0, 100))
    def reconcile(self, s: int, i: int) -> None:
        made = self.plans[i % len(self.plans)]
        try:
            report = self.run(self.services[s].query_details(plan_id=made.plan_id))
        except SmsError as err:
            assert err.code == "sms_mcp.PLAN_NOT_SENT"
            return
        for r in report.reconciled:
            if r.after == "not_sent":
                assert self.sent(made.plan_id) == 0

    # ------------------------------------------------------------------ invariants
    @invariant()
    def what_reached_alibaba_matches_the_ledger(self) -> None:
        for made in self.plans:
            plan = self.run(self.ledger.get_plan(made.plan_id))
            chunk = self.run(self.ledger.chunks(made.plan_id))[0]
            sent = self.sent(chunk.out_id)
            assert sent <= 1, f"{made.plan_id}: {sent} messages for one chunk"
            if plan.state is not PlanState.SENDING:
                assert sent == 0, f"{made.plan_id} is {plan.state.value} but sent"
            if chunk.state in (ChunkState.PENDING, ChunkState.REJECTED, ChunkState.NOT_SENT):
                assert sent == 0, f"{made.plan_id}: chunk {chunk.state.value} but sent"
            if chunk.state is ChunkState.ACCEPTED:
                assert sent == 1, f"{made.plan_id}: accepted but not recorded"


TestLifecycle = Lifecycle.TestCase
TestLifecycle.settings = settings(max_examples=100, stateful_step_count=40, deadline=None,
                                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
