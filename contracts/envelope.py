"""The message envelope every saga message travels in.

Every Kafka message of the product (commands, compensations, replies, timers,
signals and lifecycle events) is one JSON-encoded :class:`Envelope`. The key of
the Kafka record is the saga id, so one saga's messages stay in order on one
partition. W3C trace context travels in Kafka headers, not in the envelope.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal
from uuid import UUID

import uuid6
from pydantic import BaseModel, ConfigDict, Field, ValidationError

ENVELOPE_SCHEMA_VERSION: Literal[1] = 1
"""The envelope format version this code writes and the newest it reads."""


def new_message_id() -> UUID:
    """Return a fresh time-ordered UUIDv7 message id."""
    return UUID(str(uuid6.uuid7()))


class MessageKind(StrEnum):
    """What a message is for."""

    COMMAND = "command"
    COMPENSATION = "compensation"
    REPLY = "reply"
    TIMER = "timer"
    SIGNAL = "signal"
    EVENT = "event"


class Frozen(BaseModel):
    """Base of every contract model: immutable, and unknown fields are an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Envelope(Frozen):
    """One saga message."""

    schema_version: Literal[1] = ENVELOPE_SCHEMA_VERSION
    """Envelope format version; a newer version is rejected to the DLQ."""
    message_id: UUID = Field(default_factory=new_message_id)
    """Unique id (UUIDv7); receivers dedupe on it."""
    saga_id: UUID
    """The saga this message belongs to (also the Kafka key)."""
    saga_type: str
    """Name of the saga definition."""
    saga_version: int
    """Version of the saga definition the saga runs."""
    step: str | None = None
    """The step this message concerns, if any."""
    attempt: int = Field(default=1, ge=1)
    """Attempt number of the step; a reply for an older attempt is stale."""
    kind: MessageKind
    """Command, compensation, reply, timer, signal or event."""
    type: str
    """Message type, e.g. ``inventory.reserve`` or ``reply.succeeded``."""
    payload: dict[str, Any] = Field(default_factory=dict)
    """The typed body, as JSON."""
    causation_id: UUID | None = None
    """The message that caused this one."""
    correlation_id: UUID | None = None
    """Business correlation id shared by all messages of one saga."""
    occurred_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    """When the sender created the message (UTC)."""

    def to_bytes(self) -> bytes:
        """Encode as compact JSON bytes."""
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, data: bytes | None) -> Envelope:
        """Decode JSON bytes; raise :class:`contracts.ContractDecodeError` naming what is wrong."""
        if data is None:
            raise ContractDecodeError("message has no value")
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise ContractDecodeError(_describe(exc)) from exc


class ContractDecodeError(ValueError):
    """A message could not be decoded into its contract; the text names the field."""


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "<message>"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


# ---------------------------------------------------------------------------
# Reply bodies: what participants send back on the replies topic.
# ---------------------------------------------------------------------------

REPLY_SUCCEEDED = "reply.succeeded"
REPLY_FAILED = "reply.failed"


class StepSucceeded(Frozen):
    """Body of a ``reply.succeeded`` message: the step's output."""

    output: dict[str, Any] = Field(default_factory=dict)


class StepFailed(Frozen):
    """Body of a ``reply.failed`` message."""

    code: str
    """Stable error code, e.g. ``payment.declined``."""
    message: str = ""
    """Human-readable description."""
    retriable: bool = False
    """Whether the coordinator may retry the step."""
    retry_after_ms: int | None = Field(default=None, ge=0)
    """Optional delay the participant asks for before the next attempt."""


class Signal(Frozen):
    """Body of a ``signal`` message: a named external event for a waiting saga."""

    name: str
    data: dict[str, Any] = Field(default_factory=dict)
