"""check_saga: chain breaks in auditor's words, plus the saga row as the tail anchor."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from saga.audit import Problem, SagaHead, check_saga
from saga.store import GENESIS, AuditRecord, record_hash

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def chain(n: int, saga_id: str = "s1") -> list[AuditRecord]:
    records, prev = [], GENESIS
    for seq in range(1, n + 1):
        at = T0 + timedelta(seconds=seq)
        fields = dict(
            saga_id=saga_id, seq=seq, recorded_at=at, kind=f"k{seq}", step=None, attempt=None,
            actor="coordinator", detail={"n": seq},
        )  # fmt: skip
        h = record_hash(prev, **fields)
        records.append(AuditRecord(id=seq, prev_hash=prev, hash=h, **fields))
        prev = h
    return records


def head(records: list[AuditRecord]) -> SagaHead:
    last = max(r.recorded_at for r in records)
    return SagaHead(saga_id="s1", saga_type="trip", status="completed", updated_at=last)


def problems(h: SagaHead | None, records: list[AuditRecord]) -> list[tuple[int, Problem]]:
    return [(p.seq, p.problem) for p in check_saga(h, "s1", records)]


def test_an_intact_chain_has_no_problem() -> None:
    records = chain(4)
    assert problems(head(records), records) == []


def test_an_edited_detail_is_altered() -> None:
    records = chain(4)
    h = head(records)
    records[1] = dataclasses.replace(records[1], detail={"n": 99})
    assert problems(h, records) == [(2, Problem.ALTERED)]


def test_a_row_removed_in_the_middle_or_at_the_start_is_removed() -> None:
    records = chain(4)
    h = head(records)
    assert problems(h, records[:2] + records[3:]) == [(3, Problem.REMOVED)]
    assert problems(h, records[1:]) == [(1, Problem.REMOVED)]


def test_a_removed_tail_is_found_through_the_saga_row() -> None:
    records = chain(4)
    h = head(records)
    found = check_saga(h, "s1", records[:3])
    assert [(p.seq, p.problem) for p in found] == [(4, Problem.REMOVED)]
    assert "after seq 3 were removed" in found[0].detail
    # without the saga row, a truncated chain still verifies (the documented limit)
    assert problems(None, records[:3]) == []


def test_a_saga_without_records_had_them_all_removed() -> None:
    assert problems(head(chain(1)), []) == [(1, Problem.REMOVED)]


def test_a_second_record_at_a_taken_position_is_inserted() -> None:
    records = chain(3)
    extra = dataclasses.replace(records[1], id=10, detail={"forged": True})
    assert (2, Problem.INSERTED) in problems(head(records), [*records, extra])


def decided(sizes: list[int]) -> list[AuditRecord]:
    """A chain written by decisions of the given sizes (revision 1, 2, ...), marked."""
    records, prev, seq = [], GENESIS, 0
    for revision, size in enumerate(sizes, start=1):
        for i in range(1, size + 1):
            seq += 1
            fields = dict(
                saga_id="s1", seq=seq, recorded_at=T0 + timedelta(seconds=revision), kind="k",
                step=None, attempt=None, actor=None,
                detail={"decision": {"revision": revision, "record": i, "of": size}},
            )  # fmt: skip
            h = record_hash(prev, **fields)
            records.append(AuditRecord(id=seq, prev_hash=prev, hash=h, **fields))
            prev = h
    return records


def test_the_end_of_the_newest_decision_removed_is_found_through_its_marker() -> None:
    records = decided([2, 3])
    h = dataclasses.replace(head(records), revision=2)
    assert problems(h, records) == []
    found = check_saga(h, "s1", records[:4])  # record 3 of 3 of decision 2 is gone
    assert [(p.seq, p.problem) for p in found] == [(5, Problem.REMOVED)]
    assert "of decision 2" in found[0].detail


def test_a_whole_decision_removed_from_the_end_is_found_through_the_revision() -> None:
    records = decided([2, 3])
    h = dataclasses.replace(head(records), revision=2)
    found = check_saga(h, "s1", records[:2])
    assert [(p.seq, p.problem) for p in found] == [(3, Problem.REMOVED)]  # reported once
    assert "decision(s) 2..2" in found[0].detail
