"""The example services with fault-injecting replies (``saga chaos participants``).

Exactly ``services.run_services`` (one process, one database, each service publishing
its own replies), except that every participant gets a
:class:`saga.testing.FaultInjector`, so its replies may be sent twice, late, or out
of order. Each service's injector is seeded from the spec's seed plus the service's
index, so a run is reproducible.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

from saga.settings import Settings
from saga.testing import FaultInjector, ReplyFaults
from saga.topics import Topics
from services import run_services


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
    crash_in_transaction_after: int | None = None,
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
        crash_in_transaction_after: SIGKILL the process inside a relay's N-th Kafka
            transaction (a replica that dies while its relay is mid-transaction).
    """
    settings = Settings(
        database_url=database_url,
        kafka_bootstrap_servers=bootstrap_servers,
        topic_prefix=topics.prefix,
        partitions=partitions,
        replication_factor=replication_factor,
    )
    await run_services(
        settings,
        names,
        stop=stop,
        interceptors=lambda index, _name: FaultInjector(
            dataclasses.replace(faults, seed=faults.seed + index)
        ),
        relay=settings.relay_config(crash_in_transaction_after=crash_in_transaction_after),
    )
