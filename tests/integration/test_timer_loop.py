"""The timer loop sleeps until timers fall due, woken by the commits that set them.

On both backends, against a real database (the loop writes timer messages to the
outbox; no Kafka is needed).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from saga.store import SqlStore, TimerWrite, upgrade
from saga.timers import TimerService
from saga.topics import Topics


@pytest.fixture
async def store(db_engine: AsyncEngine) -> SqlStore:
    await upgrade(db_engine)
    return SqlStore(db_engine)


async def set_timer(store: SqlStore, due_at: datetime) -> None:
    async with store.transaction() as tx:
        await tx.set_timers(
            [
                TimerWrite(
                    saga_id=str(uuid4()), kind="step_timeout", step="s", attempt=1, due_at=due_at
                )
            ]
        )


async def running(service: TimerService) -> asyncio.Task[None]:
    await service.__aenter__()
    task = asyncio.create_task(service.run())
    await asyncio.sleep(0.3)  # its first look found no timer
    return task


async def until_fired(service: TimerService, within_s: float) -> datetime:
    async with asyncio.timeout(within_s):
        while not service.fired:  # noqa: ASYNC110 - the loop's own counter is the point
            await asyncio.sleep(0.02)
    return datetime.now(UTC)


async def stopped(service: TimerService, task: asyncio.Task[None]) -> None:
    service.stop()
    async with asyncio.timeout(5):  # the sleep ends at once, however long it was
        await task
    await service.__aexit__(None, None, None)


@pytest.mark.timeout(60)
async def test_a_timer_set_through_the_store_wakes_the_loop_at_its_due_time(
    store: SqlStore,
) -> None:
    # With nothing due, the loop would sleep 30 s: only the commit can wake it in time.
    service = TimerService(store, Topics(), partitions=1, max_interval=timedelta(seconds=30))
    task = await running(service)
    looks = service.looks
    due = datetime.now(UTC) + timedelta(milliseconds=400)
    await set_timer(store, due)
    fired_at = await until_fired(service, within_s=10)
    assert fired_at >= due, "not before its time"
    assert service.looks - looks <= 3, "woken by the commit, then at the due time"
    await stopped(service, task)


@pytest.mark.timeout(60)
async def test_timers_set_elsewhere_are_found_by_a_look_every_max_interval(
    store: SqlStore, db_engine: AsyncEngine
) -> None:
    service = TimerService(store, Topics(), partitions=1, max_interval=timedelta(milliseconds=500))
    task = await running(service)
    looks = service.looks
    await asyncio.sleep(1.5)
    # Idle, it looks about once per max_interval, not once per interval (100 ms).
    assert 1 <= service.looks - looks <= 6
    other_process = SqlStore(db_engine)  # its commits do not reach this loop
    await set_timer(other_process, datetime.now(UTC))
    await until_fired(service, within_s=10)
    await stopped(service, task)


def test_max_interval_must_not_be_shorter_than_interval(store: SqlStore) -> None:
    with pytest.raises(ValueError, match="max_interval"):
        TimerService(
            store,
            Topics(),
            partitions=1,
            interval=timedelta(seconds=1),
            max_interval=timedelta(milliseconds=500),
        )
