"""Outgoing records (replies and dead letters) and how replies are built."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from contracts import (
    REPLY_FAILED,
    REPLY_SUCCEEDED,
    Envelope,
    MessageKind,
    StepFailed,
    StepSucceeded,
)


@dataclass(frozen=True, kw_only=True)
class OutgoingRecord:
    """A record the participant sends: a reply on the replies topic or a dead letter."""

    topic: str
    """Destination topic."""
    key: bytes | None
    """Kafka key (the saga id for replies, the original key for dead letters)."""
    value: bytes | None
    """Kafka value."""
    headers: tuple[tuple[str, bytes], ...] = ()
    """Kafka headers."""
    row_id: str
    """Unique id of the record in the outbox (the reply's message id; fresh for copies)."""
    envelope: Envelope | None = None
    """The reply envelope, ``None`` for dead letters."""
    shard: int = 0
    """The partition of the commands topic the record answers: in transactional mode the
    relay of that partition (its owner's) publishes the record."""


ReplyInterceptor = Callable[[Sequence[OutgoingRecord]], Awaitable[Sequence[OutgoingRecord]]]
"""Sees a batch's outgoing records before they are sent and returns what to send.

The default sends them unchanged; :class:`saga.testing.FaultInjector` duplicates,
drops, delays and reorders them.
"""


def reply_message_id(command_id: UUID) -> UUID:
    """Return the message id of the reply to a command: a UUIDv7 derived from its id.

    Deterministic, so a handler that runs again (at-least-once mode after a crash)
    produces a reply with the same id, which the coordinator's inbox dedupes. The
    48-bit timestamp of the command (a UUIDv7) is kept, so ids stay time-ordered.
    """
    digest = int.from_bytes(hashlib.sha256(b"saga.reply:" + command_id.bytes).digest()[:16])
    timestamp = command_id.int >> 80 if command_id.version == 7 else digest >> 80
    value = (timestamp << 80) | (digest & ((1 << 80) - 1))
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return UUID(int=value)


def reply_envelope(command: Envelope, body: StepSucceeded | StepFailed) -> Envelope:
    """Build the reply to ``command``: same saga, step and attempt; caused by the command."""
    succeeded = isinstance(body, StepSucceeded)
    payload: dict[str, Any] = body.model_dump(mode="json")
    return Envelope(
        message_id=reply_message_id(command.message_id),
        saga_id=command.saga_id,
        saga_type=command.saga_type,
        saga_version=command.saga_version,
        step=command.step,
        attempt=command.attempt,
        kind=MessageKind.REPLY,
        type=REPLY_SUCCEEDED if succeeded else REPLY_FAILED,
        payload=payload,
        causation_id=command.message_id,
        correlation_id=command.correlation_id,
    )


def saga_key(envelope: Envelope) -> bytes:
    """The Kafka key of a saga's messages: the saga id as text."""
    return str(envelope.saga_id).encode()
