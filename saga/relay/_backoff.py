"""Capped exponential back-off for the relay's retry loops."""

from __future__ import annotations

import random


class Backoff:
    """Delays that double from ``initial`` up to ``maximum`` (with up to 20% jitter)."""

    def __init__(self, initial: float, maximum: float) -> None:
        self._initial = initial
        self._maximum = maximum
        self._next = initial

    def next_delay(self) -> float:
        """The delay before the next retry, in seconds; each call doubles the next one."""
        delay = self._next
        self._next = min(self._next * 2, self._maximum)
        return delay * random.uniform(0.8, 1.0)  # jitter, not cryptography

    def reset(self) -> None:
        """Start over from ``initial`` (after a success)."""
        self._next = self._initial
