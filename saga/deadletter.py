"""Dead letters: how a consumer parks a record it cannot process.

A poison record (not JSON, a bad envelope, a payload that fails its model, an unknown
type) must neither stop a consume loop nor be lost. The consumer publishes it to the
DLQ topic (``Topics.dlq``) unchanged, with the reason and its origin in headers, and
goes on. This module builds that record; sending it is the caller's business (the
participant SDK writes it to its outbox or sends it with its producer, the coordinator
does the same), so the function is pure and shared.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol
from uuid import NAMESPACE_URL, UUID, uuid5

REASON_HEADER: Final = "saga.dlq.reason"
SOURCE_TOPIC_HEADER: Final = "saga.dlq.source.topic"
SOURCE_PARTITION_HEADER: Final = "saga.dlq.source.partition"
SOURCE_OFFSET_HEADER: Final = "saga.dlq.source.offset"
CONSUMER_HEADER: Final = "saga.dlq.consumer"

MAX_REASON_BYTES: Final = 4000
"""Longer reasons are truncated (a validation error can echo a huge payload)."""


@dataclass(frozen=True, kw_only=True)
class DeadLetterRecord:
    """A record for the DLQ topic (the topic itself is the caller's choice)."""

    key: bytes | None
    """The original record's key, unchanged."""
    value: bytes | None
    """The original record's value, unchanged (``None`` for a tombstone)."""
    headers: tuple[tuple[str, bytes], ...]
    """The ``saga.dlq.*`` headers, then the original headers."""
    message_id: str
    """Its outbox message id, derived from where the record was read
    (:func:`dead_letter_id`)."""

    def header(self, name: str) -> str | None:
        """Return the first header called ``name``, decoded as UTF-8, if present."""
        for key, value in self.headers:
            if key == name:
                return value.decode("utf-8", errors="replace")
        return None


def dead_letter_id(source_topic: str, partition: int, offset: int) -> UUID:
    """The outbox message id of a record's dead letter, derived from where it was read.

    A batch redone after a crash or a lost commit acknowledgement dead-letters the same
    record under the same id, so it is written (and published) once.
    """
    return uuid5(NAMESPACE_URL, f"dlq:{source_topic}:{partition}:{offset}")


def dead_letter_record(
    source_topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    reason: str,
    consumer: str,
    *,
    original_headers: tuple[tuple[str, bytes], ...] | list[tuple[str, bytes]] = (),
) -> DeadLetterRecord:
    """Build the DLQ record of a poison record.

    Args:
        source_topic: Topic the record was read from.
        partition: Its partition.
        offset: Its offset.
        key: Its key (kept, so the DLQ is partitioned like the source).
        value: Its value (kept byte for byte, so it can be inspected and replayed).
        reason: Why it is poison, e.g. ``payload.order_id: Field required``.
        consumer: Who rejected it, e.g. ``participant:inventory``.
        original_headers: The record's own headers, kept after the ``saga.dlq.*`` ones
            (trace context survives into the DLQ).

    Returns:
        The record to publish on the DLQ topic.
    """
    reason_bytes = reason.encode("utf-8", errors="replace")[:MAX_REASON_BYTES]
    headers = (
        (REASON_HEADER, reason_bytes),
        (SOURCE_TOPIC_HEADER, source_topic.encode()),
        (SOURCE_PARTITION_HEADER, str(partition).encode()),
        (SOURCE_OFFSET_HEADER, str(offset).encode()),
        (CONSUMER_HEADER, consumer.encode()),
        *(
            (name, value)
            for name, value in original_headers
            if not name.startswith("saga.dlq.")  # a replayed dead letter gets fresh ones
        ),
    )
    return DeadLetterRecord(
        key=key,
        value=value,
        headers=headers,
        message_id=str(dead_letter_id(source_topic, partition, offset)),
    )


class ConsumedRecord(Protocol):
    """What a consumed Kafka record offers (aiokafka's ``ConsumerRecord`` does)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


def dead_letter_of(record: ConsumedRecord, reason: str, consumer: str) -> DeadLetterRecord:
    """:func:`dead_letter_record` of a record as it was consumed, its headers kept."""
    return dead_letter_record(
        record.topic,
        record.partition,
        record.offset,
        record.key,
        record.value,
        reason,
        consumer,
        original_headers=tuple(record.headers or ()),
    )


__all__ = [
    "CONSUMER_HEADER",
    "MAX_REASON_BYTES",
    "REASON_HEADER",
    "SOURCE_OFFSET_HEADER",
    "SOURCE_PARTITION_HEADER",
    "SOURCE_TOPIC_HEADER",
    "ConsumedRecord",
    "DeadLetterRecord",
    "dead_letter_id",
    "dead_letter_of",
    "dead_letter_record",
]
