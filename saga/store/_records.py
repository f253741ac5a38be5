"""Rows the store reads and writes: frozen, slotted, keyword-only dataclasses (no ORM).

``*Write`` values go in, ``*Row``/``*Record`` values come out. Every ``datetime`` that
comes out is timezone-aware UTC, whatever the backend (SQLite keeps no offset);
every ``datetime`` that goes in may carry any offset and is stored as UTC.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


class JsonText(str):
    """JSON that is already encoded: a JSON column stores it as it is.

    Models encode themselves faster (``model_dump_json``) than ``json.dumps`` encodes
    their ``model_dump()``; wrapping the result in ``JsonText`` keeps the engine's JSON
    serializer (see :func:`saga.store.create_engine`) from encoding it a second time.
    """

    __slots__ = ()


def as_utc(ts: datetime) -> datetime:
    """``ts`` as an aware UTC datetime (a naive one is taken to be UTC already)."""
    if ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC)


def as_utc_or_none(ts: datetime | None) -> datetime | None:
    """Like :func:`as_utc`, passing ``None`` through."""
    return None if ts is None else as_utc(ts)


@dataclass(frozen=True, kw_only=True, slots=True)
class SagaRow:
    """A saga as stored."""

    saga_id: str
    """The saga's id (UUID text)."""
    saga_type: str
    """Name of the definition."""
    saga_version: int
    """Version of the definition."""
    status: str
    """Current status (the engine's ``SagaStatus`` value)."""
    context: dict[str, Any]
    """The saga context (input plus step outputs)."""
    state_json: str
    """The engine's full ``SagaState`` as JSON text (``SagaState.model_validate_json``
    reads it without a detour through Python dicts)."""
    revision: int
    """Optimistic concurrency counter: the revision to pass as ``expected_revision``."""
    idempotency_key: str | None
    """The client's idempotency key of the start request."""
    correlation_id: str | None
    """Business correlation id."""
    deadline_at: datetime | None
    """When the saga deadline fires, if it has one."""
    created_at: datetime
    """When the saga started."""
    updated_at: datetime
    """When the last decision was applied."""

    @property
    def state(self) -> dict[str, Any]:
        """The engine's full ``SagaState`` as a JSON object (decoded on each access)."""
        value: dict[str, Any] = json.loads(self.state_json)
        return value


@dataclass(frozen=True, kw_only=True, slots=True)
class SagaWrite:
    """A saga to insert (``expected_revision is None``) or update."""

    saga_id: str
    """The saga's id."""
    saga_type: str
    """Name of the definition."""
    saga_version: int
    """Version of the definition."""
    status: str
    """The new status."""
    context: dict[str, Any]
    """The new context."""
    state: dict[str, Any] | JsonText
    """The engine's new ``SagaState`` as JSON (an object, or text already encoded)."""
    revision: int
    """The new revision."""
    expected_revision: int | None
    """The revision the writer loaded (``None``: a new saga); another stored one conflicts."""
    idempotency_key: str | None = None
    """The client's idempotency key (only written when the saga is inserted)."""
    correlation_id: str | None = None
    """Business correlation id."""
    deadline_at: datetime | None = None
    """When the saga deadline fires."""
    created_at: datetime
    """When the saga started (only written when the saga is inserted)."""
    updated_at: datetime
    """When this decision was made."""


@dataclass(frozen=True, kw_only=True, slots=True)
class StepExecutionWrite:
    """One attempt of a step's command or compensation (upserted on its natural key)."""

    saga_id: str
    """The saga."""
    step: str
    """Step name."""
    attempt: int
    """Attempt number (1, 2, ...)."""
    kind: str
    """``command`` or ``compensation``."""
    status: str
    """``sent``, ``succeeded``, ``failed``, ... (later writes of the same key win)."""
    started_at: datetime
    """When the attempt started (kept from the first write of the key)."""
    finished_at: datetime | None = None
    """When the attempt finished."""
    error_code: str | None = None
    """Failure code, if it failed."""
    error_message: str | None = None
    """Failure description, if it failed."""


@dataclass(frozen=True, kw_only=True, slots=True)
class StepExecutionRow(StepExecutionWrite):
    """A stored step execution: its status, finish and error as last recorded."""


