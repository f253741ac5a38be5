"""The audit hash chain: each record seals the one before it.

Theory of operation
-------------------
Record ``n`` of a saga has ``seq = n``, ``prev_hash`` = the hash of record ``n - 1``
(:data:`GENESIS` for the first) and::

    hash = sha256(prev_hash + canonical_json({saga_id, seq, recorded_at, kind, step,
                                              attempt, actor, detail}))

where ``recorded_at`` is ISO 8601 in UTC with microseconds and canonical JSON has sorted
keys and no whitespace. The store computes ``seq`` and ``prev_hash`` inside the
transaction that appends (see ``SqlTransaction.append_audit``), and the unique key
``(saga_id, seq)`` turns two concurrent appenders into a conflict instead of a fork.

What :func:`verify_chain` detects, per saga:

* an **altered** record: its content no longer matches its own hash;
* **missing** records: a gap in ``seq`` (records were removed);
* a **duplicate** ``seq`` (a second record claims a taken position);
* a **relinked** record: its ``prev_hash`` is not the hash of the record before it
  (a record in front of it was replaced, inserted or removed and re-sealed).

A chain alone cannot reveal a truncated tail or a tail that was rewritten and re-sealed
as a whole; the lifecycle events published to Kafka are the outside anchor for that.

Details are stored in their JSON form (:func:`normalize_detail`), so what is hashed at
append time is exactly what is read back later.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from saga.store._records import AuditRecord, as_utc

GENESIS: Final = "0" * 64
"""``prev_hash`` of every saga's first record."""


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys (values JSON cannot hold are written as text)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def normalize_detail(detail: dict[str, Any]) -> dict[str, Any]:
    """``detail`` as it reads back from a JSON column (UUIDs and datetimes become text)."""
    normalized: dict[str, Any] = json.loads(canonical_json(detail))
    return normalized


def record_hash(
    prev_hash: str,
    *,
    saga_id: str,
    seq: int,
    recorded_at: datetime,
    kind: str,
    step: str | None,
    attempt: int | None,
    actor: str | None,
    detail: dict[str, Any],
) -> str:
    """The hash of one record, given the hash of the record before it."""
    body = canonical_json(
        {
            "saga_id": saga_id,
            "seq": seq,
            "recorded_at": as_utc(recorded_at).isoformat(timespec="microseconds"),
            "kind": kind,
            "step": step,
            "attempt": attempt,
            "actor": actor,
            "detail": detail,
        }
    )
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


def hash_of(record: AuditRecord) -> str:
    """Recompute a stored record's hash from its content and its ``prev_hash``."""
    return record_hash(
        record.prev_hash,
        saga_id=record.saga_id,
        seq=record.seq,
        recorded_at=record.recorded_at,
        kind=record.kind,
        step=record.step,
        attempt=record.attempt,
        actor=record.actor,
        detail=record.detail,
    )


class BreakReason(StrEnum):
    """Why a chain does not verify at some record."""

    ALTERED = "altered"
    """The record's content does not match its hash."""
    MISSING = "missing"
    """Records before this one are missing (a gap in ``seq``)."""
    DUPLICATE = "duplicate"
    """Another record already has this ``seq``."""
    RELINKED = "relinked"
    """The record's ``prev_hash`` is not the hash of the record before it."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ChainBreak:
    """One place where a saga's audit chain does not verify."""

    saga_id: str
    """The saga whose chain is broken."""
    seq: int
    """Where the break shows (for ``missing``: the first missing ``seq``)."""
    reason: BreakReason
    """What is wrong."""
    detail: str
    """A sentence for humans."""


def verify_chain(records: Iterable[AuditRecord]) -> list[ChainBreak]:
    """Check audit records (of one or more sagas, in any order); return every break.

    Pure: it reads nothing but its argument, so the CLI, the API and tests share it.
    An empty list means every chain verified.
    """
    by_saga: dict[str, list[AuditRecord]] = {}
    for record in records:
        by_saga.setdefault(record.saga_id, []).append(record)
    breaks: list[ChainBreak] = []
    for saga_id in sorted(by_saga):
        breaks.extend(_verify_one(saga_id, by_saga[saga_id]))
    return breaks


def _verify_one(saga_id: str, records: list[AuditRecord]) -> list[ChainBreak]:
    breaks: list[ChainBreak] = []

    def add(seq: int, reason: BreakReason, detail: str) -> None:
        breaks.append(ChainBreak(saga_id=saga_id, seq=seq, reason=reason, detail=detail))

    prev_hash = GENESIS
    expected = 1
    for r in sorted(records, key=lambda r: (r.seq, r.id)):
        if r.seq < expected:
            add(r.seq, BreakReason.DUPLICATE, f"record id {r.id} repeats seq {r.seq}")
            continue
        gap = r.seq > expected
        if gap:
            missing = f"{expected}" if r.seq == expected + 1 else f"{expected}..{r.seq - 1}"
            add(expected, BreakReason.MISSING, f"record(s) {missing} are missing")
        if hash_of(r) != r.hash:
            add(r.seq, BreakReason.ALTERED, f"record {r.seq} ({r.kind}) does not match its hash")
        elif r.prev_hash != prev_hash and not gap:
            add(
                r.seq,
                BreakReason.RELINKED,
                f"record {r.seq} does not link to record {r.seq - 1}",
            )
        prev_hash = r.hash
        expected = r.seq + 1
    return breaks
