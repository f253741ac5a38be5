"""RetryPolicy.next_delay_ms: a pure function of (attempt, code, retriable, seed)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from saga.definition import RetryPolicy, evaluate, is_truthy

EXP = RetryPolicy(max_attempts=5, initial_delay_ms=100, backoff=2, max_delay_ms=1000, jitter=0)
CODES = RetryPolicy(max_attempts=None, initial_delay_ms=100, jitter=0, retriable_codes=("busy",))


@pytest.mark.parametrize(
    ("policy", "attempt", "code", "retriable", "expected"),
    [
        pytest.param(EXP, 1, "x", True, 100, id="first retry waits the initial delay"),
        pytest.param(EXP, 2, "x", True, 200, id="then doubles"),
        pytest.param(EXP, 3, "x", True, 400, id="and doubles again"),
        pytest.param(EXP, 4, "x", True, 800, id="up to"),
        pytest.param(EXP, 5, "x", True, None, id="max attempts reached: give up"),
        pytest.param(EXP.model_copy(update={"max_attempts": 9}), 6, "x", True, 1000, id="capped"),
        pytest.param(EXP, 1, "x", False, None, id="non-retriable: give up"),
        pytest.param(CODES, 1, "busy", False, 100, id="listed code retried regardless of flag"),
        pytest.param(CODES, 1, "declined", True, None, id="unlisted code not retried"),
        pytest.param(CODES, 1, None, True, 100, id="timeouts (no code) retried"),
        pytest.param(CODES, 10_000, "busy", True, 60_000, id="unbounded never gives up"),
        pytest.param(RetryPolicy(max_attempts=1), 1, "x", True, None, id="one attempt only"),
    ],
)
def test_next_delay(
    policy: RetryPolicy, attempt: int, code: str | None, retriable: bool, expected: int | None
) -> None:
    assert policy.next_delay_ms(attempt, code, retriable, seed=7) == expected


@given(
    attempt=st.integers(1, 50),
    seed=st.integers(0, 2**64),
    jitter=st.floats(0, 1),
)
def test_jitter_is_deterministic_and_bounded(attempt: int, seed: int, jitter: float) -> None:
    policy = RetryPolicy(max_attempts=None, initial_delay_ms=100, max_delay_ms=5000, jitter=jitter)
    delay = policy.next_delay_ms(attempt, "x", True, seed)
    assert delay == policy.next_delay_ms(attempt, "x", True, seed)
    assert delay is not None
    full = min(5000, 100 * 2 ** (attempt - 1))
    assert full * (1 - jitter) - 1 <= delay <= full


@pytest.mark.parametrize(
    ("value", "truthy"),
    [
        (None, False),
        (False, False),
        ("", False),
        ([], False),
        ({}, False),
        (0, True),
        ("a", True),
        ([0], True),
    ],
)
def test_jmespath_truthiness(value: object, truthy: bool) -> None:
    assert is_truthy(value) is truthy


def test_evaluate() -> None:
    assert evaluate("a.b", {"a": {"b": 3}}) == 3
    assert evaluate("total > `10`", {"total": 11}) is True
