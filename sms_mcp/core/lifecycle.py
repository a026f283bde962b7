"""The plan lifecycle: the only place where plan and chunk states, and the moves between them, are defined.

A *plan* is what the human confirms; it holds one or more *chunks*, the API-sized requests it needs, each with
its own OutId::

    plan:   prepared ──confirm──▶ sending            (final: the confirmation was used)
            prepared ──decline──▶ cancelled          (final: nothing will ever be sent)

    chunk:  pending ──claim (intent written)──▶ sending ──answer──▶ accepted | rejected | unknown
            pending ──refused by a limit at claim time──▶ rejected
            pending ──its plan's owner lost its lease before claiming it──▶ not_sent
            sending ──its owner's lease expired (crash, hang)──▶ unknown
            unknown ──reconciliation found Alibaba's record (or a late answer)──▶ accepted | rejected
            unknown ──reconciliation: no record after the grace period──▶ not_sent

Every state change goes through :func:`transition`, which checks the move against the table below and returns
the compare-and-set an adapter applies in the same transaction (``UPDATE … SET state = target WHERE state IN
sources``): a change that lost a race changes nothing, and the loser re-reads the winner's state.

Invariants (the ledger contract suite and the stateful property test check them):

1. A chunk is sent at most once, and only after its intent (``pending -> sending``, with the messages counted
   against the budgets) is durable. Only the current holder of the plan's lease may claim a chunk.
2. A declined (``cancelled``) or unconfirmed (``prepared``) plan never sends; a confirmation that loses the race
   to a decline answers ``PLAN_CANCELLED``, and a decline that loses to a confirmation reports what the
   confirmation recorded, never "nothing was sent".
3. An ``unknown`` chunk is never resent: it only leaves ``unknown`` through reconciliation (or the answer that
   was outstanding). ``not_sent`` is concluded only when Alibaba has no record of the chunk's OutId after the
   reconcile grace period, counted from the claim (the grace must exceed the longest a request can be in
   flight: read timeout plus a margin).
4. A plan whose outcome is not final (any chunk ``pending``, ``sending`` or ``unknown`` in a confirmed plan)
   blocks the preparation of an identical plan (same messages, whatever the order and OutId).
5. A plan is confirmed, declined or replayed only by the principal that prepared it; anyone else gets the
   answer an unknown token gets.
6. The daily budgets (server-wide and per principal) and the local mirror of Alibaba's per-number flow control
   are checked in the same transaction as the chunk claim that uses them, so concurrent confirmations cannot
   pass a limit together.

Crash recovery (leases, not process liveness, so owners on other hosts can be judged):

* Confirming a plan takes its *lease*: an owner id (``host:pid:random``) and an expiry ``now + lease``. While the
  owner drives the plan it renews the lease (and the lease of every chunk it is sending) every third of the
  lease. An expired lease is never renewed again: renewal, like a chunk claim, requires the lease to be valid.
* :meth:`~sms_mcp.core.ports.LedgerPort.recover` (run by anyone who touches the plan: a replay, the duplicate
  guard, reconciliation) settles what a dead owner left: a ``sending`` chunk whose lease expired becomes
  ``unknown`` (its request may be on the wire; it is reconciled, never resent); a ``pending`` chunk of a
  ``sending`` plan whose lease expired becomes ``not_sent`` (its intent was never written, so it cannot have
  been sent, and no one can claim it any more: the confirmation died with its owner). Until then the plan counts
  as outstanding for the duplicate guard. Recovery is deterministic: it depends only on the ledger and the time.
* Owners on different hosts need clocks that agree to well within the lease (NTP).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar


class PlanState(str, Enum):
    PREPARED = "prepared"
    SENDING = "sending"
    CANCELLED = "cancelled"


class ChunkState(str, Enum):
    PENDING = "pending"
    SENDING = "sending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    UNKNOWN = "unknown"
    NOT_SENT = "not_sent"


class Outcome(str, Enum):
    """A plan's outcome as the agent sees it, derived from the plan's and its chunks' states."""

    PENDING_CONFIRMATION = "pending_confirmation"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    NOT_SENT = "not_sent"
    PARTIAL = "partial"


PLAN_TRANSITIONS: Mapping[PlanState, frozenset[PlanState]] = {
    PlanState.PREPARED: frozenset({PlanState.SENDING, PlanState.CANCELLED}),
    PlanState.SENDING: frozenset(),
    PlanState.CANCELLED: frozenset(),
}

