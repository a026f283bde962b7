"""The ledger port: what the domain needs from durable storage, and the typed values that cross it.

The domain (``sms_mcp.core``) depends only on :class:`LedgerPort`; adapters live in ``sms_mcp.ledger`` (SQLite,
the embedded default; PostgreSQL for a shared gateway). Every adapter passes ``tests/ledger_contract.py``.

Conventions every adapter keeps:

* All methods are ``async`` and never block the event loop (blocking drivers run in a worker thread).
* Time is the caller's: every method that decides by time takes ``now`` (seconds since the epoch), so the
  domain's clock (a fake one in tests) is the only clock.
* State changes are the compare-and-set transitions of :mod:`sms_mcp.core.lifecycle`, each applied in one
  transaction together with everything it implies (budgets counted, budgets released, leases set).
* Storage failures raise :class:`LedgerUnavailable` (never a driver exception): the domain turns it into an
  answer that says whether an SMS may have left.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol, runtime_checkable

from sms_mcp.core.lifecycle import ChunkState, PlanState


@dataclass(frozen=True)
class Principal:
    """Who is calling: the authenticated subject and the OAuth client (or API key) it called through."""

    subject: str
    client_id: str

    def __str__(self) -> str:
        return f"{self.subject} via {self.client_id}"


#: The one principal of a stdio server: whoever started it on this machine.
LOCAL_PRINCIPAL = Principal(subject="local", client_id="stdio")


@dataclass(frozen=True)
class Recipient:
    """One message of a chunk: the number in wire form (as Alibaba gets it) and the SMS signature."""

    number: str
    sign_name: str


@dataclass(frozen=True)
class NewChunk:
    chunk_no: int
    action: str  # "SendSms" | "SendBatchSms"
    params: Mapping[str, str]  # the exact API parameters
    recipients: tuple[Recipient, ...]
    out_id: str


@dataclass(frozen=True)
class NewPlan:
    plan_id: str
    token_hash: str  # SHA-256 of the confirmation token; the token itself is never stored
    tool: str
    args_hash: str  # what the token is bound to
    content_hash: str  # what reaches the handsets (the duplicate guard's key)
    principal: Principal
    template_code: str
    template_type: str
    created_at: float
    expires_at: float
    summary: Mapping[str, Any]  # the plan as shown to the human (JSON-able), returned verbatim
    chunks: tuple[NewChunk, ...]


@dataclass(frozen=True)
class PlanRecord:
    plan_id: str
    tool: str
    args_hash: str
    content_hash: str | None
    principal: Principal
    template_code: str
    template_type: str
    state: PlanState
    created_at: float
    expires_at: float
    sent_at: float | None  # when it was confirmed
    owner: str | None  # the lease holder, once confirmed
    lease_expires: float | None
    summary: Mapping[str, Any]


@dataclass(frozen=True)
class ChunkRecord:
    plan_id: str
    chunk_no: int
    state: ChunkState
    action: str
    params: Mapping[str, str]
    recipients: tuple[Recipient, ...]
    out_id: str
    owner: str | None
    claimed_at: float | None
    lease_expires: float | None
    biz_id: str | None
    request_id: str | None
    error_code: str | None
    error_message: str | None


@dataclass(frozen=True)
class Lease:
    """A claim's owner and how long the claim holds without renewal."""

    owner: str
    seconds: float


@dataclass(frozen=True)
class PlanChange:
    """The answer of a plan transition: whether this caller won, and the plan as it is now (the winner's state
    when it lost), read in the same transaction. ``plan`` is None when there is no such plan."""

    won: bool
    plan: PlanRecord | None


@dataclass(frozen=True)
class FlowWindow:
    """One of Alibaba's per-number flow-control windows, mirrored locally (dysmsapi.md §9.4).

    At most ``limit`` messages to one number and signature (and template, with ``same_template``) since
    ``since``. ``reopens_at`` is when the window moves on; None for a rolling window, which reopens 24 h after
    its oldest message."""

    name: str  # "minute", "hour", "day"
    since: float
    limit: int
    same_template: bool = False
    reopens_at: float | None = None


@dataclass(frozen=True)
class SendLimits:
    """The limits a chunk claim enforces atomically. None/empty: not enforced."""

    day_start: float = 0.0  # the start of today (UTC+8) for the daily budgets
    daily_limit: int | None = None  # server-wide messages per day
    principal_daily_limit: int | None = None  # messages per day for the plan's principal (by subject)
    flow_windows: tuple[FlowWindow, ...] = ()

    @property
    def history_since(self) -> float | None:
        return min((w.since for w in self.flow_windows), default=None)


@dataclass(frozen=True)
class SentMessage:
    """A message counted against the budgets (its chunk was claimed and not released)."""

    number: str
    sign_name: str
    template_code: str
    sent_at: float


