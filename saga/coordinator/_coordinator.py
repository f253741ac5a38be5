"""The coordinator: Kafka replies in, engine decisions out, one database transaction per batch.

Theory of operation
-------------------
The coordinator never decides anything itself. For each ``getmany`` batch of the
replies topic (read_committed; timers and signals arrive there too) it:

1. decodes every record into an :class:`contracts.Envelope` and an engine event; a
   record that cannot be decoded, names an unknown saga, type or step, or carries a
   future format version becomes a dead letter — a row in the outbox addressed to the
   DLQ topic with the reason and the original bytes, so it is published exactly once
   and never lost;
2. opens ONE database transaction that skips message ids already in the inbox, loads
   and locks the sagas involved in id order (``SELECT ... FOR UPDATE`` on PostgreSQL),
   applies :func:`saga.engine.transition` to each event in offset order, writes the new
   state (optimistic revision check as a second guard), step executions, audit records,
   commands and lifecycle events into the outbox, timers, the inbox ids and the next
   offsets of every partition; and commits.

Offsets and partition ownership are stored in the database, never committed to Kafka
(:class:`saga.partitions.PartitionConsumer`): every batch stores its offsets only
where its owner epoch still holds, so after a rebalance the coordinator that lost a
partition cannot commit a late batch for it. A crash anywhere replays at most the
uncommitted batch, and the inbox makes that harmless. The relays of the owned
partitions (by default in the same process) publish what the outbox holds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from aiokafka import ConsumerRecord

from contracts import ContractDecodeError, Envelope, MessageKind
from saga.coordinator._breaker import BreakerPolicy, CircuitBreakers
from saga.coordinator._breaker_reports import REPORT_INTERVAL, BreakerReporter
from saga.coordinator._definitions import DefinitionCache
from saga.coordinator._writes import (
    Writes,
    dead_letter_message,
    decision_writes,
    ignored_audit,
)
from saga.engine import (
    Event,
    ParticipantResumed,
    SagaState,
    StartSaga,
    StepFailed,
    StepSucceeded,
    TimerFired,
    TimerKind,
    derive_message_id,
    event_from_envelope,
    parse_event,
    transition,
)
from saga.errors import ConfigError, ContractError, SagaError
from saga.kafka import GroupMember, shard_of, topic_partitions
from saga.lifecycle import AsyncResource, Clock, State, utc_now, wait_at_most
from saga.partitions import PartitionConsumer
from saga.retry import Backoff, Startup, outage_kind
from saga.store import OutboxMessage, SqlStore
from saga.telemetry import Telemetry, format_trace_id, log_context, saga_trace_id
from saga.topics import Topics

log = logging.getLogger("saga.coordinator")


@dataclass(frozen=True, kw_only=True)
class CoordinatorConfig:
    """How the coordinator consumes and batches."""

    group_id: str = ""
    """Kafka consumer group shared by all coordinators of a deployment; empty (the
    default): ``<prefix>saga-coordinator`` (:attr:`saga.topics.Topics.coordinator_group`),
    so deployments that share a Kafka cluster never share a group."""
    max_batch: int = 500
    """Most records applied in one database transaction."""
    poll_timeout_ms: int = 100
    """How long one poll waits for records."""
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    """Per-participant circuit breaker policy."""
    breaker_report_interval: timedelta = REPORT_INTERVAL
    """How often the breakers are written to the database (for the console) when none
    changed state; a change is written at once."""
    retry_backoff: timedelta = timedelta(milliseconds=200)
    """First back-off after a database or broker failure (doubles up to 10 s)."""
    crash_after_batches: int | None = None
    """Fault injection for tests: SIGKILL the process right after this many batches were
    committed to the database (and before anything else happens). Never set in production."""


@dataclass
class _Item:
    record: ConsumerRecord[Any, Any]
    envelope: Envelope
    event: Event


@dataclass
class BatchResult:
    """What one batch did (for logs, metrics and tests)."""

    applied: int = 0
    ignored: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    commands: int = 0


class Coordinator(AsyncResource):
    """Consumes replies and applies engine decisions; an async context manager.

    Example::

        async with Coordinator(store, definitions, bootstrap, topics) as coordinator:
            await coordinator.run()          # until stop() or SIGTERM in the CLI
    """

    def __init__(
        self,
        store: SqlStore,
        definitions: DefinitionCache,
        bootstrap_servers: str,
        topics: Topics,
        config: CoordinatorConfig | None = None,
        *,
        clock: Clock = utc_now,
        telemetry: Telemetry | None = None,
        on_assignment: Callable[[frozenset[int], GroupMember | None], None] | None = None,
    ) -> None:
        self.store = store
        self.definitions = definitions
        self.bootstrap_servers = bootstrap_servers
        self.topics = topics
        self.config = config or CoordinatorConfig()
        self.clock = clock
        self.telemetry = telemetry or Telemetry.disabled()
        self.breakers = CircuitBreakers(self.config.breaker)
        self._state = State.UNOPENED
        self.group_id = self.config.group_id or topics.coordinator_group
        """The consumer group of the deployment's coordinators."""
        self._on_assignment = on_assignment
        self._consumer: PartitionConsumer | None = None
        self._reporter: BreakerReporter | None = None
        self.partitions = 0
        """Partitions of the replies topic (known once the coordinator is open)."""
        self._stop = asyncio.Event()
        self.startup = Startup("coordinator joining its group", self._stop, log)
        """Opening waits out an outage; ``startup.waiting_for`` says for what."""
        self._paused_before: frozenset[str] | None = None  # None: not checked yet
        self.batches = 0

    @property
    def state(self) -> State:
        """Lifecycle state."""
        return self._state

    async def _open(self) -> None:
        if self._state is not State.UNOPENED:
            raise RuntimeError(f"coordinator cannot be opened: it is {self._state.value}")
        # An outage now waits, as the runtime's start-up does (stop() gives up).
        consumer = await self.startup(self._join)
        self._consumer = consumer
        self._reporter = BreakerReporter(
            self.store, consumer.member, interval=self.config.breaker_report_interval
        )
        self._state = State.RUNNING

    async def _join(self) -> PartitionConsumer:
        """Register the replies topic's partitions and join its consumer group."""
        self.partitions = await register_replies_partitions(
            self.store, self.bootstrap_servers, self.topics, self.group_id
        )
        consumer = PartitionConsumer(
            self.store.engine,
            bootstrap_servers=self.bootstrap_servers,
            topic=self.topics.replies,
            group_id=self.group_id,
            max_batch=self.config.max_batch,
            on_assignment=self._on_assignment,
            clock=self.clock,
        )
        await consumer.start()
        return consumer

    async def _close(self, exc: BaseException | None) -> None:
        self._state = State.DRAINING
        if self._reporter is not None:
            await self._reporter.forget()
        if self._consumer is not None:
            await self._consumer.stop()
        self._consumer = None
        self._state = State.CLOSED

    @property
    def consumer(self) -> PartitionConsumer:
        """The replies consumer: owned partitions and their epochs, lag."""
        if self._state is not State.RUNNING or self._consumer is None:
            raise RuntimeError(f"coordinator is not running (it is {self._state.value})")
        return self._consumer

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current batch."""
        self._stop.set()

    async def run(self) -> None:
        """Poll and apply batches until :meth:`stop`; back off and retry on outages."""
        backoff = Backoff(self.config.retry_backoff.total_seconds(), 10.0)
        while not self._stop.is_set():
            try:
                await self.poll_once()
                backoff.reset()
            except SagaError as exc:
                if not exc.retriable:
                    raise
                delay = backoff.next_delay()
                log.warning("%s problem, retrying in %.1fs: %s", outage_kind(exc), delay, exc)
                await self._sleep(delay)

    async def _sleep(self, seconds: float) -> None:
        await wait_at_most(self._stop, seconds)

    async def consumer_lag(self) -> dict[tuple[str, int], int]:
        """Records of the replies topic not consumed yet per partition (highwater - position).

        Empty when the coordinator is not running.
        """
        consumer = self._consumer
        if self._state is not State.RUNNING or consumer is None:
            return {}
        return {(consumer.topic, p): n for p, n in (await consumer.lag()).items()}

    async def poll_once(self) -> BatchResult:
        """Fetch one batch and apply it; returns what happened.

        A batch that fails is rewound (its records are read again). A batch whose
        partitions another coordinator claimed meanwhile commits nothing; those
        partitions are left to their new owner.
        """
        consumer = self.consumer
        polled = await consumer.poll(self.config.poll_timeout_ms)
        result = BatchResult()
        if polled:

            async def apply(owned: dict[int, list[ConsumerRecord[Any, Any]]]) -> BatchResult | None:
                records = [r for p in sorted(owned) for r in owned[p]]
                return await self.apply_batch(records) if records else None

            applied = await consumer.handle(polled, apply)
            if applied is not None:
                result = applied
                self.batches += 1
                crash_after = self.config.crash_after_batches
                if crash_after and self.batches >= crash_after:
                    log.warning("fault injection: killing the coordinator after a committed batch")
                    os.kill(os.getpid(), signal.SIGKILL)
        await self._release_paused()
        if self._reporter is not None:
            await self._reporter.report(self.breakers, self.clock())
        return result

    async def apply_batch(self, records: Sequence[ConsumerRecord[Any, Any]]) -> BatchResult:
        """Apply one batch of reply-topic records in ONE database transaction."""
        now = self.clock()
        result = BatchResult()
        items: list[_Item] = []
        dead: list[tuple[ConsumerRecord[Any, Any], str]] = []
        for record in records:
            try:
                envelope = Envelope.from_bytes(record.value)
                event = decode_event(envelope)
            except (ContractDecodeError, ContractError) as exc:
                dead.append((record, f"malformed message: {exc}"))
                continue
            items.append(_Item(record, envelope, event))

        writes = Writes()
        offsets: dict[int, int] = {}
        for record in records:
            offsets[record.partition] = max(offsets.get(record.partition, 0), record.offset + 1)

        observed = self.telemetry.observe_batch(now)
        async with self.store.transaction() as tx:
            ids = [str(it.envelope.message_id) for it in items]
            # Claimed up front: the inbox rows commit (or roll back) with the batch.
            fresh = set(await tx.claim_message_ids(ids))
            result.duplicates = len(items) - len([i for i in ids if i in fresh])
            todo = [it for it in items if str(it.envelope.message_id) in fresh]
            rows = await tx.load_sagas_for_update(sorted({str(it.envelope.saga_id) for it in todo}))
            states: dict[str, SagaState] = {}
            originals: dict[str, SagaState] = {}
            for saga_id, row in rows.items():
                st = SagaState.model_validate_json(row.state_json)
                states[saga_id] = st
                originals[saga_id] = st
            paused = self.breakers.paused(now)
            seen: set[str] = set()
            for it in todo:
                mid = str(it.envelope.message_id)
                if mid in seen:  # the same message twice in one batch
                    result.duplicates += 1
                    continue
                seen.add(mid)
                sid = str(it.envelope.saga_id)
                state = states.get(sid)
                if state is None:
                    dead.append((it.record, f"unknown saga {sid}"))
                    continue
                with log_context(**_log_fields(it.envelope)):
                    definition = await self.definitions.get(state.saga_type, state.saga_version)
                    if definition is None:
                        unknown = f"{state.saga_type} v{state.saga_version}"
                        dead.append((it.record, f"unknown definition {unknown}"))
                        continue
                    # A release (breaker closed or half-open probe) must not be deferred again.
                    event_paused = (
                        paused - {it.event.participant}
                        if isinstance(it.event, ParticipantResumed)
                        else paused
                    )
                    decision = transition(state, it.event, definition, now, paused=event_paused)
                    self._observe(it.event, definition, state, now)
                    if decision.outcome == "dead_letter":
                        dead.append((it.record, decision.reason or "rejected by the engine"))
                        # The saga's own log says what became of the message, too.
                        writes.audit.extend(ignored_audit(decision, state.saga_id, now))
                        continue
                    if decision.outcome == "applied" and decision.state is not None:
                        states[sid] = decision.state
                        result.applied += 1
                        result.commands += len(decision.commands)
                    else:
                        result.ignored += 1
                        writes.audit.extend(ignored_audit(decision, state.saga_id, now))
                        continue
                    applied = decision_writes(
                        decision,
                        # Only steps this decision changed get step-execution rows.
                        before=state,
                        topics=self.topics,
                        now=now,
                        partitions=self.partitions,
                    )
                    applied.outbox = observed.decision(
                        decision, applied.outbox, before=state, record=it.record
                    )
                    writes.extend(applied)
            # One saga row per saga, checked against the revision it was loaded with.
            writes.sagas = [
                _with_expected(w, originals[w.saga_id].revision)
                for w in _last_per_saga(writes.sagas)
            ]
            for record, reason in dead:
                writes.outbox.append(self._dead_letter(record, reason, now))
            result.dead_letters = len(dead)
            # A dead letter may be replayed once its cause is fixed: not a duplicate then.
            dead_ids = {(r.partition, r.offset) for r, _ in dead}
            await tx.release_message_ids(
                [
                    str(it.envelope.message_id)
                    for it in todo
                    if (it.record.partition, it.record.offset) in dead_ids
                ]
            )
            await writes.write(tx, self.consumer.offset_commit(offsets))
        observed.committed(dead_letters=len(dead))
        if dead:
            for record, reason in dead:
                log.warning(
                    "dead-lettered %s[%d]@%d: %s",
                    record.topic,
                    record.partition,
                    record.offset,
                    reason,
                )
        return result

    def _observe(self, event: Event, definition: Any, state: SagaState, now: datetime) -> None:
        """Feed the circuit breakers with step outcomes (forward commands only)."""
        step_name: str | None = None
        ok = True
        if isinstance(event, StepSucceeded):
            step_name, ok = event.step, True
        elif isinstance(event, StepFailed) or (
            isinstance(event, TimerFired) and event.timer is TimerKind.STEP_TIMEOUT
        ):
            step_name, ok = event.step, False
        if not step_name or not definition.has_step(step_name):
            return
        participant = definition.step(step_name).participant
        if participant:
            self.breakers.record(participant, ok=ok, now=now)

    async def _release_paused(self) -> None:
        """When a participant's breaker half-opens or closes, release deferred commands.

        The release goes through the replies topic (a ``ParticipantResumed`` event per
        saga, via the outbox) so every state change is still made by the coordinator
        that owns the saga's partition.
        """
        now = self.clock()
        paused = self.breakers.paused(now)
        if self._paused_before is None:  # first check: release what an earlier process deferred
            known = self.definitions.known()
            self._paused_before = frozenset(
                s.participant for d in known for s in d.steps if s.participant
            )
        released = self._paused_before - paused
        for participant in sorted(paused - self._paused_before):
            log.warning(
                "participant %s paused: its circuit is open; new commands wait (durably) "
                "until a probe succeeds",
                participant,
            )
        for participant in sorted(released & set(self.breakers.snapshot(now))):
            log.info("participant %s resumed: releasing its deferred commands", participant)
        probing = {p for p in paused if self.breakers.take_probe(p, now)}
        self._paused_before = paused
        if not released and not probing:
            return
        for participant in sorted(released | probing):
            limit = 1 if participant in probing else 10_000
            saga_ids = await self.store.sagas_with_deferred(participant, limit=limit)
            messages = [self._resume_message(UUID(sid), participant, now) for sid in saga_ids]
            if messages:
                async with self.store.transaction() as tx:
                    await tx.enqueue(messages)

    def _resume_message(self, saga_id: UUID, participant: str, now: datetime) -> OutboxMessage:
        return control_message(
            ParticipantResumed(participant=participant),
            saga_id=saga_id,
            message_id=derive_message_id(now, str(saga_id), "participant_resumed", participant),
            shard=shard_of(saga_id, self.partitions),
            topics=self.topics,
            now=now,
        )

    def _dead_letter(
        self, record: ConsumerRecord[Any, Any], reason: str, now: datetime
    ) -> OutboxMessage:
        # Published by the relay of the partition it was read from: ours.
        return dead_letter_message(
            record,
            reason,
            f"coordinator:{self.group_id}",
            topics=self.topics,
            shard=record.partition,
        )


CONTROL_PREFIX = "control."
"""Signal-kind envelopes whose type starts with this carry an engine event as payload
(operator commands from the API, ``participant_resumed`` from the circuit breakers)."""


def decode_event(envelope: Envelope) -> Event:
    """The engine event an envelope from the replies topic carries.

    Raises:
        ContractError: The envelope is not a reply, timer, signal or control message.
    """
    if envelope.kind is MessageKind.SIGNAL and envelope.type.startswith(CONTROL_PREFIX):
        event = parse_event(envelope.payload)
        if isinstance(event, StartSaga):
            raise ContractError(
                "a saga is started through the API or the starts topic, not the replies topic"
            )
        return event
    return event_from_envelope(envelope)


def control_message(
    event: Event, *, saga_id: UUID, message_id: UUID, shard: int, topics: Topics, now: datetime
) -> OutboxMessage:
    """An outbox row that delivers ``event`` to the coordinator owning ``saga_id``."""
    env = Envelope(
        message_id=message_id,
        saga_id=saga_id,
        saga_type="",
        saga_version=1,
        kind=MessageKind.SIGNAL,
        type=CONTROL_PREFIX + event.type,
        payload=event.model_dump(mode="json"),
        occurred_at=now,
    )
    return OutboxMessage(
        message_id=str(message_id),
        topic=topics.replies,
        key=str(saga_id).encode(),
        headers=[],
        payload=env.to_bytes(),
        owner_topic=topics.replies,
        shard=shard,
    )


def _log_fields(envelope: Envelope) -> dict[str, object]:
    """The log context of one consumed message (the trace id is derived from the saga)."""
    return {
        "saga_id": envelope.saga_id,
        "step": envelope.step,
        "attempt": envelope.attempt,
        "message_id": envelope.message_id,
        "trace_id": format_trace_id(saga_trace_id(envelope.saga_id)),
    }


def _last_per_saga(writes: list[Any]) -> list[Any]:
    last: dict[str, Any] = {}
    for w in writes:
        last[w.saga_id] = w
    return list(last.values())


def _with_expected(write: Any, revision: int) -> Any:
    from dataclasses import replace

    return replace(write, expected_revision=revision)


TOPIC_APPEARS_TRIES = 20
"""How often (every 0.5 s) to look again for a replies topic that is not there yet."""


async def register_replies_partitions(
    store: SqlStore, bootstrap_servers: str, topics: Topics, group_id: str
) -> int:
    """Read the replies topic's partition count from Kafka and record it in the database.

    Every writer of outbox rows (the API's starts, timers, operator verbs) needs it to
    find a saga's home partition. The count must never change under a running
    deployment: Kafka would move every key to another partition, and with it the
    order of each saga's messages.

    Raises:
        ConfigError: The topic does not exist, or has another partition count than the
            one recorded.
        saga.errors.TransportError: Kafka cannot be reached.
    """
    # A topic created a moment ago may not be in the answering broker's metadata yet.
    for attempt in range(TOPIC_APPEARS_TRIES + 1):
        count = len(await topic_partitions(bootstrap_servers, [topics.replies]))
        if count or attempt == TOPIC_APPEARS_TRIES:
            break
        await asyncio.sleep(0.5)
    if count == 0:
        raise ConfigError(
            f"the replies topic {topics.replies} does not exist; create it with"
            " `saga admin topics` (or let the coordinator create topics at start)"
        )
    recorded = await store.partition_count(topics.replies)
    if recorded is not None and recorded != count:
        raise ConfigError(
            f"{topics.replies} has {count} partitions, but the database recorded"
            f" {recorded}: changing the partition count moves sagas to other partitions"
            " and breaks the order of their messages. Restore the partition count, or"
            " drain every saga and start a new deployment (new topic prefix)."
        )
    await store.register_partitions(group_id, topics.replies, count)
    return count
