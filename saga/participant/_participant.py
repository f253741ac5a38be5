"""The participant: consume commands, call handlers, reply exactly once (or at least once).

Theory of operation
-------------------
A participant consumes ``<prefix><name>.commands`` (read_committed) in ``getmany``
batches. Each record is decoded into an :class:`~contracts.Envelope` and its payload into
the model registered for its type. A record that cannot be decoded (not JSON, bad
envelope, unknown type, not a command) is *poison* and goes to the DLQ topic with the
reason and the original bytes. A command whose payload fails its model gets a permanent
failure reply instead (``participant.invalid_command`` with the validation message), so
its saga compensates at once rather than time out. Nothing is lost and the loop goes on.

Transactional mode (exactly once): one database transaction per batch. It (a) skips
message ids already in the inbox (``saga_inbox``), (b) runs each new command's handler
with the transaction's connection (a failing handler rolls back only its own writes and
still gets a failure reply: the batch is redone with a SAVEPOINT per command when a
handler fails; see ``_process_transactional``), (c) inserts the message ids into
the inbox, (d) writes the replies and dead letters into the outbox (``saga_outbox``),
and (e) stores the next offsets in ``saga_consumer_offsets``, fenced by the epoch with
which this replica claimed each partition (:class:`saga.partitions.PartitionConsumer`,
the coordinator's way of consuming too). Kafka's group offsets (committed afterwards,
best effort, for lag monitoring only) are not the source of truth. Each reply goes to
the outbox lane of the commands partition it answers, and the replica runs one
exactly-once relay per partition it owns (:class:`saga.relay.RelayPool`), under that
partition's own transactional id: any number of replicas, and any number of
participants on one database, publish every reply once with nothing configured. A
relay that fails for good ends :meth:`Participant.run` with its error. A crash anywhere
replays at most the uncommitted batch, whose effects were rolled back.

Simple mode (at least once): handlers run without a transaction; replies and dead
letters are sent with an idempotent producer after the batch, and when every send is
acknowledged the message ids are remembered (an in-memory LRU, plus the inbox table when
an engine is given) and the Kafka offsets committed. A crash before that re-runs the
handlers of the batch (they must be idempotent); their replies carry the same message ids
(derived from the command's id), so the coordinator drops the copies.

Inbox pruning: with a database, the participant deletes inbox ids older than its
retention while :meth:`Participant.run` runs (:class:`saga.inbox.InboxPruner`). By default
that is the commands topic's ``retention.ms``, read from the broker when the participant
opens: a duplicate command can only arrive while a copy of it can still be read.

Compensation handlers must accept "never happened": a compensation can arrive for a
command that timed out before it ran, or never arrived. Undo what exists and succeed
when there is nothing to undo.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from contracts import (
    MESSAGES,
    ContractDecodeError,
    Envelope,
    MessageKind,
    StartRequest,
    StepFailed,
    StepSucceeded,
)
from saga.deadletter import dead_letter_id, dead_letter_record
from saga.errors import ConfigError, PartitionFenced, StoreError, TransportError
from saga.inbox import (
    DEFAULT_PRUNE_INTERVAL,
    DEFAULT_PRUNE_LIMIT,
    InboxPruner,
    check_prune_settings,
    inbox_retention,
)
from saga.kafka import topic_partitions
from saga.lifecycle import AsyncResource, State
from saga.participant import _db
from saga.participant._context import NO_REPLY, CommandContext, Handler, HandlerResult
from saga.participant._errors import HANDLER_EXCEPTION, INVALID_COMMAND, ParticipantError
from saga.participant._headers import (
    CommandScope,
    HeadersHook,
    no_scope,
    propagate_trace_headers,
)
from saga.participant._initiator import request_start
from saga.participant._kafka import (
    RebalanceHooks,
    committed_consumer,
    idempotent_producer,
    topic_partition,
    translate_kafka_errors,
)
from saga.participant._records import OutgoingRecord, ReplyInterceptor, reply_envelope, saga_key
from saga.partitions import PartitionConsumer
from saga.relay import RelayConfig, RelayPool
from saga.topics import Topics

log = logging.getLogger("saga.participant")

M = TypeVar("M", bound=BaseModel)


class Mode(StrEnum):
    """How a participant processes commands."""

    TRANSACTIONAL = "transactional"
    """Exactly once: handler writes, inbox, reply (outbox) and offsets in one transaction."""
    SIMPLE = "simple"
    """At least once: inbox dedupe by message id, replies by an idempotent producer."""


@dataclass(frozen=True, kw_only=True)
class ParticipantConfig:
    """Options of a participant.

    Nothing here is per replica: run any number of replicas of a service with the same
    options, and any number of participants (in one process or in several) on one
    database. Each replica consumes the partitions its group assigns it and publishes
    the replies of exactly those partitions, under transactional ids derived from the
    commands topic (see :class:`saga.relay.RelayPool`). ``services.run_services`` is
    the one-process-many-participants layout: the four example services on one
    database, each with its own relays.
    """

    name: str
    """Participant name: it consumes ``<prefix><name>.commands``."""
    bootstrap_servers: str
    """Kafka bootstrap servers."""
    topics: Topics = field(default_factory=Topics)
    """Topic names (prefix) of the deployment."""
    mode: Mode = Mode.TRANSACTIONAL
    """Transactional (exactly once, needs an engine) or simple (at least once)."""
    group_id: str | None = None
    """Consumer group; default ``<prefix><name>.participant``. Every replica of the
    service uses the same one (the default needs no configuration)."""
    max_batch: int = 100
    """Most records handled per batch (one database transaction in transactional mode)."""
    poll_timeout_ms: int = 200
    """How long one poll waits for records (also bounds how fast ``stop()`` is seen)."""
    dedupe_cache_size: int = 10_000
    """Simple mode: message ids remembered in memory."""
    create_tables: bool = True
    """With an engine: create the inbox/outbox/offsets tables on open if missing."""
    relay: RelayConfig = field(default_factory=RelayConfig)
    """Transactional mode: options of the relays that publish the replies (one per owned
    partition; their lanes and transactional ids are derived, never configured)."""
    retry_backoff_ms: int = 500
    """Pause before a batch is retried after the database or Kafka failed."""
    lag_commit_interval_ms: int = 1_000
    """Transactional mode: commit the consumer group's Kafka offsets (used only to
    monitor lag) at most this often, not after every batch: each commit is a request
    to the broker. Simple mode commits after every batch (there, it is what counts)."""
    inbox_retention: timedelta | None = None
    """With an engine: how long the ids of handled commands are kept in the inbox.

    ``None`` (the default): as long as the commands topic keeps its records, its
    ``retention.ms`` read from the broker when the participant opens (7 days if it
    cannot be read; never pruned if it is ``-1``): a duplicate command can only arrive
    while a copy of it can still be read. A shorter value is accepted with a warning:
    duplicates older than that are handled again. See :mod:`saga.inbox`."""
    inbox_prune_interval: timedelta = DEFAULT_PRUNE_INTERVAL
    """With an engine: how often old inbox ids are deleted."""
    inbox_prune_limit: int = DEFAULT_PRUNE_LIMIT
    """Most inbox ids deleted in one transaction (rounds go on until one deletes fewer)."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("a participant needs a name")
        if self.max_batch < 1 or self.poll_timeout_ms < 1 or self.dedupe_cache_size < 0:
            raise ConfigError("max_batch and poll_timeout_ms must be >= 1")
        check_prune_settings(
            self.inbox_retention, self.inbox_prune_interval, self.inbox_prune_limit
        )

    @property
    def commands_topic(self) -> str:
        """The topic this participant consumes."""
        return self.topics.commands(self.name)

    @property
    def effective_group_id(self) -> str:
        """The consumer group."""
        return self.group_id or self.topics.participant_group(self.name)