@dataclass(frozen=True)
class Refusal:
    """Why a limit refused a claim; the chunk is recorded ``rejected`` with this code and message."""

    code: str
    message: str
    retry_at: float | None = None


class ClaimStatus(str, Enum):
    CLAIMED = "claimed"  # the intent is durable: the caller makes the one API call
    TAKEN = "taken"  # the chunk is not pending any more (another caller, or already settled)
    LEASE_LOST = "lease_lost"  # the caller does not hold a valid lease on the plan: it must stop
    REFUSED = "refused"  # a limit refused it; the chunk is now rejected (nothing sent)


@dataclass(frozen=True)
class ChunkClaim:
    status: ClaimStatus
    chunk: ChunkRecord | None  # the chunk as it is after the claim (same transaction)
    refusal: Refusal | None = None


@dataclass(frozen=True)
class ChunkAnswer:
    """What the API call (or reconciliation) established about a chunk."""

    biz_id: str | None = None
    request_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class Recovered:
    """One chunk recovery settled: what it was, what it is now."""

    chunk_no: int
    before: ChunkState
    after: ChunkState


@dataclass(frozen=True)
class LedgerHealth:
    location: str  # a path or a URL without credentials
    schema_version: int
    plans: int
    warning: str | None = None  # e.g. the ledger is new but the audit log shows earlier plans


class LedgerUnavailable(Exception):
    """The ledger cannot be read or written (missing, corrupted, read-only, database down).

    ``location`` names the file or database; ``hint`` says what to do. Raised instead of driver exceptions."""

    def __init__(self, location: str, reason: str, hint: str) -> None:
        super().__init__(f"ledger {location}: {reason}. {hint}")
        self.location = location
        self.reason = reason
        self.hint = hint


@runtime_checkable
class LedgerPort(Protocol):
    """Durable plans, chunks and send history, shared safely by every server process that uses it."""

    async def health(self) -> LedgerHealth:
        """Check that the ledger can be read and written; raises :class:`LedgerUnavailable` otherwise."""
        ...

    async def aclose(self) -> None: ...

    # plans
    async def create_plan(self, plan: NewPlan) -> None:
        """Store a prepared plan and its pending chunks, atomically."""
        ...

    async def plan_by_token(self, token_hash: str) -> PlanRecord | None: ...

    async def get_plan(self, plan_id: str) -> PlanRecord | None: ...

    async def confirm_plan(self, plan_id: str, principal: Principal, lease: Lease, now: float) -> PlanChange:
        """``prepared -> sending`` if unexpired and prepared by ``principal``; takes the plan's lease. Exactly one
        caller ever wins per plan."""
        ...

    async def decline_plan(self, plan_id: str, principal: Principal, now: float) -> PlanChange:
        """``prepared -> cancelled`` if prepared by ``principal`` (expired or not)."""
        ...

    async def renew_lease(self, plan_id: str, lease: Lease, now: float) -> bool:
        """Extend the plan's lease, and the leases of the chunks this owner is sending, to ``now + seconds``.
        False (and nothing changes) when the lease is not this owner's or already expired."""
        ...

    async def outstanding_like(self, content_hash: str) -> str | None:
        """The id of a confirmed plan with the same content whose outcome is not final, if any."""
        ...

    # chunks
    async def chunks(self, plan_id: str) -> list[ChunkRecord]: ...

    async def claim_chunk(
        self, plan_id: str, chunk_no: int, lease: Lease, now: float, limits: SendLimits
    ) -> ChunkClaim:
        """``pending -> sending`` for the holder of the plan's valid lease; in the same transaction the chunk's
        messages are checked against ``limits`` (refused: ``pending -> rejected``) and counted in the send
        history. See :func:`sms_mcp.core.limits.evaluate` for the check every adapter applies."""
        ...

    async def settle_chunk(
        self, plan_id: str, chunk_no: int, sources: frozenset[ChunkState], target: ChunkState,
        answer: ChunkAnswer, now: float,
    ) -> bool:
        """Apply a checked transition (``lifecycle.settle``/``reconcile``). Moving to a state in
        ``CHUNK_NOTHING_SENT`` releases the chunk's messages from the history. True if this call changed it."""
        ...

    async def recover(self, plan_id: str, now: float) -> list[Recovered]:
        """Settle what an owner whose lease expired left behind (see lifecycle's docstring)."""
        ...

    # history
    async def sends_since(self, since: float, principal: Principal | None = None) -> int:
        """Messages counted since a time (for one principal's subject, if given)."""
        ...

    async def recent_sends(self, since: float, numbers: Sequence[str]) -> list[SentMessage]: ...

