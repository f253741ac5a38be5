"""One coordinator process: coordinator loop, timers, inbox pruning and (by default) the relay.

``saga coordinator`` builds this from :class:`saga.cli.Settings`; tests and the demo
build it directly. Everything runs under one ``asyncio.TaskGroup``; :meth:`stop`
(SIGTERM/SIGINT in the CLI) lets each loop finish its batch, commit and close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from saga.coordinator._coordinator import (
    Coordinator,
    CoordinatorConfig,
    register_replies_partitions,
)
from saga.coordinator._definitions import DefinitionCache
from saga.coordinator._starter import Starter, trigger_topics
from saga.definition import SagaDefinition
from saga.inbox import (
    DEFAULT_PRUNE_INTERVAL,
    DEFAULT_PRUNE_LIMIT,
    InboxPruner,
    check_prune_settings,
    inbox_retention,
)
from saga.kafka import deployment_topics, ensure_topics
from saga.lifecycle import AsyncResource, State
from saga.relay import RelayConfig, RelayPool
from saga.retry import Startup
from saga.store import SqlStore, create_engine, upgrade
from saga.telemetry import Telemetry, runtime_probe
from saga.timers import TimerService
from saga.topics import Topics

log = logging.getLogger("saga.runtime")


@dataclass(frozen=True, kw_only=True)
class RuntimeConfig:
    """What one coordinator process runs and where."""

    database_url: str
    """SQLAlchemy URL of the saga store."""
    bootstrap_servers: str
    """Kafka bootstrap servers."""
    topics: Topics = field(default_factory=Topics)
    """Topic names."""
    coordinator: CoordinatorConfig = field(default_factory=CoordinatorConfig)
    """Coordinator loop settings."""
    relay: RelayConfig | None = field(default_factory=RelayConfig)
    """Settings of the relays of the owned partitions (one per partition, following
    ownership); ``None`` when the relays run as their own processes (``saga relay``)."""
    run_timers: bool = True
    """Whether this process fires due timers."""
    run_starters: bool = True
    """Whether this process starts sagas from Kafka: the starts topic, and the topics the
    definitions' triggers watch (see :mod:`saga.coordinator._starter`)."""
    create_topics: bool = True
    """Create missing topics at start-up (replies, events, dlq, checkpoints, commands)."""
    partitions: int = 6
    """Partitions of topics created at start-up."""
    replication_factor: int = 1
    """Replication factor of topics created at start-up."""
    migrate: bool = True
    """Bring the database schema up to date at start-up."""
    inbox_retention: timedelta | None = None
    """How long inbox ids (the dedupe of replies, timers and signals) are kept.

    ``None`` (the default): as long as the replies topic keeps its records, its
    ``retention.ms`` read from the broker at start-up (7 days if it cannot be read;
    never pruned if it is ``-1``): a duplicate can only arrive while a copy of the
    message can still be read. A shorter value is accepted with a warning: duplicates
    older than that are processed again. See :mod:`saga.inbox`."""
    inbox_prune_interval: timedelta = DEFAULT_PRUNE_INTERVAL
    """How often old inbox ids are deleted."""
    inbox_prune_limit: int = DEFAULT_PRUNE_LIMIT
    """Most inbox ids deleted in one transaction (rounds go on until one deletes fewer)."""

    def __post_init__(self) -> None:
        check_prune_settings(
            self.inbox_retention, self.inbox_prune_interval, self.inbox_prune_limit
        )


