"""Turning a consumed record into a command to handle, or into a dead letter.

Each record is decoded into an :class:`~contracts.Envelope` and its payload into the
model registered for its type. A record that cannot be decoded (not JSON, bad
envelope, unknown type, not a command) is *poison*: it becomes a dead letter for the
DLQ topic with the reason and the original bytes, so nothing is lost and the loop goes
on. A command whose payload fails its model is not poison: it is kept, marked
``invalid``, and answered with a permanent failure reply (see
:mod:`saga.participant._handling`), so its saga compensates at once rather than time
out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from contracts import ContractDecodeError, Envelope, MessageKind
from saga.deadletter import dead_letter_of
from saga.participant._context import Handler
from saga.participant._records import OutgoingRecord

log = logging.getLogger("saga.participant")


@dataclass(frozen=True)
class Registration:
    """A handler registered for one message type."""

    message_type: str
    model: type[BaseModel]
    handler: Handler[Any]


@dataclass(frozen=True)
class Command:
    """A decoded command of a batch and what handles it."""

    record: Any
    envelope: Envelope
    registration: Registration
    command: BaseModel | None
    invalid: str | None = None
    """Why the payload does not fit the model (then the handler is never called)."""


Decoded = Command | OutgoingRecord
"""A record of a batch once decoded: a command to handle, or a dead letter to send."""


def decode(
    record: Any, handlers: Mapping[str, Registration], *, participant: str, dlq_topic: str
) -> Decoded:
    """Decode ``record`` into a command of ``handlers``, or into a dead letter."""
    try:
        envelope = Envelope.from_bytes(record.value)
    except ContractDecodeError as exc:
        return dead_letter(record, f"bad envelope: {exc}", participant, dlq_topic)
    if envelope.kind not in (MessageKind.COMMAND, MessageKind.COMPENSATION):
        reason = f"not a command: kind {envelope.kind.value!r}"
        return dead_letter(record, reason, participant, dlq_topic)
    registration = handlers.get(envelope.type)
    if registration is None:
        reason = f"unknown command type {envelope.type!r} for participant {participant!r}"
        return dead_letter(record, reason, participant, dlq_topic)
    try:
        command = registration.model.model_validate(envelope.payload)
    except ValidationError as exc:
        # A well-formed command of ours whose payload is wrong (a saga input that
        # lacks a field, say) is answered, not parked: a permanent failure reply
        # compensates the saga at once instead of letting it time out.
        reason = f"payload of {envelope.type!r}: {_describe(exc)}"
        log.warning("%s: invalid command %s: %s", participant, envelope.message_id, reason)
        return Command(record, envelope, registration, None, invalid=reason)
    return Command(record, envelope, registration, command)


def dead_letter(record: Any, reason: str, participant: str, dlq_topic: str) -> OutgoingRecord:
    """Build the DLQ record of a poison ``record``."""
    log.warning(
        "%s: poison record %s[%d]@%d to the DLQ: %s",
        participant,
        record.topic,
        record.partition,
        record.offset,
        reason,
    )
    dead = dead_letter_of(record, reason, f"participant:{participant}")
    return OutgoingRecord(
        topic=dlq_topic,
        key=dead.key,
        value=dead.value,
        headers=dead.headers,
        # Derived from the record, so a batch redone after a lost commit
        # acknowledgement dead-letters it only once.
        row_id=dead.message_id,
        shard=record.partition,
    )


def decode_batch(
    batch: Mapping[int, Sequence[Any]], decode: Callable[[Any], Decoded]
) -> tuple[list[Decoded], dict[int, int]]:
    """Decode a polled batch in partition order.

    Returns:
        The decoded records, and the next offset to consume of each partition.
    """
    items: list[Decoded] = []
    next_offsets: dict[int, int] = {}
    for partition, records in sorted(batch.items()):
        items.extend(decode(record) for record in records)
        if records:
            next_offsets[partition] = records[-1].offset + 1
    return items, next_offsets


def command_ids(items: Iterable[Decoded]) -> list[str]:
    """The message ids of the commands among ``items``."""
    return [str(i.envelope.message_id) for i in items if isinstance(i, Command)]


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "<payload>"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)
