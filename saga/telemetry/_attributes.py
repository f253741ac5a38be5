"""OpenTelemetry attributes of saga messages: the one place that maps an envelope.

Messaging semantic conventions (``messaging.*``) plus a few ``saga.*`` attributes. The
Kafka key of every saga message is the saga id, and the conversation id is the saga's
correlation id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from opentelemetry.util.types import AttributeValue

from contracts import Envelope

Operation = Literal["send", "process", "receive"]
"""``messaging.operation.type`` of a span."""


def messaging_attributes(
    envelope: Envelope,
    *,
    destination: str,
    operation: Operation,
    partition: int | None = None,
    offset: int | None = None,
) -> Mapping[str, AttributeValue]:
    """The attributes of a span that sends or processes ``envelope``.

    Args:
        envelope: The message.
        destination: The Kafka topic it is sent to (or was read from).
        operation: ``send`` (producer), ``process`` (consumer) or ``receive``.
        partition: The Kafka partition, when known (consumer side).
        offset: The record's offset, when known (consumer side).

    Returns:
        ``messaging.*`` attributes (semantic conventions) and ``saga.*`` attributes.
    """
    attrs: dict[str, AttributeValue] = {
        "messaging.system": "kafka",
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": destination,
        "messaging.kafka.message.key": str(envelope.saga_id),
        "messaging.message.id": str(envelope.message_id),
        "saga.id": str(envelope.saga_id),
        "saga.type": envelope.saga_type,
        "saga.message.kind": envelope.kind.value,
        "saga.message.type": envelope.type,
    }
    if envelope.correlation_id is not None:
        attrs["messaging.message.conversation_id"] = str(envelope.correlation_id)
    if partition is not None:
        attrs["messaging.kafka.destination.partition"] = partition
    if offset is not None:
        attrs["messaging.kafka.message.offset"] = offset
    if envelope.step is not None:
        attrs["saga.step"] = envelope.step
        attrs["saga.attempt"] = envelope.attempt
    return attrs
