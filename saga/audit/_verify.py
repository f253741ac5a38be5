"""Verify the audit log's hash chains against the database, one saga or all of them.

Theory of operation
-------------------
:func:`saga.store.verify_chain` checks the records of a chain among themselves: an
altered record, a gap (records removed), a repeated position (a record inserted) and a
broken link. What a chain cannot show on its own is a removed *tail*: delete the last
records and what remains still verifies. Two anchors catch that:

* every record a decision writes names the decision in its (hashed) detail:
  ``decision = {revision, record, of}`` (see ``saga/coordinator/_writes.py``). The
  saga row's ``revision`` counts the decisions applied, so the newest decision must be
  in the log, with all ``of`` of its records;
* every decision writes the saga row (``updated_at = now``) and its records
  (``recorded_at = now``) in one transaction, so the newest record is never older than
  the saga's ``updated_at`` (this also covers records written before the decision
  marker existed). A saga without any record had all of them removed.

:func:`verify_all` walks the ``sagas`` table in pages of saga ids and reads the records
of one page in one query, so memory stays bounded by the page size; it yields each
page's problems as it goes, which lets the CLI show progress over many sagas.

Limits: records appended after the last decision that are not part of one (an ignored
event, an ``operator.requested``) can be removed from the very end unnoticed, and a
tail rewritten *and re-sealed* as a whole passes; the lifecycle events on Kafka (see
:func:`saga.audit.reconcile`) are the outside anchor for those.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from sqlalchemy.ext.asyncio import AsyncEngine

from saga.audit._reader import SagaHead, audit_records_of, get_saga_head, saga_pages
from saga.errors import SagaNotFound
from saga.store import AuditRecord, BreakReason, ChainBreak, SqlStore, verify_chain


class Problem(StrEnum):
    """What is wrong with an audit record, in the words an auditor uses."""

    ALTERED = "altered"
    """The record's content no longer matches its hash."""
    REMOVED = "removed"
    """Records are missing (a gap in the chain, or its end)."""
    INSERTED = "inserted"
    """A record claims a position that another record holds."""
    RELINKED = "relinked"
    """The record does not link to the one before it: that one was replaced and re-sealed."""


_PROBLEM_OF: Final[dict[BreakReason, Problem]] = {
    BreakReason.ALTERED: Problem.ALTERED,
    BreakReason.MISSING: Problem.REMOVED,
    BreakReason.DUPLICATE: Problem.INSERTED,
    BreakReason.RELINKED: Problem.RELINKED,
}


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditProblem:
    """One place where a saga's audit trail does not verify."""

    saga_id: str
    """The saga."""
    seq: int
    """The record's position in the chain (for ``removed``: the first missing one)."""
    problem: Problem
    """What is wrong."""
    detail: str
    """A sentence for humans."""

    @classmethod
    def from_break(cls, b: ChainBreak) -> AuditProblem:
        """The problem a chain break shows."""
        return cls(saga_id=b.saga_id, seq=b.seq, problem=_PROBLEM_OF[b.reason], detail=b.detail)


@dataclass(frozen=True, kw_only=True, slots=True)
class PageResult:
    """The outcome of verifying one page of sagas."""

    sagas: int
    """How many sagas the page held."""
    records: int
    """How many audit records were checked."""
    problems: list[AuditProblem]
    """Every problem found, by saga id and position."""


def _decision_of(record: AuditRecord) -> tuple[int, int, int] | None:
    """``(revision, record, of)`` of a record written by a decision, else ``None``."""
    mark = record.detail.get("decision") if isinstance(record.detail, dict) else None
    if not isinstance(mark, dict):
        return None
    values = (mark.get("revision"), mark.get("record"), mark.get("of"))
    if not all(isinstance(v, int) for v in values):
        return None
    revision, index, of = values
    return revision, index, of  # type: ignore[return-value]  # checked just above


