"""Starting a saga from inside a service's own database transaction (the initiator).

A service that creates an order and must start the order saga cannot do both through
the API atomically: the order may commit and the start fail, or the other way round.
:func:`request_start` writes a :class:`contracts.StartRequest` into the service's own
outbox with the connection of its business transaction, so both commit or neither does.
The service's relays (those of its participant, see :class:`ParticipantConfig`) publish
it exactly once to the starts topic, and the coordinator starts the saga once per
idempotency key.

The request goes to the outbox lane of one of the service's own commands partitions
(chosen by the Kafka key), so the replica that owns that partition publishes it: the
service must run as a transactional participant for its requests to go out.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import StartRequest
from saga.kafka import partition_of_key
from saga.participant import _db
from saga.participant._records import OutgoingRecord
from saga.topics import Topics


async def request_start(
    conn: AsyncConnection,
    *,
    topics: Topics,
    service: str,
    partitions: int,
    saga_type: str,
    saga_input: dict[str, Any],
    key: str | None = None,
    version: int | None = None,
    idempotency_key: str | None = None,
    correlation_id: UUID | None = None,
    saga_id: UUID | None = None,
) -> StartRequest:
    """Write a start request into the service's outbox, in the caller's transaction.

    Args:
        conn: The connection of the business transaction (the request commits with it).
        topics: The deployment's topic names.
        service: The participant whose relays publish the request (the service itself).
        partitions: The partition count of that participant's commands topic
            (:attr:`Participant.partitions` once it is open).
        saga_type: The saga to start.
        saga_input: Its input.
        key: Kafka key of the request (a business key); default the saga id or the
            request's message id.
        version: The definition version (default: the newest).
        idempotency_key: At most one saga per key; default ``start:<message id>``, so
            each request starts one saga however often it is delivered.
        correlation_id: Business correlation id.
        saga_id: The new saga's id (default: a fresh one, chosen by the coordinator).

    Returns:
        The request as written (its ``message_id`` and ``effective_idempotency_key``
        find the saga later: ``saga status``, the API's idempotency lookups).
    """
    request = StartRequest(
        saga_type=saga_type,
        saga_version=version,
        input=saga_input,
        idempotency_key=idempotency_key,
        correlation_id=correlation_id,
        saga_id=saga_id,
        requested_by=service,
    )
    kafka_key = (key or str(saga_id or request.message_id)).encode()
    record = OutgoingRecord(
        topic=topics.starts,
        key=kafka_key,
        value=request.to_bytes(),
        row_id=str(request.message_id),
        shard=partition_of_key(kafka_key, partitions),
    )
    await _db.write_outbox(conn, [record], owner_topic=topics.commands(service))
    return request
