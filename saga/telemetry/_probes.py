"""Probes of a coordinator process: outbox backlog, relay lag, consumer lag, breakers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import func, select

from saga.store import SqlStore, translate_errors
from saga.store import tables as schema  # the one outbox table; no store query for its age
from saga.telemetry._telemetry import (
    BREAKER_STATE,
    CONSUMER_LAG,
    OUTBOX_BACKLOG,
    RELAY_LAG,
    Probe,
    Sample,
)

BREAKER_VALUES: Mapping[str, int] = {"closed": 0, "half_open": 1, "open": 2}
"""Value of the breaker gauge per breaker state."""


class _Breakers(Protocol):
    def snapshot(self, now: datetime) -> Mapping[str, object]: ...


class CoordinatorLike(Protocol):
    """What the probe reads from a running :class:`saga.coordinator.Coordinator`."""

    @property
    def breakers(self) -> _Breakers:
        """The per-participant circuit breakers."""

    async def consumer_lag(self) -> Mapping[tuple[str, int], int]:
        """Records not consumed yet per ``(topic, partition)``."""


async def outbox_samples(store: SqlStore, now: datetime) -> list[Sample]:
    """Backlog and relay lag (age of the oldest unpublished row) of the store's outbox.

    Raises:
        saga.errors.StoreError: The database cannot be read.
    """
    outbox = schema.outbox
    with translate_errors("sample the outbox"):
        async with store.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(func.count(), func.min(outbox.c.created_at)).where(
                        outbox.c.published_at.is_(None)
                    )
                )
            ).one()
    backlog, oldest = int(row[0]), row[1]
    lag = 0.0
    if isinstance(oldest, datetime):
        created = oldest if oldest.tzinfo is not None else oldest.replace(tzinfo=UTC)
        lag = max(0.0, (now - created).total_seconds())
    return [Sample(OUTBOX_BACKLOG, backlog), Sample(RELAY_LAG, lag)]


def runtime_probe(
    store: SqlStore,
    coordinator: Callable[[], CoordinatorLike | None],
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Probe:
    """A probe of a coordinator process.

    Args:
        store: The saga store (outbox backlog and relay lag).
        coordinator: Returns the running coordinator, or ``None`` (consumer lag and
            breaker states are then not sampled).
        clock: The current time.
    """

    async def probe() -> Iterable[Sample]:
        now = clock()
        samples = await outbox_samples(store, now)
        running = coordinator()
        if running is not None:
            for (topic, partition), lag in sorted((await running.consumer_lag()).items()):
                samples.append(Sample(CONSUMER_LAG, lag, {"topic": topic, "partition": partition}))
            for participant, state in running.breakers.snapshot(now).items():
                samples.append(
                    Sample(
                        BREAKER_STATE,
                        BREAKER_VALUES.get(str(state), 0),
                        {"participant": participant},
                    )
                )
        return samples

    return probe
