"""Coordinators write their circuit breakers to the database, for the console."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from saga.coordinator import (
    BreakerPolicy,
    BreakerReporter,
    BreakerState,
    CircuitBreakers,
    breaker_reports,
)
from saga.store import SqlStore, upgrade

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _breakers(**outcomes: list[bool]) -> CircuitBreakers:
    breakers = CircuitBreakers(BreakerPolicy(min_calls=2, failure_ratio=0.5))
    for participant, oks in outcomes.items():
        for ok in oks:
            breakers.record(participant, ok=ok, now=NOW)
    return breakers


async def test_a_change_is_written_at_once_counts_every_interval(db_engine: AsyncEngine) -> None:
    await upgrade(db_engine)
    store = SqlStore(db_engine)
    reporter = BreakerReporter(store, "host:1:a", interval=timedelta(seconds=10))
    breakers = _breakers(payments=[True])

    assert await reporter.report(breakers, NOW)
    [first] = await breaker_reports(store)
    assert (first.member, first.report.participant, first.report.state) == (
        "host:1:a",
        "payments",
        BreakerState.CLOSED,
    )
    assert (first.report.calls, first.report.failures, first.reported_at) == (1, 0, NOW)
    assert first.stale_after == NOW + 3 * timedelta(seconds=10), "three of its intervals"

    # New counts but the same state: not written before the interval is up ...
    breakers.record("payments", ok=True, now=NOW)
    assert not await reporter.report(breakers, NOW + timedelta(seconds=1))
    # ... a state change is written at once ...
    breakers.record("payments", ok=False, now=NOW)
    breakers.record("payments", ok=False, now=NOW)
    assert await reporter.report(breakers, NOW + timedelta(seconds=2))
    [opened] = await breaker_reports(store)
    assert opened.report.state is BreakerState.OPEN
    assert (opened.report.calls, opened.report.failures) == (4, 2)
    assert opened.report.opened_at == NOW
    # ... and an interval later the counts are refreshed anyway.
    assert await reporter.report(breakers, NOW + timedelta(seconds=12))
    [refreshed] = await breaker_reports(store)
    assert refreshed.reported_at == NOW + timedelta(seconds=12)


async def test_reports_of_a_coordinator_that_stopped_reporting_age_and_go(
    db_engine: AsyncEngine,
) -> None:
    await upgrade(db_engine)
    store = SqlStore(db_engine)
    gone = BreakerReporter(store, "host:1:gone")
    assert await gone.report(_breakers(payments=[False, False]), NOW)
    live = BreakerReporter(store, "host:2:live")
    assert await live.report(_breakers(payments=[True]), NOW + timedelta(minutes=5))

    reports = await breaker_reports(store)
    later = NOW + timedelta(minutes=5)
    assert [(r.member, r.current(later)) for r in reports] == [
        ("host:1:gone", False),
        ("host:2:live", True),
    ]

    # A day later the dead coordinator's rows are deleted by the next report of any other.
    assert await live.report(_breakers(payments=[True]), NOW + timedelta(days=1, minutes=1))
    assert [r.member for r in await breaker_reports(store)] == ["host:2:live"]

    # A coordinator that leaves deletes its own.
    await live.forget()
    assert await breaker_reports(store) == []
