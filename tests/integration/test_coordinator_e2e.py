"""End to end through real Kafka: coordinator + relay + timers, scripted participants.

Every scenario runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from uuid import UUID

import pytest
from _scripted import (
    Reply,
    ScriptedParticipants,
    booking,
    fail,
    fail_first,
    fast_runtime_config,
    looping,
    ok,
    saga_in,
    silent,
)

from contracts import Envelope
from saga.coordinator import CoordinatorRuntime, RuntimeConfig, start_saga
from saga.definition import (
    RetryPolicy,
    SagaBuilder,
    SagaDefinition,
    pivot,
    retriable,
)
from saga.engine import SagaStatus
from saga.errors import ConfigError
from saga.relay import Relay
from saga.topics import Topics

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]

FAST_RETRY = RetryPolicy(max_attempts=3, initial_delay_ms=50, max_delay_ms=200, jitter=0.0)
PARTICIPANTS = ["hotels", "flights", "payments", "notifications"]


def trip(*, flight_timeout_ms: int = 5_000, deadline_ms: int | None = None) -> SagaDefinition:
    return (
        SagaBuilder("trip", version=1, deadline_ms=deadline_ms)
        .add(
            booking(
                "hotel",
                "hotels",
                input={"city": "city"},
                output={"hotel_ref": "ref"},
                timeout_ms=5_000,
            ),
            booking("flight", "flights", retry=FAST_RETRY, timeout_ms=flight_timeout_ms),
            pivot("charge", participant="payments", command="payment.charge", timeout_ms=5_000),
            retriable(
                "notify",
                participant="notifications",
                command="notify.send",
                retry=RetryPolicy(max_attempts=None, initial_delay_ms=50, max_delay_ms=100),
                timeout_ms=5_000,
            ),
        )
        .build()
    )


@contextlib.asynccontextmanager
async def running(
    database_url: str, bootstrap: str, topics: Topics, definition: SagaDefinition
) -> AsyncIterator[CoordinatorRuntime]:
    config = fast_runtime_config(database_url, bootstrap, topics, partitions=2)
    async with CoordinatorRuntime(config, [definition]) as runtime, looping(runtime):
        yield runtime


async def wait_terminal(runtime: CoordinatorRuntime, saga_id: UUID, limit_s: float = 30) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    status = "?"
    while loop.time() < deadline:
        row = await runtime.store.get_saga(str(saga_id))
        assert row is not None
        status = row.status
        if status in {"completed", "compensated", "stuck", "aborted"}:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"saga {saga_id} still {status} after {limit_s}s")


RunOne = Callable[..., Awaitable[tuple[str, ScriptedParticipants]]]


@pytest.fixture
def run_one(database_url: str, kafka_bootstrap: str, topic_prefix: str) -> RunOne:
    """Run one trip saga against scripted participants: its final status and the parts."""

    async def run(
        script: dict[str, Callable[[Envelope], Reply | None]],
        definition: SagaDefinition | None = None,
    ) -> tuple[str, ScriptedParticipants]:
        topics = Topics(prefix=topic_prefix)
        async with (
            running(database_url, kafka_bootstrap, topics, definition or trip()) as runtime,
            ScriptedParticipants(kafka_bootstrap, topics, PARTICIPANTS, script) as parts,
        ):
            started = await start_saga(
                runtime.store,
                runtime.definitions,
                topics,
                "trip",
                {"city": "Lisbon"},
                now=datetime.now(UTC),
            )
            status = await wait_terminal(runtime, started.saga_id)
            await asyncio.sleep(0.3)  # let any stray duplicate arrive before counting
            return status, parts

    return run


def sent_types(parts: ScriptedParticipants) -> list[str]:
    return [e.type for e in parts.received]


async def test_success_runs_every_step_once_in_order(run_one: RunOne) -> None:
    status, parts = await run_one({"hotel.book": ok(ref="H-1")})
    assert status == SagaStatus.COMPLETED
    assert sent_types(parts) == ["hotel.book", "flight.book", "payment.charge", "notify.send"]
    assert parts.of_type("hotel.book")[0].payload == {"city": "Lisbon"}
    assert len({e.message_id for e in parts.received}) == 4


async def test_failure_before_pivot_compensates_in_reverse_order(run_one: RunOne) -> None:
    status, parts = await run_one({"payment.charge": fail("card.declined")})
    assert status == SagaStatus.COMPENSATED
    assert sent_types(parts) == [
        "hotel.book",
        "flight.book",
        "payment.charge",
        "flight.cancel",
        "hotel.cancel",
    ]


async def test_retriable_failures_are_retried_with_backoff(run_one: RunOne) -> None:
    status, parts = await run_one({"flight.book": fail_first(2)})
    assert status == SagaStatus.COMPLETED
    assert [e.attempt for e in parts.of_type("flight.book")] == [1, 2, 3]
    assert "flight.cancel" not in sent_types(parts)


async def test_step_timeout_compensates_the_uncertain_step_too(run_one: RunOne) -> None:
    status, parts = await run_one({"flight.book": silent}, trip(flight_timeout_ms=300))
    assert status == SagaStatus.COMPENSATED
    assert [e.attempt for e in parts.of_type("flight.book")] == [1, 2, 3]
    assert sent_types(parts)[-2:] == ["flight.cancel", "hotel.cancel"]


async def test_deadline_compensates_a_saga_that_did_not_reach_its_pivot(run_one: RunOne) -> None:
    status, parts = await run_one(
        {"flight.book": silent}, trip(flight_timeout_ms=1_000, deadline_ms=400)
    )
    assert status == SagaStatus.COMPENSATED
    assert "payment.charge" not in sent_types(parts)
    assert sent_types(parts)[-1] == "hotel.cancel"


async def test_a_relay_that_fails_for_good_fails_the_whole_runtime(
    database_url: str, kafka_bootstrap: str, topic_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A coordinator without a working relay must not look healthy: it exits loudly.
    async def broken(self: Relay) -> None:
        await asyncio.sleep(0.2)
        raise ConfigError("the relay cannot work like this")

    monkeypatch.setattr(Relay, "run_until_stopped", broken)
    config = one_partition_runtime(database_url, kafka_bootstrap, topic_prefix)
    async with CoordinatorRuntime(config, [trip()]) as runtime:
        with pytest.raises(RuntimeError, match="a relay failed: the relay cannot work like this"):
            await asyncio.wait_for(runtime.run(), 30)


async def test_a_relay_cancelled_from_inside_is_restarted_and_the_sagas_go_on(
    database_url: str, kafka_bootstrap: str, topic_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The Kafka client once let a CancelledError out of its own operations when a
    # connection died; the relay that meets one starts again (it used to vanish).
    real = Relay.run_until_stopped
    calls = 0

    async def cancelled_once(self: Relay) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(0.2)
            raise asyncio.CancelledError
        await real(self)

    monkeypatch.setattr(Relay, "run_until_stopped", cancelled_once)
    topics = Topics(prefix=topic_prefix)
    config = one_partition_runtime(database_url, kafka_bootstrap, topic_prefix)
    async with (
        ScriptedParticipants(kafka_bootstrap, topics, PARTICIPANTS, {}),
        CoordinatorRuntime(config, [trip()]) as runtime,
        looping(runtime) as task,
    ):
        started = await start_saga(
            runtime.store,
            runtime.definitions,
            topics,
            "trip",
            {"city": "Oslo"},
            now=datetime.now(UTC),
        )
        await saga_in(runtime.store, started.saga_id, {SagaStatus.COMPLETED})
        assert runtime.relays is not None
        assert runtime.relays.restarts >= 1
        assert not task.done()


def one_partition_runtime(database_url: str, bootstrap: str, prefix: str) -> RuntimeConfig:
    return fast_runtime_config(database_url, bootstrap, Topics(prefix=prefix), partitions=1)
