"""What every long-running resource shares: its lifecycle states and the clock type.

``Coordinator``, ``Relay``, ``TimerService`` and ``Participant`` are async context
managers that move UNOPENED -> RUNNING -> DRAINING -> CLOSED and raise a clear error
when opened twice or used after close.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]
"""Returns the current time (timezone-aware UTC); tests pass their own."""


def utc_now() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


class State(enum.Enum):
    """Lifecycle of a resource."""

    UNOPENED = "unopened"
    RUNNING = "running"
    DRAINING = "draining"
    CLOSED = "closed"


__all__ = ["Clock", "State", "utc_now"]
