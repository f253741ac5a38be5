"""Starting sagas from Kafka: the starts topic, and the topics definitions' triggers watch.

Theory of operation
-------------------
A :class:`Starter` consumes one topic as a member of the group
``<prefix>saga-starter.<topic>`` (every coordinator runtime runs one per topic, so the
partitions are shared like the replies topic's) through the same
:class:`~saga.partitions.PartitionConsumer` as the coordinator: offsets and owner
epochs live in the database. For each batch it opens ONE database transaction that

1. turns every record into start requests: a :class:`contracts.StartRequest` on the
   starts topic; on a trigger topic, one request per definition whose trigger matches
   the event (its ``type``, its ``when`` condition), with the input mapped from the
   event and the idempotency key taken from the event's message id (or from the
   record's topic, partition and offset);
2. starts each saga unless a saga with the same idempotency key exists (the sagas
   table's unique key makes "once per key" hold across redeliveries, retries and
   every coordinator), with the same writes an API start makes: the saga, its first
   commands in the outbox lane of its home partition, timers, audit records;
3. refuses a request it cannot start (malformed, unknown saga type, an input that
   fails the definition's schema): the record goes to the dead-letter topic with the
   reason, and a ``saga.start_rejected`` event on the events topic tells the sender;
4. stores the next offsets, checked against its epochs, and commits.

Records of a trigger topic that match no trigger are passed over: the topic belongs
to another service, so its other records are none of the coordinator's business.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, uuid5

from aiokafka import ConsumerRecord
from pydantic import ValidationError

from contracts import START_REJECTED, Envelope, MessageKind, StartRequest
from saga.coordinator._definitions import DefinitionCache
from saga.coordinator._start import prepare_start, resolve_definition
from saga.coordinator._writes import dead_letter_message
from saga.definition import (
    IdempotencyFrom,
    SagaDefinition,
    Trigger,
    evaluate,
    evaluate_mapping,
    is_truthy,
)
from saga.errors import DefinitionError, DuplicateMessage, InvalidInput, SagaError
from saga.lifecycle import AsyncResource, Clock, utc_now, wait_at_most
from saga.partitions import PartitionConsumer
from saga.retry import Backoff, Startup, outage_kind
from saga.store import AuditWrite, OutboxMessage, SqlStore
from saga.telemetry import Telemetry
from saga.topics import Topics

log = logging.getLogger("saga.starter")

REQUESTED_KIND = "start.requested"
"""Audit record kind: the start request a saga was started from (topic, offset, sender)."""


@dataclass(frozen=True, slots=True)
class _Request:
    """A start request read from a record, or the reason it was refused."""

    record: ConsumerRecord[Any, Any]
    request: StartRequest | None = None
    refused: str | None = None
    trigger: str | None = None  # the definition whose trigger matched


@dataclass
class StartBatch:
    """What one batch of start requests did (for logs, metrics and tests)."""

    started: int = 0
    duplicates: int = 0
    rejected: int = 0
    passed_over: int = 0
    started_ids: list[str] = field(default_factory=list)


def trigger_topics(
    definitions: Sequence[SagaDefinition], topics: Topics
) -> dict[str, list[tuple[SagaDefinition, Trigger]]]:
    """The ``(definition, trigger)`` pairs watching each topic (prefix put before it).

    Only the newest version of each definition listens: a new version with other
    triggers replaces the old one's.
    """
    newest: dict[str, SagaDefinition] = {}
    for d in definitions:
        if d.name not in newest or d.version > newest[d.name].version:
            newest[d.name] = d
    watched: dict[str, list[tuple[SagaDefinition, Trigger]]] = {}
    for definition in newest.values():
        for trigger in definition.triggers:
            watched.setdefault(topics.prefix + trigger.topic, []).append((definition, trigger))
    return watched


class Starter(AsyncResource):
    """Starts the sagas one topic asks for; an async context manager.

    Args:
        store: The saga store.
        definitions: Registered definitions.
        bootstrap_servers: Kafka bootstrap servers.
        topics: The deployment's topic names.
        topic: The topic to consume: ``topics.starts``, or a trigger topic.
        partitions: Partitions of the replies topic (each saga's home partition).
        triggers: For a trigger topic, the ``(definition, trigger)`` pairs that watch it.
    """

    def __init__(
        self,
        store: SqlStore,
        definitions: DefinitionCache,
        bootstrap_servers: str,
        topics: Topics,
        topic: str,
        *,
        partitions: int,
        triggers: Sequence[tuple[SagaDefinition, Trigger]] = (),
        clock: Clock = utc_now,
        telemetry: Telemetry | None = None,
        max_batch: int = 500,
        poll_timeout_ms: int = 100,
        retry_backoff_s: float = 0.2,
    ) -> None:
        self.store = store
        self.definitions = definitions
        self.topics = topics
        self.topic = topic
        self.partitions = partitions
        self.triggers = list(triggers)
        self.clock = clock
        self.telemetry = telemetry or Telemetry.disabled()
        self.group_id = topics.starter_group(topic)
        self._retry_backoff_s = retry_backoff_s
        self._poll_timeout_ms = poll_timeout_ms
        self._consumer = PartitionConsumer(
            store.engine,
            bootstrap_servers=bootstrap_servers,
            topic=topic,
            group_id=self.group_id,
            max_batch=max_batch,
            clock=clock,
        )
        self._stop = asyncio.Event()
        self.startup = Startup(f"starter of {topic}", self._stop, log)
        """Opening waits out an outage; ``startup.waiting_for`` says for what."""
        self.started = 0
        """Sagas this starter has started since it was opened."""

    @property
    def consumer(self) -> PartitionConsumer:
        """The topic's consumer (owned partitions, lag)."""
        return self._consumer

    async def _open(self) -> None:
        # An outage now waits, as the runtime's start-up does (stop() gives up).
        await self.startup(self._consumer.start)

    async def _close(self, exc: BaseException | None) -> None:
        await self._consumer.stop()

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current batch."""
        self._stop.set()

    async def run(self) -> None:
        """Poll and apply batches until :meth:`stop`; back off and retry on outages."""
        backoff = Backoff(self._retry_backoff_s, 10.0)
        while not self._stop.is_set():
            try:
                await self.poll_once()
                backoff.reset()
            except SagaError as exc:
                if not exc.retriable:
                    raise
                delay = backoff.next_delay()
                log.warning(
                    "%s: %s problem, retrying in %.1fs: %s",
                    self.topic,
                    outage_kind(exc),
                    delay,
                    exc,
                )
                await wait_at_most(self._stop, delay)

    async def poll_once(self) -> StartBatch:
        """Fetch one batch of records and start what they ask for."""
        polled = await self._consumer.poll(self._poll_timeout_ms)
        if not polled:
            return StartBatch()

        async def apply(owned: dict[int, list[ConsumerRecord[Any, Any]]]) -> StartBatch:
            return await self.apply_batch([r for p in sorted(owned) for r in owned[p]])

        return await self._consumer.handle(polled, apply) or StartBatch()

    async def apply_batch(self, records: Sequence[ConsumerRecord[Any, Any]]) -> StartBatch:
        """Start the sagas a batch of records asks for, in ONE database transaction."""
        now = self.clock()
        result = StartBatch()
        requests = [req for record in records for req in self._requests(record)]
        offsets: dict[int, int] = {}
        for record in records:
            offsets[record.partition] = max(offsets.get(record.partition, 0), record.offset + 1)
        refused: list[tuple[_Request, str, str | None]] = []
        commits = []
        # Found before the transaction opens (SQLite allows one writer: a lookup in the
        # store inside it would wait for the transaction's own lock).
        found: dict[tuple[str, int | None], SagaDefinition | DefinitionError] = {}
        for req in requests:
            if req.request is not None:
                wanted = (req.request.saga_type, req.request.saga_version)
                if wanted not in found:
                    try:
                        found[wanted] = await resolve_definition(self.definitions, *wanted)
                    except DefinitionError as exc:
                        found[wanted] = exc
        async with self.store.transaction() as tx:
            for req in requests:
                if req.request is None:
                    if req.refused is None:
                        result.passed_over += 1
                    else:
                        refused.append((req, req.refused, None))
                    continue
                start = req.request
                key = start.effective_idempotency_key
                definition = found[(start.saga_type, start.saga_version)]
                try:
                    if isinstance(definition, DefinitionError):
                        raise definition
                    prepared = prepare_start(
                        definition,
                        self.topics,
                        start.input,
                        now=now,
                        partitions=self.partitions,
                        idempotency_key=key,
                        correlation_id=start.correlation_id,
                        saga_id=start.saga_id,
                        telemetry=self.telemetry,
                    )
                    requested = self._requested(req, prepared.saga.saga_id, now)
                    saga_id, created = await tx.start_saga(
                        prepared.start(idempotency_key=key, extra_audit=[requested])
                    )
                except (DefinitionError, InvalidInput, DuplicateMessage) as exc:
                    refused.append((req, exc.message, getattr(exc, "path", None)))
                    continue
                if created:
                    result.started += 1
                    result.started_ids.append(saga_id)
                    commits.append(prepared.committed)
                else:
                    result.duplicates += 1
            if refused:
                await tx.enqueue(
                    [m for req, why, path in refused for m in self._refusal(req, why, path, now)]
                )
            result.rejected = len(refused)
            await self._consumer.commit(tx.conn, offsets)
        for committed in commits:
            committed()
        self.started += result.started
        for req, why, _ in refused:
            r = req.record
            log.warning(
                "refused a start request %s[%d]@%d: %s", r.topic, r.partition, r.offset, why
            )
        return result

    # -- reading requests ---------------------------------------------------------------

    def _requests(self, record: ConsumerRecord[Any, Any]) -> list[_Request]:
        if not self.triggers:
            try:
                return [_Request(record, StartRequest.model_validate_json(record.value or b""))]
            except ValidationError as exc:
                return [_Request(record, refused=f"malformed start request: {_describe(exc)}")]
        try:
            event = json.loads(record.value or b"")
        except ValueError:
            return []  # not JSON: not an event any trigger can match
        return [req for d, t in self.triggers if (req := _match(record, event, d, t)) is not None]

    def _requested(self, req: _Request, saga_id: str, now: datetime) -> AuditWrite:
        assert req.request is not None
        r = req.record
        return AuditWrite(
            saga_id=saga_id,
            kind=REQUESTED_KIND,
            actor=req.request.requested_by,
            detail={
                "topic": r.topic,
                "partition": r.partition,
                "offset": r.offset,
                "request_message_id": str(req.request.message_id),
                "idempotency_key": req.request.effective_idempotency_key,
                **({"trigger": req.trigger} if req.trigger else {}),
            },
            recorded_at=now,
        )

    def _refusal(
        self, req: _Request, reason: str, path: str | None, now: datetime
    ) -> list[OutboxMessage]:
        """The dead letter of a refused request, and the event that tells its sender."""
        r = req.record
        shard = r.partition % self.partitions
        dead = dead_letter_message(
            r, reason, f"starter:{self.group_id}", topics=self.topics, shard=shard
        )
        start = req.request
        where = f"{r.topic}:{r.partition}:{r.offset}"
        event = Envelope(
            message_id=uuid5(NAMESPACE_URL, f"start-rejected:{where}"),
            saga_id=(start.saga_id if start and start.saga_id else uuid5(NAMESPACE_URL, where)),
            saga_type=start.saga_type if start else "",
            saga_version=(start.saga_version or 1) if start else 1,
            kind=MessageKind.EVENT,
            type=START_REJECTED,
            payload={
                "reason": reason,
                "path": path,
                "request_message_id": str(start.message_id) if start else None,
                "idempotency_key": start.effective_idempotency_key if start else None,
                "source": {"topic": r.topic, "partition": r.partition, "offset": r.offset},
            },
            correlation_id=start.correlation_id if start else None,
            occurred_at=now,
        )
        rejected = OutboxMessage(
            message_id=str(event.message_id),
            topic=self.topics.events,
            key=r.key,
            headers=[],
            payload=event.to_bytes(),
            owner_topic=self.topics.replies,
            shard=shard,
        )
        return [dead, rejected]


def _match(
    record: ConsumerRecord[Any, Any], event: Any, definition: SagaDefinition, trigger: Trigger
) -> _Request | None:
    """The start request an event makes for one definition's trigger, if it matches."""
    if not isinstance(event, dict):
        return None
    if trigger.type is not None and event.get("type") != trigger.type:
        return None
    try:
        if trigger.when is not None and not is_truthy(evaluate(trigger.when, event, "when")):
            return None
        saga_input = evaluate_mapping(trigger.input, event, "input")
    except DefinitionError as exc:
        return _Request(record, refused=f"trigger of {definition.name}: {exc}")
    if trigger.idempotency is IdempotencyFrom.OFFSET:
        source = f"{record.topic}:{record.partition}:{record.offset}"
    else:
        message_id = event.get("message_id")
        if not isinstance(message_id, str) or not message_id:
            return _Request(
                record,
                refused=f"trigger of {definition.name}: the event has no message_id"
                " (give the trigger `idempotency: offset` for events without one)",
            )
        source = message_id
    key = f"trigger:{definition.name}:{source}"
    if len(key) > 200:
        key = "trigger:" + hashlib.sha256(key.encode()).hexdigest()
    request = StartRequest(
        message_id=uuid5(NAMESPACE_URL, key),
        saga_type=definition.name,
        saga_version=definition.version,
        input=saga_input,
        idempotency_key=key,
        requested_by=f"trigger:{record.topic}",
    )
    return _Request(record, request, trigger=definition.name)


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "<request>"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)