@dataclass(frozen=True, kw_only=True, slots=True)
class OutboxMessage:
    """A Kafka record to publish through the outbox."""

    message_id: str
    """Unique id; enqueuing the same id again (same topic and key) is skipped."""
    topic: str
    """Destination topic (already prefixed)."""
    key: bytes | None
    """Kafka key (the saga id for saga messages)."""
    headers: list[tuple[str, str]] = field(default_factory=list)
    """Kafka headers as ``(name, value)`` text pairs (trace context)."""
    payload: bytes
    """The record value (an encoded envelope)."""
    owner_topic: str = ""
    """The consumed topic whose partition ``shard`` owns this row: that partition's
    owner publishes it (the replies topic for the coordinator's rows, a commands topic
    for a participant's)."""
    shard: int = 0
    """The partition of ``owner_topic`` whose owner publishes this row."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TimerKey:
    """Identifies a timer of a saga (its natural key)."""

    saga_id: str
    """The saga."""
    kind: str
    """Timer kind, e.g. ``step_timeout``."""
    step: str
    """Step name (``""`` for saga-level timers)."""
    attempt: int
    """The attempt it guards."""


@dataclass(frozen=True, kw_only=True, slots=True)
class LockWrite:
    """A change to a lock key's queue: a saga joins it (``wait``) or leaves it."""

    saga_id: str
    """The saga."""
    action: str
    """``wait`` or ``release`` (as holder or as waiter)."""
    key: str
    """The lock key, ``<saga type>:<value>``."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TimerWrite(TimerKey):
    """A timer to set (setting an existing key moves its due time)."""

    due_at: datetime
    """When it fires."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TimerRow(TimerWrite):
    """A stored timer."""

    id: int
    """Surrogate key."""


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditWrite:
    """An audit record to append to a saga's hash chain."""

    saga_id: str
    """The saga."""
    kind: str
    """What happened, e.g. ``command.sent``."""
    step: str | None = None
    """The step it concerns."""
    attempt: int | None = None
    """The attempt it concerns."""
    actor: str | None = None
    """Who did it (``coordinator``, an operator's name, ...)."""
    detail: dict[str, Any] = field(default_factory=dict)
    """JSON details (stored and hashed in their JSON form)."""
    recorded_at: datetime
    """When it happened (stored and hashed as UTC with microseconds)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditRecord:
    """A stored audit record: one link of a saga's hash chain."""

    id: int
    """Surrogate key (insertion order over all sagas)."""
    saga_id: str
    """The saga."""
    seq: int
    """Position in the saga's chain: 1, 2, ..."""
    recorded_at: datetime
    """When it happened (UTC)."""
    kind: str
    """What happened."""
    step: str | None
    """The step it concerns."""
    attempt: int | None
    """The attempt it concerns."""
    actor: str | None
    """Who did it."""
    detail: dict[str, Any]
    """JSON details."""
    prev_hash: str
    """Hash of record ``seq - 1`` (``"0" * 64`` for the first)."""
    hash: str
    """``sha256(prev_hash + canonical JSON of this record)``, hex."""

    @classmethod
    def from_row(cls, r: Any) -> AuditRecord:
        """Build from a row of ``saga_audit_log`` (times normalised to UTC)."""
        return cls(
            id=r.id,
            saga_id=r.saga_id,
            seq=r.seq,
            recorded_at=as_utc(r.recorded_at),
            kind=r.kind,
            step=r.step,
            attempt=r.attempt,
            actor=r.actor,
            detail=r.detail,
            prev_hash=r.prev_hash,
            hash=r.hash,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class SagaStart:
    """A new saga and its first writes, inserted in one transaction."""

    saga: SagaWrite
    """The new saga (its ``expected_revision`` is ignored: it is inserted)."""
    outbox: Sequence[OutboxMessage] = ()
    """Its first commands and lifecycle events."""
    timers: Sequence[TimerWrite] = ()
    """Its first timers."""
    audit: Sequence[AuditWrite] = ()
    """Its first audit records."""
    steps: Sequence[StepExecutionWrite] = ()
    """Its first step executions."""
    locks: Sequence[LockWrite] = ()
    """The lock queue it joins (its definition's ``lock``)."""
    idempotency_key: str | None = None
    """The client's key; ``None``: ``saga.idempotency_key``."""

    @property
    def key(self) -> str | None:
        """The idempotency key the start is deduplicated on."""
        return (
            self.idempotency_key if self.idempotency_key is not None else self.saga.idempotency_key
        )
