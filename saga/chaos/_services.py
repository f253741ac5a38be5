"""The example services with fault-injecting replies (``saga chaos participants``).

Like ``services.run_services`` (one process, one database, one outbox relay for the
four services), except that every participant gets a
:class:`saga.testing.FaultInjector`, so its replies may be sent twice, late, or out
of order. Each service's injector is seeded from the spec's seed plus the service's
index, so a run is reproducible.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from contextlib import AsyncExitStack

from saga.kafka import TopicSpec, ensure_topics
from saga.participant import Participant, ParticipantConfig, outbox_publisher
from saga.store import create_engine
from saga.testing import FaultInjector, ReplyFaults
from saga.topics import Topics


async def run_faulty_services(
    *,
    database_url: str,
    bootstrap_servers: str,
    topics: Topics,
    faults: ReplyFaults,
    stop: asyncio.Event,
    names: Sequence[str] = ("inventory", "payments", "orders", "shipping"),
    partitions: int = 3,
    replication_factor: int = 1,
) -> None:
    """Run the example services with reply faults until ``stop`` is set.

    Args:
        database_url: The services' database (not the coordinator's).
        bootstrap_servers: Kafka bootstrap servers.
        topics: Topic names of the deployment.
        faults: The faults every participant injects into its replies.
        stop: Set it to stop gracefully.
        names: Which services to run.
        partitions: Partitions of topics created when missing.
        replication_factor: Replication factor of topics created when missing.
    """
    from services._runner import SERVICES, create_service_tables

    unknown = sorted(set(names) - set(SERVICES))
    if unknown:
        raise ValueError(f"unknown services {unknown}; choose from {sorted(SERVICES)}")
    engine = create_engine(database_url)
    try:
        await create_service_tables(engine)
        await ensure_topics(
            bootstrap_servers,
            [
                TopicSpec(name=t, partitions=partitions, replication_factor=replication_factor)
                for t in (topics.replies, topics.dlq, *(topics.commands(n) for n in names))
            ],
        )
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(
                outbox_publisher(
                    engine, bootstrap_servers, topics, relay_id=f"{topics.prefix}services.relay"
                )
            )
            participants = []
            for index, name in enumerate(names):
                injector = FaultInjector(dataclasses.replace(faults, seed=faults.seed + index))
                participant = Participant(
                    ParticipantConfig(
                        name=name,
                        bootstrap_servers=bootstrap_servers,
                        topics=topics,
                        publish_outbox=False,
                        create_tables=False,
                    ),
                    engine,
                    interceptor=injector,
                )
                participants.append(await stack.enter_async_context(SERVICES[name](participant)))
            async with asyncio.TaskGroup() as tg:
                for p in participants:
                    tg.create_task(p.run(), name=f"participant:{p.name}")
                await stop.wait()
                for p in participants:
                    p.stop()
    finally:
        await engine.dispose()
