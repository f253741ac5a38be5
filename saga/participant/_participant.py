"""The participant: consume commands, call handlers, reply exactly once (or at least once).

Theory of operation
-------------------
A participant consumes ``<prefix><name>.commands`` (read_committed) in batches, one
batch at a time, until :meth:`Participant.stop`. The pieces, each in its own module:

- :mod:`~saga.participant._decoding`: each record becomes a command for its
  registered handler, or (poison) a dead letter for the DLQ topic.
- :mod:`~saga.participant._handling`: new commands run their handlers and get one
  reply each; commands seen before are skipped (both modes share this).
- :mod:`~saga.participant._transactional` (exactly once) and
  :mod:`~saga.participant._simple` (at least once): how a batch is made durable: one
  database transaction with inbox, outbox and offsets, published by relays; or an
  idempotent producer followed by Kafka's offset commit. What both modes are handed
  (options, decoder, runner, the one offset-commit path) is in
  :mod:`~saga.participant._mode`.
- :mod:`~saga.participant._pruning`: with a database, old inbox ids are deleted while
  the participant runs.

Start-up waits out a database or Kafka outage (retried with back-off until
:meth:`Participant.stop`). A batch that fails on a retriable database or Kafka error
is retried after ``retry_backoff_ms``; a relay that fails for good ends
:meth:`Participant.run` with its error.

Compensation handlers must accept "never happened": a compensation can arrive for a
command that timed out before it ran, or never arrived. Undo what exists and succeed
when there is nothing to undo.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from contracts import MESSAGES, StartRequest
from saga.errors import ConfigError, StoreError, TransportError
from saga.inbox import InboxPruner, inbox_retention
from saga.lifecycle import AsyncResource, State, wait_at_most
from saga.participant import _db
from saga.participant._config import Mode, ParticipantConfig
from saga.participant._context import Handler
from saga.participant._decoding import Decoded, Registration, decode
from saga.participant._handling import CommandRunner, no_interception
from saga.participant._headers import (
    CommandScope,
    HeadersHook,
    no_scope,
    propagate_trace_headers,
)
from saga.participant._initiator import request_start
from saga.participant._mode import ModeParts
from saga.participant._pruning import inbox_pruning
from saga.participant._records import ReplyInterceptor
from saga.participant._simple import SimpleMode
from saga.participant._transactional import TransactionalMode
from saga.relay import RelayPool
from saga.retry import Startup

log = logging.getLogger("saga.participant")

M = TypeVar("M", bound=BaseModel)


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
        runner = CommandRunner(
            participant=config.name,
            replies_topic=config.topics.replies,
            headers=headers,
            scope=scope,
            interceptor=interceptor or no_interception,
        )
        parts = ModeParts(config, runner, self._decode)
        self._mode: SimpleMode | TransactionalMode
        if config.mode is Mode.SIMPLE:
            self._mode = SimpleMode(parts, engine)
        elif engine is not None:
            self._mode = TransactionalMode(parts, engine, on_relay_failure=self._relay_failed)
        else:
            raise ConfigError(f"participant {config.name!r}: transactional mode needs an engine")
        self.config = config
        self._engine = engine
        self._handlers: dict[str, Registration] = {}
        self._state = State.UNOPENED
        self._relay_failure: BaseException | None = None
        self._inbox_retention: timedelta | None = None
        self._pruner: InboxPruner | None = None
        self._stop = asyncio.Event()
        self._startup = Startup(f"participant {config.name} start-up", self._stop, log)
        self._idle = asyncio.Event()
        self._idle.set()

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
    def waiting_for(self) -> str | None:
        """While opening waits out an outage: what is unavailable, and why."""
        return self._startup.waiting_for

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

    def _decode(self, record: Any) -> Decoded:
        return decode(
            record, self._handlers, participant=self.name, dlq_topic=self.config.topics.dlq
        )

    # -- lifecycle ----------------------------------------------------------------------

    async def _open(self) -> None:
        if self._state is not State.UNOPENED:
            raise ConfigError(f"participant {self.name!r} is {self._state.value}; open it once")
        if not self._handlers:
            raise ConfigError(f"participant {self.name!r} has no handlers")
        try:
            # Started during an outage (a replica restarted while its database or
            # broker is down), it waits for them instead of exiting; stop() gives up.
            await self._startup(self._start)
        except BaseException:
            self._state = State.CLOSED
            raise
        self._state = State.RUNNING

    async def _start(self) -> None:
        """One attempt at start-up: tables, inbox retention, consumer (nothing left open)."""
        cfg = self.config
        if self._engine is not None and cfg.create_tables:
            await _db.create_participant_tables(self._engine)
        if self._engine is not None:
            self._inbox_retention = await inbox_retention(
                cfg.bootstrap_servers, cfg.commands_topic, cfg.inbox_retention, owner=self.name
            )
        try:
            await self._mode.start()
        except BaseException:
            await self._mode.stop()
            raise

    async def _close(self, exc: BaseException | None) -> None:
        self.stop()
        await self._idle.wait()
        await self._mode.stop()
        self._state = State.CLOSED

    def stop(self) -> None:
        """Ask :meth:`run` to return after the batch in progress (graceful).

        Called while ``async with`` is still waiting out an outage, it ends that wait:
        opening raises the last database or Kafka error.
        """
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
            async with (
                self._mode.running(),
                inbox_pruning(self._engine, self._inbox_retention, self.config) as pruner,
            ):
                self._pruner = pruner
                try:
                    await self._loop()
                finally:
                    self._pruner = None
        finally:
            self._idle.set()
        if self._relay_failure is not None:
            raise self._relay_failure

    @property
    def relays(self) -> RelayPool | None:
        """Transactional mode, while :meth:`run` runs: the relays of the owned partitions."""
        return self._mode.relays if isinstance(self._mode, TransactionalMode) else None

    @property
    def partitions(self) -> int:
        """Transactional mode, once open: partitions of the commands topic."""
        return self._mode.partitions if isinstance(self._mode, TransactionalMode) else 0

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
        if self._state is not State.RUNNING or self.partitions < 1:
            raise ConfigError(
                f"participant {self.name!r}: request_start needs the participant open in"
                " transactional mode (async with participant: ...)"
            )
        return await request_start(
            conn,
            topics=self.config.topics,
            service=self.name,
            partitions=self.partitions,
            saga_type=saga_type,
            saga_input=saga_input,
            **options,
        )

    @property
    def joined(self) -> bool:
        """Whether the consumer group assigned this replica its partitions at least once."""
        return self._mode.joined

    @property
    def owned(self) -> Mapping[int, int]:
        """Transactional mode: ``partition -> epoch`` of the partitions owned now."""
        return self._mode.epochs if isinstance(self._mode, TransactionalMode) else {}

    @property
    def inbox_retention(self) -> timedelta | None:
        """With an engine, once open: how long inbox ids are kept (``None``: forever)."""
        return self._inbox_retention

    @property
    def inbox_pruner(self) -> InboxPruner | None:
        """With an engine, while :meth:`run` runs: the loop that deletes old inbox ids."""
        return self._pruner

    def _relay_failed(self, exc: BaseException) -> None:
        log.error("%s: a relay failed for good; stopping: %s", self.name, exc)
        if self._relay_failure is None:
            self._relay_failure = exc
        self.stop()

    # -- the loop -----------------------------------------------------------------------

    async def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                await self._mode.round()
            except (StoreError, TransportError) as exc:
                if not exc.retriable:
                    raise
                log.warning("%s: batch failed, retrying: %s", self.name, exc)
                await self._pause(self.config.retry_backoff_ms / 1000)

    async def _pause(self, seconds: float) -> None:
        await wait_at_most(self._stop, seconds)
