"""Circuit breakers open on failures, half-open after the cool-down, and close on a probe."""

from datetime import UTC, datetime, timedelta

from saga.coordinator import BreakerPolicy, BreakerState, CircuitBreakers

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = BreakerPolicy(min_calls=4, failure_ratio=0.5, cool_down=timedelta(seconds=10))


def test_opens_when_the_failure_ratio_is_reached() -> None:
    b = CircuitBreakers(POLICY)
    for ok in (True, False, True):
        b.record("pay", ok=ok, now=T0)
    assert b.paused(T0) == frozenset()
    assert b.record("pay", ok=False, now=T0) is BreakerState.OPEN
    assert b.paused(T0) == {"pay"}


def test_old_outcomes_leave_the_window() -> None:
    b = CircuitBreakers(POLICY)
    for _ in range(3):
        b.record("pay", ok=False, now=T0)
    later = T0 + POLICY.window + timedelta(seconds=1)
    assert b.record("pay", ok=False, now=later) is BreakerState.CLOSED


def test_half_open_probe_closes_or_reopens() -> None:
    b = CircuitBreakers(POLICY)
    for _ in range(4):
        b.record("pay", ok=False, now=T0)
    assert not b.take_probe("pay", T0 + timedelta(seconds=5))
    t1 = T0 + timedelta(seconds=10)
    assert b.state("pay", t1) is BreakerState.HALF_OPEN
    assert b.take_probe("pay", t1)
    assert not b.take_probe("pay", t1), "one probe at a time"
    assert b.record("pay", ok=False, now=t1) is BreakerState.OPEN
    t2 = t1 + timedelta(seconds=10)
    assert b.take_probe("pay", t2)
    assert b.record("pay", ok=True, now=t2) is BreakerState.CLOSED
    assert b.paused(t2) == frozenset()


def test_a_lost_probe_is_replaced_after_a_cool_down() -> None:
    b = CircuitBreakers(POLICY)
    for _ in range(4):
        b.record("pay", ok=False, now=T0)
    t1 = T0 + timedelta(seconds=10)
    assert b.take_probe("pay", t1)
    assert b.take_probe("pay", t1 + timedelta(seconds=10))


def test_disabled_never_pauses() -> None:
    b = CircuitBreakers(BreakerPolicy(enabled=False, min_calls=1))
    b.record("pay", ok=False, now=T0)
    assert b.paused(T0) == frozenset()
