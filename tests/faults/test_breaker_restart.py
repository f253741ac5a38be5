"""A coordinator restart must release commands an open circuit breaker deferred.

The breaker lives in memory, the deferred command in the saga state. Found by the chaos
run: a coordinator killed while a participant's breaker was open left every saga with
a deferred command ``running`` forever, because the new process's breakers start
closed and so never "released" anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from _scripted import Reply, ScriptedParticipants, fast_runtime_config

from contracts import Envelope
from saga.coordinator import (
    BreakerPolicy,
    BreakerState,
    CoordinatorRuntime,
    ReportedBreaker,
    RuntimeConfig,
    breaker_reports,
    start_saga,
)
from saga.definition import RetryPolicy, SagaBuilder, compensatable, pivot
from saga.store import SqlStore, create_engine
from saga.topics import Topics

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]

FLAKY = (
    SagaBuilder("flaky", version=1)
    .add(
        compensatable(
            "hold",
            participant="holder",
            command="hold.do",
            compensation="hold.undo",
            retry=RetryPolicy(max_attempts=5, initial_delay_ms=50, max_delay_ms=50, jitter=0.0),
            timeout_ms=300,
        ),
        pivot("finish", participant="finisher", command="finish.do", timeout_ms=5_000),
    )
    .build()
)


def _config(url: str, bootstrap: str, topics: Topics, breaker: BreakerPolicy) -> RuntimeConfig:
    return fast_runtime_config(url, bootstrap, topics, partitions=1, breaker=breaker)


async def _status(runtime: CoordinatorRuntime, saga_id: str, want: str, limit_s: float) -> str:
    loop = asyncio.get_running_loop()
    end = loop.time() + limit_s
    status = "?"
    while loop.time() < end:
        row = await runtime.store.get_saga(saga_id)
        assert row is not None
        status = row.status
        if status == want:
            break
        await asyncio.sleep(0.05)
    return status


async def _deferred(runtime: CoordinatorRuntime, saga_id: str, limit_s: float) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + limit_s
    while loop.time() < end:
        trail = await runtime.store.audit_trail(saga_id)
        if any(r.kind == "command.deferred" for r in trail):
            return True
        await asyncio.sleep(0.05)
    return False


async def _reports_until(
    runtime: CoordinatorRuntime,
    done: Callable[[list[ReportedBreaker]], bool],
    limit_s: float,
) -> list[ReportedBreaker]:
    loop = asyncio.get_running_loop()
    end = loop.time() + limit_s
    reports = await breaker_reports(runtime.store)
    while not done(reports) and loop.time() < end:
        await asyncio.sleep(0.05)
        reports = await breaker_reports(runtime.store)
    return reports


def _silent_first(env: Envelope) -> Reply | None:
    return None if env.attempt == 1 else Reply()


async def test_restarted_coordinator_releases_commands_deferred_by_an_open_breaker(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    topics = Topics(prefix=topic_prefix)
    # One timeout opens the breaker for a long time: the retry is deferred.
    trigger_happy = BreakerPolicy(min_calls=1, failure_ratio=0.5, cool_down=timedelta(hours=1))
    script = {"hold.do": _silent_first}
    async with ScriptedParticipants(kafka_bootstrap, topics, ["holder", "finisher"], script):
        config = _config(database_url, kafka_bootstrap, topics, trigger_happy)
        async with CoordinatorRuntime(config, [FLAKY]) as first:
            task = asyncio.create_task(first.run())
            started = await start_saga(
                first.store, first.definitions, topics, "flaky", {}, now=datetime.now(UTC)
            )
            saga_id = str(started.saga_id)
            assert await _deferred(first, saga_id, 30), "the breaker never deferred the retry"
            # The open breaker is in the database for the console, under this coordinator.
            member = first.coordinator.consumer.member if first.coordinator else "?"
            reports = await _reports_until(first, lambda rs: bool(rs), 10)
            assert [(r.member, r.report.participant, r.report.state) for r in reports] == [
                (member, "holder", BreakerState.OPEN)
            ]
            assert reports[0].report.failures == reports[0].report.calls == 1
            first.stop()
            await asyncio.wait_for(task, 30)
        # Read through an engine of the test's own: the runtime's is disposed now, and a
        # query on it would open a connection nobody closes.
        engine = create_engine(database_url)
        try:
            left = await breaker_reports(SqlStore(engine))
        finally:
            await engine.dispose()
        assert left == [], "a coordinator that leaves forgets its reports"

        # A new process: its breakers start closed, so the deferred retry must go out.
        config = _config(database_url, kafka_bootstrap, topics, BreakerPolicy())
        async with CoordinatorRuntime(config, [FLAKY]) as second:
            task = asyncio.create_task(second.run())
            try:
                assert await _status(second, saga_id, "completed", 40) == "completed"
                closed = await _reports_until(second, lambda rs: len(rs) == 2, 10)
                assert [(r.report.participant, r.report.state) for r in closed] == [
                    ("finisher", BreakerState.CLOSED),
                    ("holder", BreakerState.CLOSED),
                ]
            finally:
                second.stop()
                await asyncio.wait_for(task, 30)