@dataclass(frozen=True)
class Registration:
    """A handler registered for one message type."""

    message_type: str
    model: type[BaseModel]
    handler: Handler[Any]


class _Isolate(Exception):
    """A handler failed in a batch run without savepoints: redo it with them."""


@dataclass(frozen=True)
class _Command:
    record: Any
    envelope: Envelope
    registration: Registration
    command: BaseModel | None
    invalid: str | None = None
    """Why the payload does not fit the model (then the handler is never called)."""


async def _no_interception(records: Sequence[OutgoingRecord]) -> Sequence[OutgoingRecord]:
    return records


class Participant(AsyncResource):
    """A service's side of the saga protocol: handle commands, reply, never lose one.

    Example::

        participant = Participant(ParticipantConfig(name="inventory", bootstrap_servers=b), engine)

        @participant.command("inventory.reserve", model=ReserveInventory)
        async def reserve(cmd: ReserveInventory, ctx: CommandContext) -> InventoryReserved:
            await ctx.db.execute(...)
            return InventoryReserved(...)

        async with participant:
            await participant.run()  # until participant.stop()
    """

    def __init__(
        self,
        config: ParticipantConfig,
        engine: AsyncEngine | None = None,
        *,
        headers: HeadersHook = propagate_trace_headers,
        scope: CommandScope = no_scope,
        interceptor: ReplyInterceptor | None = None,
    ) -> None:
        """Create a participant (nothing is opened until ``async with``).

        Args:
            config: Options.
            engine: The service's database. Required in transactional mode; in simple
                mode it adds a durable inbox to the in-memory one.
            headers: Builds a reply's Kafka headers from the command's (trace context).
            scope: Opens a context around each command's handler and reply (a span and
                a log context: ``**Telemetry.participant_hooks()`` sets both hooks).
            interceptor: Sees each batch's outgoing records before they are sent
                (fault injection in tests; see :mod:`saga.testing`).
        """
        if config.mode is Mode.TRANSACTIONAL and engine is None:
            raise ConfigError(f"participant {config.name!r}: transactional mode needs an engine")
        self.config = config
        self._engine = engine
        self._headers = headers
        self._scope = scope
        self._intercept = interceptor or _no_interception
        self._handlers: dict[str, Registration] = {}
        self._state = State.UNOPENED
        self._consumer: Any = None  # simple mode: an aiokafka group consumer
        self._owned: PartitionConsumer | None = None  # transactional mode
        self._partitions = 0  # transactional mode: of the commands topic
        self._relays: RelayPool | None = None
        self._relay_failure: BaseException | None = None
        self._inbox_retention: timedelta | None = None
        self._pruner: InboxPruner | None = None
        self._producer: Any = None
        self._stop = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._batch_lock = asyncio.Lock()
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._lag_offsets: dict[int, int] = {}
        self._lag_committed_at = 0.0

    # -- registration -------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The participant's name."""
        return self.config.name

    @property
    def state(self) -> State:
        """Where the participant is in its lifecycle."""
        return self._state

    @property
    def registrations(self) -> Mapping[str, Registration]:
        """Registered handlers by message type."""
        return dict(self._handlers)

    def command(
        self, message_type: str, *, model: type[M] | None = None
    ) -> Callable[[Handler[M]], Handler[M]]:
        """Register the decorated coroutine function as the handler of ``message_type``.

        Args:
            message_type: Command or compensation type, e.g. ``inventory.reserve``.
            model: Payload model; default the one in :data:`contracts.MESSAGES`.
        """

        def decorate(handler: Handler[M]) -> Handler[M]:
            self.register(message_type, handler, model=model)
            return handler

        return decorate

    def register(
        self, message_type: str, handler: Handler[M], *, model: type[M] | None = None
    ) -> None:
        """Register ``handler`` for ``message_type`` (see :meth:`command`).

        Raises:
            ConfigError: the type already has a handler, no model is known for it, or the
                participant is already open.
        """
        if self._state is not State.UNOPENED:
            raise ConfigError("register handlers before the participant is opened")
        if message_type in self._handlers:
            raise ConfigError(f"{message_type!r} already has a handler in {self.name!r}")
        resolved: type[BaseModel] | None = model or MESSAGES.get(message_type)
        if resolved is None:
            raise ConfigError(f"no model for {message_type!r}: pass model=")
        self._handlers[message_type] = Registration(message_type, resolved, handler)

    # -- lifecycle ----------------------------------------------------------------------

    async def _open(self) -> None:
        if self._state is not State.UNOPENED:
            raise ConfigError(f"participant {self.name!r} is {self._state.value}; open it once")
        if not self._handlers:
            raise ConfigError(f"participant {self.name!r} has no handlers")
        cfg = self.config
        if self._engine is not None and cfg.create_tables:
            await _db.create_participant_tables(self._engine)
        if self._engine is not None:
            self._inbox_retention = await inbox_retention(
                cfg.bootstrap_servers, cfg.commands_topic, cfg.inbox_retention, owner=self.name
            )
        try:
            if cfg.mode is Mode.SIMPLE:
                self._producer = idempotent_producer(cfg.bootstrap_servers)
                with translate_kafka_errors("start the reply producer"):
                    await self._producer.start()
                self._consumer = committed_consumer(
                    cfg.bootstrap_servers, group_id=cfg.effective_group_id
                )
                with translate_kafka_errors("start the command consumer"):
                    await self._consumer.start()
                    self._consumer.subscribe(
                        topics=[cfg.commands_topic],
                        listener=RebalanceHooks(_nothing, self._on_revoked),
                    )
            else:
                assert self._engine is not None
                self._partitions = len(
                    await topic_partitions(cfg.bootstrap_servers, [cfg.commands_topic])
                )
                self._owned = PartitionConsumer(
                    self._engine,
                    bootstrap_servers=cfg.bootstrap_servers,
                    topic=cfg.commands_topic,
                    group_id=cfg.effective_group_id,
                    max_batch=cfg.max_batch,
                    on_assignment=self._follow,
                )
                await self._owned.start()
        except BaseException:
            await self._close_clients()
            self._state = State.CLOSED
            raise
        self._state = State.RUNNING

    async def _close(self, exc: BaseException | None) -> None:
        self.stop()
        await self._idle.wait()
        await self._close_clients()
        self._state = State.CLOSED

    def stop(self) -> None:
        """Ask :meth:`run` to return after the batch in progress (graceful)."""
        if self._state is State.RUNNING:
            self._state = State.DRAINING
        self._stop.set()

    async def run(self) -> None:
        """Handle commands until :meth:`stop` (publishing the outbox meanwhile).

        Raises:
            ConfigError: the participant is not open, or already running.
            saga.errors.SagaError: a non-retriable failure (e.g. the publisher was fenced).
        """
        if self._state is not State.RUNNING:
            raise ConfigError(f"participant {self.name!r} is {self._state.value}, not running")
        if not self._idle.is_set():
            raise ConfigError(f"participant {self.name!r} is already running")
        self._idle.clear()
        try:
            async with self._open_relays(), self._pruning():
                await self._loop()
                await self._commit_lag_offsets()
        finally:
            self._idle.set()
        if self._relay_failure is not None:
            raise self._relay_failure

    @property
    def relays(self) -> RelayPool | None:
        """Transactional mode, while :meth:`run` runs: the relays of the owned partitions."""
        return self._relays

    @property
    def partitions(self) -> int:
        """Transactional mode, once open: partitions of the commands topic."""
        return self._partitions

    async def request_start(
        self,
        conn: AsyncConnection,
        saga_type: str,
        saga_input: dict[str, Any],
        **options: Any,
    ) -> StartRequest:
        """Start a saga when ``conn``'s transaction commits (see :func:`request_start`).

        ``conn`` is a connection of this participant's database, inside the service's
        business transaction; ``options`` are those of :func:`request_start` (``key``,
        ``idempotency_key``, ``version``, ``correlation_id``, ``saga_id``).

        Raises:
            ConfigError: The participant is not open in transactional mode (only its
                relays publish the service's outbox).
        """
        if self._state is not State.RUNNING or self._partitions < 1:
            raise ConfigError(
                f"participant {self.name!r}: request_start needs the participant open in"
                " transactional mode (async with participant: ...)"
            )
        return await request_start(
            conn,
            topics=self.config.topics,
            service=self.name,
            partitions=self._partitions,
            saga_type=saga_type,
            saga_input=saga_input,
            **options,
        )

    @property
    def joined(self) -> bool:
        """Whether the consumer group assigned this replica its partitions at least once."""
        if self._owned is not None:
            return self._owned.rebalances > 0
        return self._consumer is not None and bool(self._consumer.assignment())

    @property
    def owned(self) -> Mapping[int, int]:
        """Transactional mode: ``partition -> epoch`` of the partitions owned now."""
        return self._owned.epochs if self._owned is not None else {}

    @contextlib.asynccontextmanager
    async def _open_relays(self) -> AsyncIterator[None]:
        if self._owned is None:
            yield
            return
        assert self._engine is not None
        cfg = self.config
        pool = RelayPool(
            self._engine,
            cfg.bootstrap_servers,
            cfg.topics,
            cfg.commands_topic,
            cfg.relay,
            on_failure=self._relay_failed,
        )
        async with pool:
            self._relays = pool
            pool.follow(self._owned.assignment)
            try:
                yield
            finally:
                self._relays = None

    @property
    def inbox_retention(self) -> timedelta | None:
        """With an engine, once open: how long inbox ids are kept (``None``: forever)."""
        return self._inbox_retention

    @property
    def inbox_pruner(self) -> InboxPruner | None:
        """With an engine, while :meth:`run` runs: the loop that deletes old inbox ids."""
        return self._pruner

    @contextlib.asynccontextmanager
    async def _pruning(self) -> AsyncIterator[None]:
        engine = self._engine
        if engine is None:
            yield
            return
        cfg = self.config

        async def prune(older_than: datetime, limit: int) -> int:
            return await _db.prune_inbox(engine, older_than, limit)

        # Every replica (and every participant sharing the database) prunes the one
        # inbox: that is harmless, a delete of ids deleted already deletes nothing.
        pruner = InboxPruner(
            prune,
            self._inbox_retention,
            interval=cfg.inbox_prune_interval,
            limit=cfg.inbox_prune_limit,
            owner=self.name,
        )
        task = asyncio.create_task(pruner.run(), name=f"saga-{self.name}-inbox-pruner")
        self._pruner = pruner
        try:
            yield
        finally:
            self._pruner = None
            pruner.stop()
            try:
                await task
            finally:
                task.cancel()  # only if this task was cancelled while waiting for it

    def _follow(self, partitions: frozenset[int]) -> None:
        if self._relays is not None:
            self._relays.follow(partitions)

    def _relay_failed(self, exc: BaseException) -> None:
        log.error("%s: a relay failed for good; stopping: %s", self.name, exc)
        if self._relay_failure is None:
            self._relay_failure = exc
        self.stop()

    async def _close_clients(self) -> None:
        consumer, producer, owned = self._consumer, self._producer, self._owned
        self._consumer = self._producer = self._owned = None
        try:
            if owned is not None:
                await owned.stop()
            if consumer is not None:
                with translate_kafka_errors("stop the command consumer"):
                    await consumer.stop()
        finally:
            if producer is not None:
                with translate_kafka_errors("stop the reply producer"):
                    await producer.stop()

    # -- the loop -----------------------------------------------------------------------

    async def _loop(self) -> None:
        cfg = self.config
        while not self._stop.is_set():
            try:
                if self._owned is not None:
                    await self._transactional_round()
                else:
                    await self._simple_round()
            except (StoreError, TransportError) as exc:
                if not exc.retriable:
                    raise
                log.warning("%s: batch failed, retrying: %s", self.name, exc)
                await self._pause(cfg.retry_backoff_ms / 1000)

    async def _transactional_round(self) -> None:
        owned = self._owned
        assert owned is not None
        polled = await owned.poll(self.config.poll_timeout_ms)
        if not polled:
            return
        await owned.handle(polled, self._process_batch)

    async def _simple_round(self) -> None:
        cfg = self.config
        with translate_kafka_errors("poll commands"):
            fetched = await self._consumer.getmany(
                timeout_ms=cfg.poll_timeout_ms, max_records=cfg.max_batch
            )
        batch = {tp.partition: list(rs) for tp, rs in fetched.items() if rs}
        if not batch:
            return
        async with self._batch_lock:
            try:
                await self._process_batch(batch)
            except BaseException:
                self._rewind(batch)
                raise

    async def _pause(self, seconds: float) -> None:
        with suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    def _rewind(self, batch: Mapping[int, Sequence[Any]]) -> None:
        assignment = self._consumer.assignment()
        for partition, records in batch.items():
            tp = topic_partition(self.config.commands_topic, partition)
            if records and tp in assignment:
                self._consumer.seek(tp, records[0].offset)

    async def _on_revoked(self, _revoked: set[Any]) -> None:
        # Let the batch in flight finish (and commit) before another member takes over.
        async with self._batch_lock:
            pass

    async def _process_batch(self, batch: Mapping[int, Sequence[Any]]) -> None:
        items: list[_Command | OutgoingRecord] = []
        next_offsets: dict[int, int] = {}
        for partition, records in sorted(batch.items()):
            items.extend(self._decode(record) for record in records)
            if records:
                next_offsets[partition] = records[-1].offset + 1
        if self.config.mode is Mode.TRANSACTIONAL:
            await self._process_transactional(items, next_offsets)
            self._lag_offsets.update(next_offsets)
            interval_s = self.config.lag_commit_interval_ms / 1000
            if time.monotonic() - self._lag_committed_at >= interval_s:
                await self._commit_lag_offsets()
        else:
            await self._process_simple(items)
            await self._commit_kafka_offsets(next_offsets)

    async def _commit_lag_offsets(self) -> None:
        """Commit the offsets of the batches handled since the last lag commit."""
        offsets, self._lag_offsets = self._lag_offsets, {}
        self._lag_committed_at = time.monotonic()
        if offsets:
            await self._commit_kafka_offsets(offsets)

    def _decode(self, record: Any) -> _Command | OutgoingRecord:
        try:
            envelope = Envelope.from_bytes(record.value)
        except ContractDecodeError as exc:
            return self._dead_letter(record, f"bad envelope: {exc}")
        if envelope.kind not in (MessageKind.COMMAND, MessageKind.COMPENSATION):
            return self._dead_letter(record, f"not a command: kind {envelope.kind.value!r}")
        registration = self._handlers.get(envelope.type)
        if registration is None:
            return self._dead_letter(
                record, f"unknown command type {envelope.type!r} for participant {self.name!r}"
            )
        try:
            command = registration.model.model_validate(envelope.payload)
        except ValidationError as exc:
            # A well-formed command of ours whose payload is wrong (a saga input that
            # lacks a field, say) is answered, not parked: a permanent failure reply
            # compensates the saga at once instead of letting it time out.
            reason = f"payload of {envelope.type!r}: {_describe(exc)}"
            log.warning("%s: invalid command %s: %s", self.name, envelope.message_id, reason)
            return _Command(record, envelope, registration, None, invalid=reason)
        return _Command(record, envelope, registration, command)

    def _dead_letter(self, record: Any, reason: str) -> OutgoingRecord:
        log.warning(
            "%s: poison record %s[%d]@%d to the DLQ: %s",
            self.name,
            record.topic,
            record.partition,
            record.offset,
            reason,
        )
        dead = dead_letter_record(
            record.topic,
            record.partition,
            record.offset,
            record.key,
            record.value,
            reason,
            f"participant:{self.name}",
            original_headers=tuple(record.headers or ()),
        )
        return OutgoingRecord(
            topic=self.config.topics.dlq,
            key=dead.key,
            value=dead.value,
            headers=dead.headers,
            # Derived from the record, so a batch redone after a lost commit
            # acknowledgement dead-letters it only once.
            row_id=str(dead_letter_id(record.topic, record.partition, record.offset)),
            shard=record.partition,
        )

    async def _invoke(
        self, item: _Command, conn: AsyncConnection | None, *, isolate: bool
    ) -> HandlerResult:
        ctx = CommandContext(
            envelope=item.envelope,
            participant=self.name,
            topic=item.record.topic,
            partition=item.record.partition,
            offset=item.record.offset,
            headers=tuple(item.record.headers or ()),
            connection=conn,
        )
        if conn is None:
            return await item.registration.handler(item.command, ctx)
        if not isolate:
            try:
                return await item.registration.handler(item.command, ctx)
            except Exception as exc:
                raise _Isolate from exc
        async with conn.begin_nested():  # a failing handler rolls back only its writes
            return await item.registration.handler(item.command, ctx)

    async def _handle(
        self, item: _Command, conn: AsyncConnection | None, *, isolate: bool = True
    ) -> OutgoingRecord | None:
        """Run the handler and build its reply inside the command's scope."""
        with self._scope(item.envelope, item.record):
            return await self._handle_in_scope(item, conn, isolate=isolate)

    async def _handle_in_scope(
        self, item: _Command, conn: AsyncConnection | None, *, isolate: bool
    ) -> OutgoingRecord | None:
        """Run the handler and build its reply.

        Never raises for a handler's failure, except without ``isolate`` (no savepoint
        to roll back to): then it raises :class:`_Isolate` for the batch to be redone.
        """
        body: StepSucceeded | StepFailed
        if item.invalid is not None:
            return self._reply(
                item, StepFailed(code=INVALID_COMMAND, message=item.invalid, retriable=False)
            )
        try:
            result = await self._invoke(item, conn, isolate=isolate)
        except _Isolate:
            raise
        except ParticipantError as exc:
            body = StepFailed(
                code=exc.code,
                message=exc.message,
                retriable=exc.retriable,
                retry_after_ms=exc.retry_after_ms,
            )
        except Exception as exc:
            log.exception("%s: handler of %s raised", self.name, item.envelope.type)
            body = StepFailed(
                code=HANDLER_EXCEPTION, message=f"{type(exc).__name__}: {exc}", retriable=True
            )
        else:
            if result is NO_REPLY:
                return None
            try:
                body = StepSucceeded(output=_output(result))
                return self._reply(item, body)
            except (ValueError, TypeError) as exc:
                body = StepFailed(code="handler.bad_output", message=f"{type(exc).__name__}: {exc}")
        return self._reply(item, body)

    def _reply(self, item: _Command, body: StepSucceeded | StepFailed) -> OutgoingRecord:
        envelope = reply_envelope(item.envelope, body)
        return OutgoingRecord(
            topic=self.config.topics.replies,
            key=saga_key(envelope),
            value=envelope.to_bytes(),
            headers=tuple(self._headers(tuple(item.record.headers or ()))),
            row_id=str(envelope.message_id),
            envelope=envelope,
            shard=item.record.partition,
        )

    async def _process_transactional(
        self, items: Sequence[_Command | OutgoingRecord], next_offsets: Mapping[int, int]
    ) -> None:
        """Handle a batch in one database transaction.

        The batch first runs without a savepoint per command: two round trips per
        command fewer, and most batches have no failing handler. When a handler raises
        (or the transaction fails in any way), everything is rolled back and the batch
        runs again with each handler in its own savepoint, so a failing handler undoes
        only its own writes and gets a failure reply. Running a handler again after a
        rollback is nothing new for it: a crash or a rebalance does the same.
        """
        try:
            await self._commit_batch(items, next_offsets, isolate=False)
        except PartitionFenced:
            raise
        except (_Isolate, StoreError) as exc:
            cause = exc.__cause__ if isinstance(exc, _Isolate) else exc
            log.debug("%s: batch redone with a savepoint per command: %r", self.name, cause)
            await self._commit_batch(items, next_offsets, isolate=True)

    async def _commit_batch(
        self,
        items: Sequence[_Command | OutgoingRecord],
        next_offsets: Mapping[int, int],
        *,
        isolate: bool,
    ) -> None:
        assert self._engine is not None
        cfg = self.config
        with _db.translate_db_errors(f"{self.name}: commit a batch"):
            async with self._engine.begin() as conn:
                seen = await _db.seen_message_ids(conn, _command_ids(items))
                fresh: list[str] = []
                outgoing: list[OutgoingRecord] = []
                for item in items:
                    if isinstance(item, OutgoingRecord):
                        outgoing.append(item)
                        continue
                    message_id = str(item.envelope.message_id)
                    if message_id in seen:
                        # Already handled; its reply is in the outbox already.
                        log.info("%s: duplicate command %s skipped", self.name, message_id)
                        continue
                    seen.add(message_id)
                    fresh.append(message_id)
                    reply = await self._handle(item, conn, isolate=isolate)
                    if reply is not None:
                        outgoing.append(reply)
                await _db.mark_received(conn, fresh)
                await _db.write_outbox(
                    conn, list(await self._intercept(outgoing)), owner_topic=cfg.commands_topic
                )
                assert self._owned is not None
                await self._owned.commit(conn, next_offsets)

    async def _process_simple(self, items: Sequence[_Command | OutgoingRecord]) -> None:
        seen = {i for i in _command_ids(items) if i in self._recent}
        if self._engine is not None:
            with _db.translate_db_errors(f"{self.name}: read the inbox"):
                async with self._engine.connect() as conn:
                    seen |= await _db.seen_message_ids(conn, _command_ids(items))
        handled: list[str] = []
        outgoing: list[OutgoingRecord] = []
        for item in items:
            if isinstance(item, OutgoingRecord):
                outgoing.append(item)
                continue
            message_id = str(item.envelope.message_id)
            if message_id in seen:
                log.info("%s: duplicate command %s skipped", self.name, message_id)
                continue
            seen.add(message_id)
            handled.append(message_id)
            reply = await self._handle(item, None)
            if reply is not None:
                outgoing.append(reply)
        to_send = await self._intercept(outgoing)
        with translate_kafka_errors(f"{self.name}: send replies"):
            acks = [
                await self._producer.send(
                    r.topic, value=r.value, key=r.key, headers=list(r.headers)
                )
                for r in to_send
            ]
            await asyncio.gather(*acks)
        self._remember(handled)
        if self._engine is not None and handled:
            with _db.translate_db_errors(f"{self.name}: write the inbox"):
                async with self._engine.begin() as conn:
                    await _db.mark_received_ignoring_duplicates(conn, handled)

    def _remember(self, message_ids: Iterable[str]) -> None:
        limit = self.config.dedupe_cache_size
        for message_id in message_ids:
            self._recent[message_id] = None
            self._recent.move_to_end(message_id)
        while len(self._recent) > limit:
            self._recent.popitem(last=False)

    async def _commit_kafka_offsets(self, next_offsets: Mapping[int, int]) -> None:
        """Commit the consumer group's offsets in Kafka.

        Simple mode: this is what marks the batch consumed. Transactional mode: only for
        lag monitoring; the database holds the offsets that count.
        """
        topic = self.config.commands_topic
        offsets = {topic_partition(topic, p): o for p, o in next_offsets.items()}
        consumer = self._owned.kafka if self._owned is not None else self._consumer
        try:
            with translate_kafka_errors(f"{self.name}: commit offsets"):
                await consumer.commit(offsets)
        except TransportError as exc:
            # Rebalanced away meanwhile: the new owner re-reads (and dedupes) the batch.
            log.warning("%s: offset commit failed: %s", self.name, exc)


def _command_ids(items: Iterable[_Command | OutgoingRecord]) -> list[str]:
    return [str(i.envelope.message_id) for i in items if isinstance(i, _Command)]


def _output(result: BaseModel | Mapping[str, Any] | None) -> dict[str, Any]:
    if result is None:
        return {}
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    return dict(result)


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "<payload>"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


async def _nothing(_partitions: set[Any]) -> None:
    """Simple mode: nothing to do on assignment (Kafka's offsets count there)."""
