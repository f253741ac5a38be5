"""Publishing a participant's outbox: the seam between the SDK and the relay.

A transactional participant writes its replies (and dead letters) into the
``saga_outbox`` table of its database; :func:`outbox_publisher` opens the same
exactly-once relay the coordinator uses (:class:`saga.relay.Relay`) on that database
and runs it in the background while the context is open.

Run exactly one relay per database and shard: several participants sharing a database
(``services.run_all``) share one relay (``ParticipantConfig.publish_outbox=False`` on
each, and one :func:`outbox_publisher` for all).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from saga.relay import Relay, RelayConfig
from saga.topics import Topics

PublisherFactory = Callable[[], AbstractAsyncContextManager[Any]]
"""Opens something that publishes the outbox while the context is open."""


@contextlib.asynccontextmanager
async def outbox_publisher(
    engine: AsyncEngine,
    bootstrap_servers: str,
    topics: Topics,
    *,
    relay_id: str,
    shard: int = 0,
    config: RelayConfig | None = None,
) -> AsyncIterator[Relay]:
    """Publish ``engine``'s outbox (one shard) exactly once while the context is open.

    Args:
        engine: The participant's database.
        bootstrap_servers: Kafka bootstrap servers.
        topics: Topic names (the relay's checkpoint topic comes from here).
        relay_id: Transactional id of the relay (one per database and shard).
        shard: Outbox shard to publish.
        config: Further relay options; ``relay_id`` and ``shard`` override its own.
    """
    base = config or RelayConfig()
    relay_config = dataclasses.replace(base, relay_id=relay_id, shard=shard)
    async with Relay(engine, bootstrap_servers, topics, relay_config) as relay:
        relay.start()
        yield relay