def _tail_problems(
    head: SagaHead, records: Sequence[AuditRecord], altered: set[int]
) -> list[AuditProblem]:
    """Removed records at the end of the log, found through the saga row.

    Decision markers of ``altered`` records (by seq) are not trusted.
    """
    last = max(r.seq for r in records)
    found: list[AuditProblem] = []

    def removed(seq: int, detail: str) -> None:
        found.append(
            AuditProblem(saga_id=head.saga_id, seq=seq, problem=Problem.REMOVED, detail=detail)
        )

    marks = [
        (m, r.seq) for r in records if r.seq not in altered and (m := _decision_of(r)) is not None
    ]
    # Removed records in front of others leave a gap, which the chain check reports; so
    # only an end that is intact (not altered) is read for decision markers.
    if marks and head.revision is not None and last not in altered:
        newest = max(m[0] for m, _ in marks)
        if newest < head.revision:
            removed(
                last + 1,
                f"the records of decision(s) {newest + 1}..{head.revision} were removed "
                f"(the saga is at revision {head.revision}; the log ends at {newest})",
            )
        group = [(m, seq) for m, seq in marks if m[0] == newest]
        of = max(m[2] for m, _ in group)
        top_index, top_seq = max((m[1], seq) for m, seq in group)
        if top_index < of and top_seq == last:
            removed(
                top_seq + 1,
                f"records {top_index + 1}..{of} of decision {newest} (the newest) were removed",
            )
    newest_at = max(r.recorded_at for r in records)
    if newest_at < head.updated_at:
        removed(
            last + 1,
            f"records after seq {last} were removed: the saga was last changed at "
            f"{head.updated_at.isoformat()}, after its newest record ({newest_at.isoformat()})",
        )
    return found


def check_saga(
    head: SagaHead | None, saga_id: str, records: Sequence[AuditRecord]
) -> list[AuditProblem]:
    """Every problem of one saga's audit trail (pure).

    Args:
        head: The saga row, or ``None`` when only the records are known (then a removed
            tail cannot be seen).
        saga_id: The saga.
        records: All of its audit records (any order).

    Returns:
        The problems by position; one problem per position and kind.
    """
    problems = [AuditProblem.from_break(b) for b in verify_chain(records)]
    if head is None:
        return problems
    if not records:
        problems.append(
            AuditProblem(
                saga_id=saga_id,
                seq=1,
                problem=Problem.REMOVED,
                detail="the saga has no audit records: all of them were removed",
            )
        )
        return problems
    seen = {(p.seq, p.problem) for p in problems}
    altered = {p.seq for p in problems if p.problem is Problem.ALTERED}
    for p in _tail_problems(head, records, altered):
        if (p.seq, p.problem) not in seen:
            seen.add((p.seq, p.problem))
            problems.append(p)
    return sorted(problems, key=lambda p: (p.seq, p.problem))


async def verify_saga(store: SqlStore, saga_id: str) -> list[AuditProblem]:
    """Every problem of one saga's audit trail; an empty list means it verified.

    Raises:
        SagaNotFound: There is no saga with that id and no audit record names it.
        saga.errors.StoreUnavailable: The database cannot be reached.
    """
    head = await get_saga_head(store.engine, saga_id)
    records = await store.audit_trail(saga_id)
    if head is None and not records:
        raise SagaNotFound(f"no saga with id {saga_id}", saga_id=saga_id)
    return check_saga(head, saga_id, records)


async def verify_all(engine: AsyncEngine, *, page_size: int = 200) -> AsyncIterator[PageResult]:
    """Verify every saga's audit trail, one page of sagas at a time.

    Args:
        engine: The store's engine.
        page_size: Sagas per page (their records are read in one query).

    Yields:
        One result per page, in saga id order.

    Raises:
        saga.errors.StoreUnavailable: The database cannot be reached.
    """
    async for page in saga_pages(engine, page_size=page_size):
        by_saga = await audit_records_of(engine, [h.saga_id for h in page])
        problems: list[AuditProblem] = []
        for head in page:
            problems.extend(check_saga(head, head.saga_id, by_saga.get(head.saga_id, [])))
        yield PageResult(
            sagas=len(page),
            records=sum(len(v) for v in by_saga.values()),
            problems=problems,
        )