class CoordinatorRuntime(AsyncResource):
    """The coordinator, its timers and its relay, started and stopped together."""

    def __init__(
        self,
        config: RuntimeConfig,
        definitions: Iterable[SagaDefinition],
        *,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.config = config
        self.telemetry = telemetry or Telemetry.disabled()
        """Traces, metrics and the gauges' probe of this process (no-op by default)."""
        self._definitions = list(definitions)
        self.engine = create_engine(config.database_url)
        self.store = SqlStore(self.engine)
        self.definitions = DefinitionCache(self.store)
        self.coordinator: Coordinator | None = None
        self.relays: RelayPool | None = None
        self.timers: TimerService | None = None
        self.starters: list[Starter] = []
        """While :meth:`run` runs: one per topic sagas are started from."""
        self.inbox: InboxPruner | None = None
        """While :meth:`run` runs: the loop that deletes old inbox ids."""
        self.inbox_retention: timedelta | None = None
        """How long inbox ids are kept, decided when the runtime opens (``None``: forever)."""
        self._failure: BaseException | None = None
        self._opening: Coordinator | Starter | None = None
        self._stop = asyncio.Event()
        self.startup = Startup("coordinator start-up", self._stop, log)
        """Opening waits out an outage; ``startup.waiting_for`` says for what."""
        self._opened = False
        self._remove_probe = self.telemetry.add_probe(
            runtime_probe(self.store, lambda: self.coordinator)
        )

    async def _open(self) -> None:
        if self._opened:
            raise RuntimeError("the runtime was opened already")
        self._opened = True
        # Started during an outage (restarted while the database or the broker is
        # down), the process waits for them instead of exiting; stop() gives up.
        await self.startup(self._start)

    async def _start(self) -> None:
        """One attempt at start-up: schema, definitions, topics, partitions, retention."""
        cfg = self.config
        if cfg.migrate:
            await upgrade(self.engine)
        await self.definitions.register(self._definitions)
        if cfg.create_topics:
            participants = sorted(
                {s.participant for d in self._definitions for s in d.steps if s.participant}
            )
            await ensure_topics(
                cfg.bootstrap_servers,
                deployment_topics(
                    cfg.topics,
                    participants,
                    partitions=cfg.partitions,
                    replication_factor=cfg.replication_factor,
                ),
            )
        # Sagas can be started as soon as the runtime is open (before run()).
        await register_replies_partitions(
            self.store,
            cfg.bootstrap_servers,
            cfg.topics,
            cfg.coordinator.group_id or cfg.topics.coordinator_group,
        )
        self.inbox_retention = await inbox_retention(
            cfg.bootstrap_servers, cfg.topics.replies, cfg.inbox_retention, owner="coordinator"
        )

    async def _close(self, exc: BaseException | None) -> None:
        self.stop()
        self._remove_probe()
        await self.engine.dispose()

    def stop(self) -> None:
        """Finish the current batches and return from :meth:`run`."""
        self._stop.set()
        for part in (self._opening, self.coordinator, self.timers, self.inbox, *self.starters):
            if part is not None:
                part.stop()

    def readiness(self) -> str | None:
        """Why the process is not ready to take work (``None``: ready; for ``/readyz``)."""
        if self._failure is not None:
            return f"a relay failed: {self._failure}"
        waiting = self.startup.waiting_for or (
            self._opening.startup.waiting_for if self._opening is not None else None
        )
        if waiting is not None:
            return f"starting: {waiting}"
        coordinator = self.coordinator
        if coordinator is None or coordinator.state is not State.RUNNING:
            return "the coordinator is not running"
        if coordinator.consumer.rebalances == 0:
            return f"joining the consumer group {coordinator.group_id}"
        starts = next((s for s in self.starters if s.topic == self.config.topics.starts), None)
        if starts is not None and starts.consumer.rebalances == 0:
            return f"joining the consumer group {starts.group_id}"
        return None

    def _relay_failed(self, exc: BaseException) -> None:
        """A relay failed for good: stop the process loudly (it can be restarted)."""
        if self._failure is None:
            self._failure = exc
        self.stop()

    async def run(self) -> None:
        """Run every part until :meth:`stop`.

        Raises:
            RuntimeError: A part ended on its own or a relay failed for good; the
                process should exit and be restarted.
        """
        cfg = self.config
        async with contextlib.AsyncExitStack() as stack:
            if cfg.relay is not None:
                self.relays = await stack.enter_async_context(
                    RelayPool(
                        self.engine,
                        cfg.bootstrap_servers,
                        cfg.topics,
                        cfg.topics.replies,
                        cfg.relay,
                        on_failure=self._relay_failed,
                    )
                )
            # stop() also ends the opening of a part that waits out an outage; the
            # part is published (self.coordinator, self.starters) once it runs.
            coordinator = Coordinator(
                self.store,
                self.definitions,
                cfg.bootstrap_servers,
                cfg.topics,
                cfg.coordinator,
                telemetry=self.telemetry,
                on_assignment=self.relays.follow if self.relays is not None else None,
            )
            self._opening = coordinator
            await stack.enter_async_context(coordinator)
            self.coordinator = coordinator
            if cfg.run_timers:
                self.timers = await stack.enter_async_context(
                    TimerService(self.store, cfg.topics, partitions=coordinator.partitions)
                )
            if cfg.run_starters:
                watched = {
                    cfg.topics.starts: [],
                    **trigger_topics(self._definitions, cfg.topics),
                }
                for topic, triggers in watched.items():
                    starter = Starter(
                        self.store,
                        self.definitions,
                        cfg.bootstrap_servers,
                        cfg.topics,
                        topic,
                        partitions=coordinator.partitions,
                        triggers=triggers,
                        telemetry=self.telemetry,
                    )
                    self._opening = starter
                    await stack.enter_async_context(starter)
                    self.starters.append(starter)
            self._opening = None
            # Every coordinator on the database prunes the one inbox: that is harmless,
            # a delete of ids another coordinator deleted already deletes nothing.
            self.inbox = InboxPruner(
                self.store.prune_inbox,
                self.inbox_retention,
                interval=cfg.inbox_prune_interval,
                limit=cfg.inbox_prune_limit,
                owner="coordinator",
            )
            async with asyncio.TaskGroup() as tg:

                def supervise(name: str, part: Awaitable[None]) -> None:
                    tg.create_task(self._supervised(name, part), name=f"saga-{name}")

                supervise("coordinator", coordinator.run())
                if self.telemetry.metrics_enabled:
                    supervise("telemetry", self.telemetry.sample_until(self._stop))
                if self.timers is not None:
                    supervise("timers", self.timers.run())
                supervise("inbox pruner", self.inbox.run())
                for starter in self.starters:
                    supervise(f"starter of {starter.topic}", starter.run())
                if self._stop.is_set():
                    self.stop()
                await self._stop.wait()
                self.stop()
        if self._failure is not None:
            raise RuntimeError(f"a relay failed: {self._failure}") from self._failure

    async def _supervised(self, name: str, part: Awaitable[None]) -> None:
        """Run one part; one that ends before :meth:`stop` fails the whole runtime.

        A task group ignores a child that ends cancelled, so a part whose own code let a
        stray ``CancelledError`` out would vanish while the others go on: a coordinator
        without its relay looks healthy and publishes nothing. Failing loudly lets the
        process exit and be restarted instead.
        """
        try:
            await part
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._stop.is_set() or (task is not None and task.cancelling()):
                raise
            raise RuntimeError(f"the {name} was cancelled from inside; stopping") from None
        if not self._stop.is_set():
            raise RuntimeError(f"the {name} ended before it was asked to stop")
