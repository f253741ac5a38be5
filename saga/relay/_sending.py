"""Sending outbox rows in a Kafka transaction, and naming the row Kafka refused."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from aiokafka import AIOKafkaProducer

from saga.errors import RecordRefused, TransportError
from saga.kafka import close_quietly, refusal_of, translate_kafka_errors
from saga.relay._config import RelayConfig
from saga.relay._outbox import OutboxRow

log = logging.getLogger("saga.relay")

_transactions_in_process = [0]
"""Kafka transactions of every relay of this process (for ``crash_in_transaction_after``)."""


def crash_if_due(config: RelayConfig) -> None:
    """Fault injection: SIGKILL the process in its N-th Kafka transaction (see the config)."""
    crash_at = config.crash_in_transaction_after
    _transactions_in_process[0] += 1
    if crash_at is not None and _transactions_in_process[0] >= crash_at:
        log.critical("crash_in_transaction_after: killing the relay mid-transaction")
        os.kill(os.getpid(), signal.SIGKILL)


def refused_as(row: OutboxRow | None, exc: BaseException) -> RecordRefused | None:
    """What a send failure says about ``row`` (``None``: a whole record batch), if a refusal."""
    reason = refusal_of(exc)
    if reason is None:
        return None
    if row is None:
        return RecordRefused(f"Kafka refused a record batch: {reason}", message_id="", lasting=True)
    return RecordRefused(
        f"Kafka refused outbox row {row.id} (message {row.message_id}, topic {row.topic},"
        f" {len(row.payload)} payload bytes): {reason}",
        message_id=row.message_id,
        lasting=True,
    )


async def send_row(producer: AIOKafkaProducer, row: OutboxRow) -> asyncio.Future[object]:
    """Enqueue one row; a refusal of the row itself (e.g. too large) names the row."""
    try:
        future: asyncio.Future[object] = await producer.send(
            row.topic, row.payload, key=row.key, headers=row.headers
        )
    except Exception as exc:
        if (refused := refused_as(row, exc)) is not None:
            raise refused from exc
        raise
    return future


async def delivered(deliveries: list[asyncio.Future[object]], rows: list[OutboxRow]) -> None:
    """Wait for every send to be acknowledged; raise the first failure.

    A refusal is raised first, as :class:`RecordRefused`: naming the row when it was the
    only one sent, without a message id otherwise (the broker refuses whole record
    batches, so every row that shared a batch with the culprit fails alike).
    """
    results = await asyncio.gather(*deliveries, return_exceptions=True)
    culprit = rows[0] if len(rows) == 1 else None
    for result in results[: len(rows)]:  # the checkpoint, if any, comes last
        if isinstance(result, BaseException) and (refused := refused_as(culprit, result)):
            raise refused from result
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def start_producer(producer: AIOKafkaProducer, what: str, timeout_ms: int) -> None:
    """Start ``producer`` (for a transactional one: ``InitProducerId``), or close it.

    Raises:
        saga.errors.TransportError: Kafka failed, or did not answer in ``timeout_ms``.
    """
    ok = False
    try:
        with translate_kafka_errors(what):
            async with asyncio.timeout(timeout_ms / 1000):
                await producer.start()
        ok = True
    except TimeoutError as exc:
        raise TransportError(f"{what}: Kafka did not answer in {timeout_ms} ms") from exc
    finally:
        if not ok:
            await close_quietly(producer)
