"""Telling a record Kafka refuses apart from a Kafka that is unavailable.

A relay retries every Kafka failure, which is right for an outage and wrong for a
record that Kafka will never take: one over the size limit, one for a topic whose name
is invalid or that does not exist. Such a record would block everything behind it.
:func:`refusal_of` names the errors that concern the record itself, and
:func:`topic_exists` asks the cluster whether a topic is there, so that a relay can set
one record aside and go on.
"""

from __future__ import annotations

import asyncio
import re

from aiokafka import AIOKafkaProducer
from aiokafka import errors as kafka_errors

from saga.errors import TransportError
from saga.kafka._errors import translate_kafka_errors

_REFUSALS: tuple[type[Exception], ...] = (
    kafka_errors.MessageSizeTooLargeError,  # by the client (max_request_size) or the broker
    kafka_errors.RecordListTooLargeError,
    kafka_errors.RecordTooLargeError,
    kafka_errors.InvalidTopicError,
    kafka_errors.CorruptRecordException,  # also InvalidMessageError: the same code
    kafka_errors.TopicAuthorizationFailedError,
)
"""Errors about the record (or its topic) rather than about reaching Kafka."""


_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")


def invalid_topic_name(topic: str) -> str | None:
    """Why Kafka would refuse ``topic`` as a name, or ``None`` when it is a valid one."""
    if _TOPIC_NAME.fullmatch(topic) and topic not in (".", ".."):
        return None
    return (
        f"{topic!r} is not a valid topic name (letters, digits, '.', '_' and '-',"
        " at most 249 characters)"
    )


def refusal_of(exc: BaseException) -> str | None:
    """Why Kafka refused a record, if ``exc`` is such a refusal; ``None`` otherwise."""
    if isinstance(exc, _REFUSALS):
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return None


async def topic_exists(producer: AIOKafkaProducer, topic: str, *, timeout_s: float = 30) -> bool:
    """Whether the cluster has ``topic``, asking it when the producer does not know it.

    A broker that creates topics on first use creates it here (so this returns ``False``
    once and ``True`` soon after).

    Raises:
        saga.errors.TransportError: The cluster could not be asked, or did not answer
            within ``timeout_s`` (a client that was closed meanwhile never answers).
    """
    client = producer.client
    if client.cluster.partitions_for_topic(topic):
        return True
    try:
        with translate_kafka_errors(f"metadata of topic {topic}"):
            client.add_topic(topic)
            async with asyncio.timeout(timeout_s):
                updated = await client.force_metadata_update()
    except TimeoutError as exc:
        raise TransportError(f"metadata of topic {topic}: no answer in {timeout_s:g} s") from exc
    if not updated:
        raise TransportError(f"metadata of topic {topic}: no broker answered")
    return bool(client.cluster.partitions_for_topic(topic))
