"""The dead-letter topic for operators: browse it, replay a record, discard one.

Shared by ``saga dlq`` and the operator console. Records are read straight from the
DLQ topic (``Topics.dlq``, ``read_committed``); their ``saga.dlq.*`` headers (see
:mod:`saga.deadletter`) say why they were parked and where they were read from.

A Kafka record cannot be deleted, so what an operator does with one is remembered in
``saga_dead_letters_handled`` (who, when, why): listings hide handled records unless
asked. Both actions are audited:

* the row itself names the actor, the reason and the time, and a log line on the
  ``saga.dlq`` logger says the same;
* when the record's envelope names a saga that exists, that saga's hash-chained
  audit log also gets an ``operator.requested`` record (verb ``dlq_replay`` or
  ``dlq_discard``), in the same transaction as the row.

*Replay* sends the original key, value and headers (the ``saga.dlq.*`` ones left out)
to the original topic with an idempotent producer, waits for the broker's
acknowledgement and then records the replay. A record is replayed once unless the
caller asks again: the envelope keeps its message id, so a consumer that did process
an earlier copy skips the duplicate.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import select

from saga.deadletter import (
    CONSUMER_HEADER,
    REASON_HEADER,
    SOURCE_OFFSET_HEADER,
    SOURCE_PARTITION_HEADER,
    SOURCE_TOPIC_HEADER,
)
from saga.errors import SagaError
from saga.kafka import close_quietly, committed_consumer, idempotent_producer, topic_partitions
from saga.kafka import translate_kafka_errors as kafka_errors
from saga.store import AuditWrite, SqlStore, as_utc, translate_errors
from saga.store import tables as t
from saga.topics import Topics

log = logging.getLogger("saga.dlq")

Action = Literal["replayed", "discarded"]

REQUESTED = "operator.requested"
"""The audit kind of operator actions (the same as :data:`saga.operations.REQUESTED`)."""

READ_TIMEOUT_S = 5.0
"""How long a read of the DLQ topic may take."""


class DeadLetterNotFound(SagaError):
    """No record at that partition and offset of the DLQ topic."""

    code = "dead_letter_not_found"


class DeadLetterHandled(SagaError):
    """The dead letter was replayed or discarded already."""

    code = "dead_letter_handled"


@dataclass(frozen=True, kw_only=True)
class Handled:
    """What an operator did with a dead letter."""

    action: Action
    actor: str
    reason: str
    handled_at: datetime
    original_topic: str | None = None
    saga_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class DeadLetter:
    """One record of the DLQ topic, its ``saga.dlq.*`` headers decoded."""

    topic: str
    partition: int
    offset: int
    timestamp: datetime
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    handled: Handled | None = None

    @property
    def ref(self) -> str:
        """``PARTITION:OFFSET``, how the CLI and the console name a dead letter."""
        return f"{self.partition}:{self.offset}"

    def header(self, name: str) -> str | None:
        """The first header called ``name`` as text, if present."""
        for key, value in self.headers:
            if key == name:
                return value.decode("utf-8", errors="replace")
        return None

    @property
    def reason(self) -> str:
        """Why it was dead-lettered."""
        return self.header(REASON_HEADER) or ""

    @property
    def original_topic(self) -> str | None:
        """The topic it was read from."""
        return self.header(SOURCE_TOPIC_HEADER)

    @property
    def original_partition(self) -> int | None:
        """Its partition there."""
        value = self.header(SOURCE_PARTITION_HEADER)
        return int(value) if value and value.isdigit() else None

    @property
    def original_offset(self) -> int | None:
        """Its offset there."""
        value = self.header(SOURCE_OFFSET_HEADER)
        return int(value) if value and value.isdigit() else None

    @property
    def consumer(self) -> str | None:
        """Who dead-lettered it, e.g. ``coordinator:saga.coordinator``."""
        return self.header(CONSUMER_HEADER)

    @property
    def original_headers(self) -> list[tuple[str, bytes]]:
        """The record's own headers (without the ``saga.dlq.*`` ones)."""
        return [(k, v) for k, v in self.headers if not k.startswith("saga.dlq.")]

    @property
    def payload(self) -> Any:
        """The value as JSON when it is JSON, else as text (``None`` for a tombstone)."""
        if self.value is None:
            return None
        text = self.value.decode("utf-8", errors="replace")
        try:
            return json.loads(text)
        except ValueError:
            return text

    @property
    def saga_id(self) -> str | None:
        """The saga the record's envelope names, if it is an envelope with one."""
        body = self.payload
        if isinstance(body, dict) and isinstance(body.get("saga_id"), str):
            try:
                return str(UUID(body["saga_id"]))
            except ValueError:
                return None
        return None

    @property
    def message_type(self) -> str | None:
        """The envelope's ``type``, if any."""
        body = self.payload
        kind = body.get("type") if isinstance(body, dict) else None
        return kind if isinstance(kind, str) else None


