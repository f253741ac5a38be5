"""Run the example services: one of them, or all four in one process on one database."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack

from sqlalchemy.ext.asyncio import AsyncEngine

from saga.errors import SagaError
from saga.health import HealthServer
from saga.hints import explain
from saga.kafka import TopicSpec, ensure_topics
from saga.lifecycle import State, cancel_and_wait
from saga.participant import (
    Participant,
    ParticipantConfig,
    ReplyInterceptor,
    create_participant_tables,
)
from saga.process import Register, run_until_signal
from saga.relay import RelayConfig
from saga.retry import Startup
from saga.settings import Settings
from saga.store import create_engine, lock_schema
from saga.telemetry import Telemetry, setup
from services import inventory, orders, payments, shipping
from services._base import metadata

SERVICES: dict[str, Callable[[Participant], Participant]] = {
    inventory.NAME: inventory.register,
    orders.NAME: orders.register,
    payments.NAME: payments.register,
    shipping.NAME: shipping.register,
}
"""Service name -> function registering its handlers on a participant."""


async def create_service_tables(engine: AsyncEngine) -> None:
    """Create the services' tables and the participant tables (if missing); seed stock."""
    await create_participant_tables(engine)
    async with engine.begin() as conn:
        await lock_schema(conn)  # replicas of the services start at once
        await conn.run_sync(metadata.create_all)
        await inventory.seed(conn)


def build(
    name: str,
    settings: Settings,
    engine: AsyncEngine,
    *,
    telemetry: Telemetry | None = None,
    interceptor: ReplyInterceptor | None = None,
    relay: RelayConfig | None = None,
) -> Participant:
    """Build the transactional participant of one service (traced when ``telemetry``)."""
    hooks = telemetry.participant_hooks() if telemetry is not None else {}
    participant = Participant(
        ParticipantConfig(
            name=name,
            bootstrap_servers=settings.kafka_bootstrap_servers,
            topics=settings.topics,
            create_tables=False,
            relay=relay or settings.relay_config(),
        ),
        engine,
        interceptor=interceptor,
        **hooks,
    )
    return SERVICES[name](participant)


async def run_services(
    settings: Settings,
    names: Sequence[str] = tuple(SERVICES),
    *,
    stop: asyncio.Event | None = None,
    engine: AsyncEngine | None = None,
    telemetry: Telemetry | None = None,
    interceptors: Callable[[int, str], ReplyInterceptor] | None = None,
    relay: RelayConfig | None = None,
    ready: asyncio.Event | None = None,
) -> None:
    """Run some services in this process until ``stop`` is set (or the task is cancelled).

    They share one database; each publishes its own replies (the relays of the commands
    partitions it owns), so any number of such processes can run side by side.

    Args:
        settings: Database URL, Kafka bootstrap servers and topic prefix.
        names: Which services to run.
        stop: Set it to stop gracefully (each participant finishes its batch).
        engine: Use this engine instead of one made from ``settings.database_url``.
        telemetry: Trace each command in a ``process <type>`` span and carry the trace
            context into the reply (see :mod:`saga.telemetry`).
        interceptors: ``(index, name) -> interceptor`` of each service's replies (fault
            injection: see :mod:`saga.testing`).
        relay: Options of the services' relays (default: the settings' replication).
        ready: Set once every participant has joined its consumer group and owns
            partitions of its commands topic (commands sent from then on are handled
            without waiting for a rebalance).
    """
    unknown = sorted(set(names) - set(SERVICES))
    if unknown:
        raise ValueError(f"unknown services {unknown}; choose from {sorted(SERVICES)}")
    stop = stop or asyncio.Event()
    topics = settings.topics
    own_engine = engine is None
    engine = engine or create_engine(settings.database_url)
    specs = [
        TopicSpec(
            name=t, partitions=settings.partitions, replication_factor=settings.replication_factor
        )
        for t in (topics.replies, topics.dlq, *(topics.commands(n) for n in names))
    ]

    async def prepare() -> None:
        await create_service_tables(engine)
        await ensure_topics(settings.kafka_bootstrap_servers, specs)

    participants: list[Participant] = []
    startup = Startup("services start-up", stop)

    def readiness() -> str | None:
        if startup.waiting_for is not None:
            return f"starting: {startup.waiting_for}"
        return _not_ready(participants) if participants else "starting"

    try:
        async with AsyncExitStack() as stack:
            # Health first: while the services wait out an outage, /healthz answers
            # and /readyz says what they wait for.
            await stack.enter_async_context(
                HealthServer(
                    settings.health_host, settings.health_port, readiness, telemetry=telemetry
                )
            )
            await startup(prepare)
            participants += [
                build(
                    n,
                    settings,
                    engine,
                    telemetry=telemetry,
                    interceptor=interceptors(i, n) if interceptors is not None else None,
                    relay=relay,
                )
                for i, n in enumerate(names)
            ]
            # A stop while they open (waiting out an outage) ends their wait too.
            forward = asyncio.create_task(_stop_all_on(stop, participants))
            stack.push_async_callback(cancel_and_wait, forward)
            # Joined at once: each join waits for its group to rebalance (seconds).
            await asyncio.gather(*(stack.enter_async_context(p) for p in participants))
            async with asyncio.TaskGroup() as tg:
                for p in participants:
                    tg.create_task(p.run(), name=f"participant:{p.name}")
                if ready is not None:
                    watch = tg.create_task(_signal_ready(participants, ready, stop))
                await stop.wait()  # then _stop_all_on stops each participant
                if ready is not None:
                    watch.cancel()
    finally:
        if own_engine:
            await engine.dispose()


async def _stop_all_on(stop: asyncio.Event, participants: Sequence[Participant]) -> None:
    """Once ``stop`` is set, stop every participant (opening, or running)."""
    await stop.wait()
    for p in participants:
        p.stop()


async def _signal_ready(
    participants: Sequence[Participant], ready: asyncio.Event, stop: asyncio.Event
) -> None:
    """Set ``ready`` once every participant consumes and owns partitions."""
    while not stop.is_set():
        if _not_ready(participants) is None and all(p.owned for p in participants):
            ready.set()
            return
        await asyncio.sleep(0.05)


def _not_ready(participants: Sequence[Participant]) -> str | None:
    """Why the services are not ready (``None``: every participant consumes)."""
    for p in participants:
        if p.state is State.UNOPENED:
            waits = f": {p.waiting_for}" if p.waiting_for else ""
            return f"participant {p.name} is starting{waits}"
        if p.state is not State.RUNNING:
            return f"participant {p.name} is {p.state.value}"
        if not p.joined:
            return f"participant {p.name} is joining its consumer group"
    return None


async def run_all(
    settings: Settings, *, stop: asyncio.Event | None = None, **kwargs: object
) -> None:
    """Run orders, inventory, payments and shipping in one process (the demo uses it).

    See :func:`run_services` for the arguments.
    """
    await run_services(settings, tuple(SERVICES), stop=stop, **kwargs)  # type: ignore[arg-type]


def main(names: Sequence[str]) -> None:
    """Entry point of ``python -m services.<name>``: run until SIGINT/SIGTERM."""
    settings = Settings()

    async def go(on_stop: Register) -> None:
        stop = asyncio.Event()
        on_stop(stop.set)
        telemetry = setup(settings, service_name="services")
        try:
            await run_services(settings, names, stop=stop, telemetry=telemetry)
        finally:
            telemetry.close()

    try:
        run_until_signal(go)
    except SagaError as exc:
        sys.exit(f"Error: {explain(exc)}")
