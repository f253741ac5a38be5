"""Retry decisions of the engine, on top of :meth:`RetryPolicy.next_delay_ms`.

The policy decides whether and how long; this module adds what the engine knows: the
participant's ``retry_after_ms`` (a lower bound on the delay), the retry budget (an
operator retry starts a fresh budget) and the deterministic jitter seed.
"""

from __future__ import annotations

from uuid import UUID

from saga.definition import RetryPolicy
from saga.engine._ids import derive_seed


def jitter_seed(saga_id: UUID, step: str, attempt: int, phase: str) -> int:
    """Return the jitter seed of one retry: a hash of saga, step, attempt and phase."""
    return derive_seed(saga_id, step, attempt, phase)


def retry_delay(
    policy: RetryPolicy,
    *,
    budget_attempt: int,
    error_code: str | None,
    retriable: bool,
    retry_after_ms: int | None,
    seed: int,
) -> int | None:
    """Return the delay before the next attempt, or ``None`` to give up.

    Args:
        policy: The step's (or compensation's) retry policy.
        budget_attempt: The failed attempt, counted within the current retry budget.
        error_code: The error code; ``None`` for a timeout.
        retriable: Whether the failure may be retried (always ``True`` for timeouts).
        retry_after_ms: The participant's requested minimum delay, if any.
        seed: Jitter seed.
    """
    delay = policy.next_delay_ms(budget_attempt, error_code, retriable, seed)
    if delay is None:
        return None
    return max(delay, retry_after_ms or 0)
