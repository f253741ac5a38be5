"""Readiness: is the database reachable, and does Kafka answer a metadata request?

Probes hit ``/readyz`` often; each real check is bounded by a short timeout and its
result reused for a few seconds, and concurrent requests share one check in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer

from saga.api._models import Check, Readiness
from saga.errors import SagaError
from saga.kafka import close_quietly, translate_kafka_errors
from saga.store import SqlStore

Probe = Callable[[], Awaitable[None]]
"""A check: returns when the dependency is fine, raises a :class:`SagaError` if not."""


async def database_ping(store: SqlStore) -> None:
    """Run one cheap query (a primary-key lookup) against the saga tables.

    Raises:
        saga.errors.StoreUnavailable: The database cannot be reached (or has no schema).
    """
    await store.get_saga(_PROBE_ID)


_PROBE_ID = "00000000-0000-0000-0000-000000000000"


async def kafka_metadata(bootstrap_servers: str) -> None:
    """Fetch cluster metadata from Kafka.

    Raises:
        saga.errors.TransportError: Kafka cannot be reached.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    try:
        with translate_kafka_errors("kafka metadata"):
            await consumer.start()
            await consumer.topics()
    finally:
        await close_quietly(consumer)


class ReadinessProbe:
    """Cached readiness of the API's dependencies.

    Args:
        probes: Name -> check; ``None`` marks a check that is not configured (skipped).
        timeout_s: Longest time one check may take.
        ttl_s: How long a result is reused.
    """

    def __init__(self, probes: dict[str, Probe | None], *, timeout_s: float, ttl_s: float) -> None:
        self._probes = probes
        self._timeout = timeout_s
        self._ttl = ttl_s
        self._lock = asyncio.Lock()
        self._result: Readiness | None = None
        self._at = 0.0

    async def check(self) -> Readiness:
        """The readiness of every dependency (cached for ``ttl_s``)."""
        async with self._lock:
            if self._result is not None and time.monotonic() - self._at < self._ttl:
                return self._result
            names = list(self._probes)
            checks = await asyncio.gather(*(self._run(self._probes[n]) for n in names))
            ready = all(c.ok for c in checks)
            self._result = Readiness(
                status="ready" if ready else "not_ready",
                checks=dict(zip(names, checks, strict=True)),
            )
            self._at = time.monotonic()
            return self._result

    async def _run(self, probe: Probe | None) -> Check:
        now = datetime.now(UTC)
        if probe is None:
            return Check(ok=True, detail="skipped: not configured", checked_at=now)
        try:
            async with asyncio.timeout(self._timeout):
                await probe()
        except TimeoutError:
            return Check(ok=False, detail=f"no answer within {self._timeout:g}s", checked_at=now)
        except SagaError as exc:
            return Check(ok=False, detail=f"{exc.code}: {exc.message}", checked_at=now)
        return Check(ok=True, checked_at=now)
