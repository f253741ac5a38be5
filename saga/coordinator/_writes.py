"""Turn engine decisions into store writes (the one place that does it).

Both entry points that change sagas — starting one (API, CLI) and applying a batch of
replies (the coordinator loop) — persist a :class:`saga.engine.Decision` the same way:
the saga row, step executions, commands and lifecycle events into the outbox, timers,
and audit records.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from contracts import Envelope, MessageKind
from saga.deadletter import ConsumedRecord, dead_letter_of
from saga.engine import Decision, LifecycleEvent, SagaState
from saga.kafka import shard_of
from saga.store import (
    AuditWrite,
    JsonText,
    LockWrite,
    OffsetCommit,
    OutboxMessage,
    SagaWrite,
    StepExecutionWrite,
    StoreTransaction,
    TimerKey,
    TimerWrite,
)
from saga.topics import Topics

Headers = list[tuple[str, str]]

FORWARD_DONE = frozenset({"succeeded", "failed", "timed_out", "skipped", "cancelled"})
"""Forward step statuses that end an attempt."""
COMPENSATION_DONE = frozenset({"compensated", "failed", "skipped"})
"""Compensation statuses that end an attempt."""


@dataclass
class Writes:
    """Everything one transaction must write, gathered over a batch."""

    sagas: list[SagaWrite] = field(default_factory=list)
    steps: list[StepExecutionWrite] = field(default_factory=list)
    outbox: list[OutboxMessage] = field(default_factory=list)
    timers_set: list[TimerWrite] = field(default_factory=list)
    timers_cancelled: list[TimerKey] = field(default_factory=list)
    audit: list[AuditWrite] = field(default_factory=list)
    locks: list[LockWrite] = field(default_factory=list)

    async def write(self, tx: StoreTransaction, offsets: OffsetCommit | None = None) -> None:
        """Write everything in ``tx`` (and the consumed ``offsets``, fenced by their epochs).

        Sagas, step executions, outbox, timers, audit and locks: one statement on
        PostgreSQL (see :meth:`saga.store.SqlTransaction.write_batch`).
        """
        await tx.write_batch(
            sagas=self.sagas,
            steps=self.steps,
            outbox=self.outbox,
            timers_cancelled=self.timers_cancelled,
            timers_set=self.timers_set,
            audit=self.audit,
            locks=self.locks,
            offsets=offsets,
        )

    def extend(self, other: Writes) -> None:
        """Append another set of writes (kept in order)."""
        self.sagas.extend(other.sagas)
        self.steps.extend(other.steps)
        self.outbox.extend(other.outbox)
        self.timers_set.extend(other.timers_set)
        self.timers_cancelled.extend(other.timers_cancelled)
        self.audit.extend(other.audit)
        self.locks.extend(other.locks)


def saga_write(state: SagaState, *, expected_revision: int | None) -> SagaWrite:
    """The saga row for ``state`` (``expected_revision`` ``None`` for a new saga)."""
    return SagaWrite(
        saga_id=str(state.saga_id),
        saga_type=state.saga_type,
        saga_version=state.saga_version,
        status=str(state.status),
        context=state.context,
        state=JsonText(state.model_dump_json()),
        revision=state.revision,
        expected_revision=expected_revision,
        idempotency_key=state.idempotency_key,
        correlation_id=str(state.correlation_id) if state.correlation_id else None,
        deadline_at=state.deadline_at,
        created_at=state.created_at,
        updated_at=state.updated_at,
    )


def decision_writes(
    decision: Decision,
    *,
    before: SagaState | None,
    topics: Topics,
    now: datetime,
    partitions: int = 1,
    headers: Headers | None = None,
) -> Writes:
    """The writes of one applied decision.

    Args:
        decision: What the engine decided.
        before: The state the decision started from (``None`` when the saga is new).
        topics: Topic names (the engine returns unprefixed command topics).
        now: When the decision was made.
        partitions: Partitions of the replies topic (see :func:`shard_of`).
        headers: Kafka headers for every outgoing message (trace context).
    """
    writes = Writes()
    state = decision.state
    if state is None or decision.outcome != "applied":
        return writes
    saga_id = str(state.saga_id)
    shard = shard_of(state.saga_id, partitions)
    key = saga_id.encode()
    hdrs = list(headers or [])
    writes.sagas.append(
        saga_write(state, expected_revision=before.revision if before is not None else None)
    )
    for out in decision.commands:
        env = out.envelope
        writes.outbox.append(
            OutboxMessage(
                message_id=str(env.message_id),
                topic=topics.prefix + out.topic,
                key=key,
                headers=hdrs,
                payload=env.to_bytes(),
                owner_topic=topics.replies,
                shard=shard,
            )
        )
        writes.steps.append(
            StepExecutionWrite(
                saga_id=saga_id,
                step=env.step or "",
                attempt=env.attempt,
                kind="compensation" if env.kind is MessageKind.COMPENSATION else "command",
                status="sent",
                started_at=now,
            )
        )
    writes.steps.extend(_finished_steps(before, state, now))
    for ev in decision.events:
        writes.outbox.append(_event_message(ev, state, topics, now, shard, hdrs))
    writes.timers_set.extend(
        TimerWrite(
            saga_id=saga_id, kind=str(t.kind), step=t.step, attempt=t.attempt, due_at=t.due_at
        )
        for t in decision.timers_set
    )
    writes.timers_cancelled.extend(
        TimerKey(saga_id=saga_id, kind=str(t.kind), step=t.step, attempt=t.attempt)
        for t in decision.timers_cancelled
    )
    # Each record names its decision (the saga revision it produced) and its place in it,
    # so `saga audit verify` can tell when the end of a decision's records was removed.
    n = len(decision.audit)
    writes.audit.extend(
        AuditWrite(
            saga_id=saga_id,
            kind=a.kind,
            step=a.step,
            attempt=a.attempt,
            actor=a.actor,
            detail={**a.detail, "decision": {"revision": state.revision, "record": i, "of": n}},
            recorded_at=now,
        )
        for i, a in enumerate(decision.audit, start=1)
    )
    writes.locks.extend(
        LockWrite(saga_id=saga_id, action=lk.action, key=lk.key) for lk in decision.locks
    )
    return writes


def ignored_audit(decision: Decision, saga_id: UUID, now: datetime) -> Iterable[AuditWrite]:
    """Audit records of an ignored or rejected event (the saga row is unchanged)."""
    return (
        AuditWrite(
            saga_id=str(saga_id),
            kind=a.kind,
            step=a.step,
            attempt=a.attempt,
            actor=a.actor,
            detail=a.detail,
            recorded_at=now,
        )
        for a in decision.audit
    )


def dead_letter_message(
    record: ConsumedRecord, reason: str, consumer: str, *, topics: Topics, shard: int
) -> OutboxMessage:
    """The outbox row that parks ``record`` on the DLQ topic with ``reason``.

    Its id is derived from where the record was read, so a replayed batch dead-letters
    it once; it goes out through the lane ``shard`` of the replies topic.
    """
    dl = dead_letter_of(record, reason, consumer)
    return OutboxMessage(
        message_id=dl.message_id,
        topic=topics.dlq,
        key=dl.key,
        headers=[(k, v.decode("utf-8", "replace")) for k, v in dl.headers],
        payload=dl.value or b"",
        owner_topic=topics.replies,
        shard=shard,
    )


def _finished_steps(
    before: SagaState | None, after: SagaState, now: datetime
) -> Iterable[StepExecutionWrite]:
    """Step executions whose outcome this decision recorded (forward and compensation)."""
    saga_id = str(after.saga_id)
    for name, new in after.steps.items():
        old = before.steps.get(name) if before is not None else None
        forward_changed = old is None or (old.status, old.attempt) != (new.status, new.attempt)
        if new.attempt and forward_changed and new.status in FORWARD_DONE:
            err = new.last_error
            yield StepExecutionWrite(
                saga_id=saga_id,
                step=name,
                attempt=new.attempt,
                kind="command",
                status=str(new.status),
                started_at=new.started_at or now,
                finished_at=new.finished_at or now,
                error_code=err.code if err else None,
                error_message=err.message if err else None,
            )
        compensation_changed = old is None or (old.compensation, old.compensation_attempt) != (
            new.compensation,
            new.compensation_attempt,
        )
        if (
            new.compensation_attempt
            and compensation_changed
            and new.compensation in COMPENSATION_DONE
        ):
            err = new.last_error
            yield StepExecutionWrite(
                saga_id=saga_id,
                step=name,
                attempt=new.compensation_attempt,
                kind="compensation",
                status=str(new.compensation),
                started_at=now,
                finished_at=now,
                error_code=err.code if err and new.compensation == "failed" else None,
                error_message=err.message if err and new.compensation == "failed" else None,
            )


def _event_message(
    ev: LifecycleEvent,
    state: SagaState,
    topics: Topics,
    now: datetime,
    shard: int,
    headers: Headers,
) -> OutboxMessage:
    env = Envelope(
        message_id=_event_id(state, ev),
        saga_id=state.saga_id,
        saga_type=state.saga_type,
        saga_version=state.saga_version,
        step=ev.step,
        kind=MessageKind.EVENT,
        type=ev.type,
        payload={"status": str(state.status), "revision": state.revision, **ev.detail},
        correlation_id=state.correlation_id,
        occurred_at=now,
    )
    return OutboxMessage(
        message_id=str(env.message_id),
        topic=topics.events,
        key=str(state.saga_id).encode(),
        headers=headers,
        payload=env.to_bytes(),
        owner_topic=topics.replies,
        shard=shard,
    )


def _event_id(state: SagaState, ev: LifecycleEvent) -> UUID:
    from saga.engine import derive_message_id

    return derive_message_id(
        state.updated_at,
        str(state.saga_id),
        ev.type,
        ev.step or "",
        state.revision,
        json.dumps(ev.detail, sort_keys=True, default=str),
    )