def parse_ref(ref: str) -> tuple[int, int]:
    """``PARTITION:OFFSET`` (or ``PARTITION/OFFSET``) as numbers.

    Raises:
        ValueError: It is not two non-negative numbers.
    """
    for sep in (":", "/", "-"):
        left, found, right = ref.strip().partition(sep)
        if found and left.isdigit() and right.isdigit():
            return int(left), int(right)
    raise ValueError(f"not PARTITION:OFFSET: {ref!r} (e.g. 0:42)")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class DeadLetters:
    """The DLQ topic of a deployment, and the record of what was done with it.

    Args:
        bootstrap: Kafka bootstrap servers.
        topics: Topic names of the deployment.
        store: The saga store (its database keeps the handled dead letters).
        clock: Time source for ``handled_at`` and audit records.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: Topics,
        store: SqlStore,
        *,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topics.dlq
        self.store = store
        self.clock = clock

    # -- read ----------------------------------------------------------------------------

    async def recent(
        self, *, limit: int = 50, include_handled: bool = False, scan: int = 1000
    ) -> list[DeadLetter]:
        """The newest dead letters, newest first.

        Args:
            limit: At most this many.
            include_handled: Also those replayed or discarded already.
            scan: How many of the newest records of each partition are read.

        Raises:
            saga.errors.TransportError: Kafka cannot be reached.
        """
        records = await self._read_tail(scan)
        handled = await self.handled()
        found = [
            _with_handled(r, handled.get((r.partition, r.offset)))
            for r in records
            if include_handled or (r.partition, r.offset) not in handled
        ]
        found.sort(key=lambda r: (r.timestamp, r.partition, r.offset), reverse=True)
        return found[:limit]

    async def get(self, partition: int, offset: int) -> DeadLetter:
        """The dead letter at ``partition:offset``.

        Raises:
            DeadLetterNotFound: No record there (never written, or removed by retention).
            saga.errors.TransportError: Kafka cannot be reached.
        """
        consumer = committed_consumer(self.bootstrap)
        tp = TopicPartition(self.topic, partition)
        try:
            with kafka_errors(f"read {self.topic}"):
                if tp not in await topic_partitions(self.bootstrap, [self.topic]):
                    raise DeadLetterNotFound(f"{self.topic} has no partition {partition}")
                await consumer.start()
                consumer.assign([tp])
                begin = (await consumer.beginning_offsets([tp]))[tp]
                end = (await consumer.end_offsets([tp]))[tp]
                if not begin <= offset < end:
                    raise DeadLetterNotFound(f"no dead letter at {partition}:{offset}")
                consumer.seek(tp, offset)
                record = await self._first_at(consumer, tp, offset, end)
        finally:
            await close_quietly(consumer)
        if record is None:
            raise DeadLetterNotFound(f"no dead letter at {partition}:{offset}")
        handled = await self.handled([(partition, offset)])
        return _with_handled(record, handled.get((partition, offset)))

    async def handled(
        self, refs: Sequence[tuple[int, int]] | None = None
    ) -> dict[tuple[int, int], Handled]:
        """What was done with dead letters of this topic, by ``(partition, offset)``."""
        c = t.dead_letters_handled.c
        stmt = select(t.dead_letters_handled).where(c.topic == self.topic)
        async with self.store.engine.connect() as conn:
            with translate_errors("read handled dead letters"):
                rows = list(await conn.execute(stmt))
        wanted = set(refs) if refs is not None else None
        return {
            (r.partition, r.offset): Handled(
                action=r.action,
                actor=r.actor,
                reason=r.reason,
                handled_at=as_utc(r.handled_at),
                original_topic=r.original_topic,
                saga_id=r.saga_id,
            )
            for r in rows
            if wanted is None or (r.partition, r.offset) in wanted
        }

    # -- act -----------------------------------------------------------------------------

    async def replay(
        self, partition: int, offset: int, *, actor: str, reason: str, again: bool = False
    ) -> DeadLetter:
        """Send the dead letter to its original topic, then record that it was replayed.

        Raises:
            DeadLetterNotFound: No record there.
            DeadLetterHandled: It was replayed or discarded already (and not ``again``).
            ValueError: No reason given, or the record does not say where it came from.
            saga.errors.TransportError: Kafka cannot be reached.
        """
        _need_reason(reason)
        record = await self.get(partition, offset)
        if record.handled is not None and not again:
            raise DeadLetterHandled(
                f"dead letter {record.ref} was {record.handled.action} by "
                f"{record.handled.actor} at {record.handled.handled_at:%Y-%m-%d %H:%M:%S}"
            )
        target = record.original_topic
        if not target:
            raise ValueError(f"dead letter {record.ref} has no {SOURCE_TOPIC_HEADER} header")
        producer = idempotent_producer(self.bootstrap)
        try:
            with kafka_errors(f"replay to {target}"):
                await producer.start()
                await producer.send_and_wait(
                    target,
                    value=record.value,
                    key=record.key,
                    headers=record.original_headers,
                )
        finally:
            await close_quietly(producer)
        return await self._record(record, "replayed", actor=actor, reason=reason)

    async def discard(self, partition: int, offset: int, *, actor: str, reason: str) -> DeadLetter:
        """Record that the dead letter needs nothing more (listings hide it from now on).

        Raises:
            DeadLetterNotFound: No record there.
            DeadLetterHandled: It was replayed or discarded already.
            ValueError: No reason given.
            saga.errors.TransportError: Kafka cannot be reached.
        """
        _need_reason(reason)
        record = await self.get(partition, offset)
        if record.handled is not None:
            raise DeadLetterHandled(
                f"dead letter {record.ref} was {record.handled.action} by "
                f"{record.handled.actor} already"
            )
        return await self._record(record, "discarded", actor=actor, reason=reason)

    async def _record(
        self, record: DeadLetter, action: Action, *, actor: str, reason: str
    ) -> DeadLetter:
        now = self.clock()
        handled = Handled(
            action=action,
            actor=actor,
            reason=reason,
            handled_at=now,
            original_topic=record.original_topic,
            saga_id=record.saga_id,
        )
        row = {
            "topic": self.topic,
            "partition": record.partition,
            "offset": record.offset,
            "action": action,
            "actor": actor,
            "reason": reason,
            "original_topic": record.original_topic,
            "saga_id": record.saga_id,
            "handled_at": now,
        }
        async with self.store.transaction() as tx:
            c = t.dead_letters_handled.c
            with translate_errors("record a handled dead letter"):
                await tx.conn.execute(
                    t.dead_letters_handled.delete().where(
                        c.topic == self.topic,
                        c.partition == record.partition,
                        c.offset == record.offset,
                    )
                )
                await tx.conn.execute(t.dead_letters_handled.insert(), row)
            sid = record.saga_id
            if sid is not None and sid in await tx.load_sagas_for_update([sid]):
                await tx.append_audit(
                    [
                        AuditWrite(
                            saga_id=sid,
                            kind=REQUESTED,
                            actor=actor,
                            detail={
                                "verb": "dlq_replay" if action == "replayed" else "dlq_discard",
                                "reason": reason,
                                "dead_letter": f"{self.topic}:{record.ref}",
                                "original_topic": record.original_topic,
                                "original_offset": record.original_offset,
                            },
                            recorded_at=now,
                        )
                    ]
                )
        log.info(
            "dead letter %s:%s %s by %s: %s",
            self.topic,
            record.ref,
            action,
            actor,
            reason,
            extra={"saga_id": record.saga_id} if record.saga_id else None,
        )
        return _with_handled(record, handled)

    # -- internals -----------------------------------------------------------------------

    async def _read_tail(self, scan: int) -> list[DeadLetter]:
        consumer = committed_consumer(self.bootstrap)
        out: list[DeadLetter] = []
        try:
            with kafka_errors(f"read {self.topic}"):
                tps = await topic_partitions(self.bootstrap, [self.topic])
                if not tps:
                    return []
                await consumer.start()
                consumer.assign(tps)
                begins = await consumer.beginning_offsets(tps)
                ends = await consumer.end_offsets(tps)
                todo = {tp for tp in tps if ends[tp] > begins[tp]}
                for tp in todo:
                    consumer.seek(tp, max(begins[tp], ends[tp] - scan))
                loop = asyncio.get_running_loop()
                deadline = loop.time() + READ_TIMEOUT_S
                while todo and loop.time() < deadline:
                    batch = await consumer.getmany(*todo, timeout_ms=200)
                    for records in batch.values():
                        out.extend(_dead_letter(r) for r in records)
                    for tp in list(todo):
                        if await consumer.position(tp) >= ends[tp]:
                            todo.discard(tp)
        finally:
            await close_quietly(consumer)
        return out

    async def _first_at(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int, end: int
    ) -> DeadLetter | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READ_TIMEOUT_S
        while loop.time() < deadline:
            batch = await consumer.getmany(tp, timeout_ms=200, max_records=1)
            for record in batch.get(tp, []):
                return _dead_letter(record) if record.offset == offset else None
            if await consumer.position(tp) >= end:
                return None
        return None


def _need_reason(reason: str) -> None:
    if not reason.strip():
        raise ValueError("give a reason (it is written to the audit log)")


def _dead_letter(record: Any) -> DeadLetter:
    return DeadLetter(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp=datetime.fromtimestamp(record.timestamp / 1000, UTC),
        key=record.key,
        value=record.value,
        headers=tuple((k, bytes(v)) for k, v in (record.headers or ())),
    )


def _with_handled(record: DeadLetter, handled: Handled | None) -> DeadLetter:
    from dataclasses import replace

    return replace(record, handled=handled)


__all__ = [
    "DeadLetter",
    "DeadLetterHandled",
    "DeadLetterNotFound",
    "DeadLetters",
    "Handled",
    "parse_ref",
]
