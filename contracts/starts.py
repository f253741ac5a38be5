"""Start requests: how a saga is started through Kafka (the ``saga.starts`` topic).

A service, a script (``saga publish-start``) or the SDK's initiator
(:func:`saga.participant.request_start`, inside the service's own database transaction)
publishes a :class:`StartRequest`; the coordinator owning its partition starts the saga
once per idempotency key. A request the coordinator refuses (unknown saga type, an
input that fails the definition's schema) goes to the dead-letter topic with the reason,
and a ``saga.start_rejected`` lifecycle event on ``saga.events`` tells the sender.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import Field

from contracts.envelope import Frozen, new_message_id

START_REJECTED = "saga.start_rejected"
"""Type of the lifecycle event published when a start request is refused."""


class StartRequest(Frozen):
    """A request to start one saga."""

    schema_version: Literal[1] = 1
    """Format version; a newer one is refused to the dead-letter topic."""
    message_id: UUID = Field(default_factory=new_message_id)
    """Unique id of the request; a resend of the same request keeps it."""
    saga_type: str = Field(min_length=1, max_length=200)
    """Name of the saga definition to start."""
    saga_version: int | None = Field(default=None, ge=1)
    """Its version; the newest registered one when left out."""
    input: dict[str, Any] = Field(default_factory=dict)
    """The saga's input (validated against the definition's input schema, if any)."""
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    """At most one saga is started per key; default ``start:<message_id>``."""
    correlation_id: UUID | None = None
    """Business correlation id; default: the saga id."""
    saga_id: UUID | None = None
    """The new saga's id; a fresh UUIDv7 when left out."""
    requested_by: str | None = Field(default=None, max_length=200)
    """Who asks (a service name, a user), for the saga's audit log."""
    requested_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    """When the request was made (UTC)."""

    @property
    def effective_idempotency_key(self) -> str:
        """The idempotency key the coordinator starts the saga under."""
        return self.idempotency_key or f"start:{self.message_id}"

    def to_bytes(self) -> bytes:
        """Encode as compact JSON bytes."""
        return self.model_dump_json().encode()