CHUNK_TRANSITIONS: Mapping[ChunkState, frozenset[ChunkState]] = {
    ChunkState.PENDING: frozenset({ChunkState.SENDING, ChunkState.REJECTED, ChunkState.NOT_SENT}),
    ChunkState.SENDING: frozenset({ChunkState.ACCEPTED, ChunkState.REJECTED, ChunkState.UNKNOWN}),
    ChunkState.UNKNOWN: frozenset({ChunkState.ACCEPTED, ChunkState.REJECTED, ChunkState.NOT_SENT}),
    ChunkState.ACCEPTED: frozenset(),
    ChunkState.REJECTED: frozenset(),
    ChunkState.NOT_SENT: frozenset(),
}

#: A chunk in one of these states may still reach (or have reached) a handset without our knowing.
CHUNK_OPEN = frozenset({ChunkState.PENDING, ChunkState.SENDING, ChunkState.UNKNOWN})
#: Chunk states that released their messages from the budgets (nothing reached a handset).
CHUNK_NOTHING_SENT = frozenset({ChunkState.REJECTED, ChunkState.NOT_SENT})

S = TypeVar("S", PlanState, ChunkState)


class IllegalTransition(ValueError):
    """A state change the lifecycle does not allow: a bug in the caller, never a race."""


@dataclass(frozen=True)
class Transition(Generic[S]):
    """A checked compare-and-set: move from any of ``sources`` to ``target``."""

    sources: frozenset[S]
    target: S

    @property
    def source_values(self) -> tuple[str, ...]:
        return tuple(sorted(s.value for s in self.sources))


def transition(sources: S | Iterable[S], target: S) -> Transition[S]:
    """The one way to change a state: checks every ``source -> target`` against the table and returns the
    compare-and-set the ledger applies in its transaction."""
    found = frozenset([sources]) if isinstance(sources, (PlanState, ChunkState)) else frozenset(sources)
    if not found:
        raise IllegalTransition("a transition needs at least one source state")
    table: Mapping[S, frozenset[S]] = (
        PLAN_TRANSITIONS if isinstance(target, PlanState) else CHUNK_TRANSITIONS  # type: ignore[assignment]
    )
    for source in found:
        if type(source) is not type(target):
            raise IllegalTransition(f"{source!r} -> {target!r} mixes plan and chunk states")
        if target not in table[source]:
            raise IllegalTransition(f"{source.value} -> {target.value} is not a lifecycle transition")
    return Transition(found, target)


# The transitions the ledger applies, named by what they mean.
CONFIRM = transition(PlanState.PREPARED, PlanState.SENDING)
DECLINE = transition(PlanState.PREPARED, PlanState.CANCELLED)
CLAIM_CHUNK = transition(ChunkState.PENDING, ChunkState.SENDING)
REFUSE_CHUNK = transition(ChunkState.PENDING, ChunkState.REJECTED)
ABANDON_CHUNK = transition(ChunkState.PENDING, ChunkState.NOT_SENT)
ORPHAN_CHUNK = transition(ChunkState.SENDING, ChunkState.UNKNOWN)


def settle(target: ChunkState) -> Transition[ChunkState]:
    """The owner recording an answer (``sending -> accepted | rejected | unknown``); a late answer may also
    settle a chunk that recovery already turned ``unknown`` (it is better evidence than no record)."""
    if target is ChunkState.UNKNOWN:
        return transition(ChunkState.SENDING, target)
    return transition({ChunkState.SENDING, ChunkState.UNKNOWN}, target)


def reconcile(target: ChunkState) -> Transition[ChunkState]:
    """Reconciliation against Alibaba's records: ``unknown -> accepted | not_sent``."""
    return transition(ChunkState.UNKNOWN, target)


def outcome(plan: PlanState, chunks: Iterable[ChunkState]) -> Outcome:
    """The plan's outcome: not final while any chunk is open; otherwise what its chunks say together."""
    if plan is PlanState.PREPARED:
        return Outcome.PENDING_CONFIRMATION
    if plan is PlanState.CANCELLED:
        return Outcome.CANCELLED
    states = set(chunks)
    if states & CHUNK_OPEN:
        return Outcome.UNKNOWN
    if states == {ChunkState.ACCEPTED}:
        return Outcome.ACCEPTED
    if states == {ChunkState.NOT_SENT}:
        return Outcome.NOT_SENT
    if ChunkState.ACCEPTED not in states:
        return Outcome.REJECTED
    return Outcome.PARTIAL


def is_outstanding(plan: PlanState, chunks: Iterable[ChunkState]) -> bool:
    """Blocks an identical plan (invariant 4)."""
    return plan is PlanState.SENDING and bool(set(chunks) & CHUNK_OPEN)
