"""Circuit breakers per participant.

Theory of operation
-------------------
The coordinator records, per participant, the outcome of every step attempt it hears
about: success, failure, or timeout. Outcomes older than ``window`` fall out. When at
least ``min_calls`` outcomes are in the window and the share of failures and timeouts
reaches ``failure_ratio``, the breaker *opens*: the participant is reported as paused,
and the engine defers (durably, in saga state) every new command for it instead of
sending it — nothing is dropped and no retry budget is burnt.

After ``cool_down`` the breaker is *half-open*: the coordinator releases one deferred
command as a probe. A success closes the breaker (all deferred commands are released);
a failure or timeout opens it again for another cool-down.

The breaker is pure: the caller passes ``now`` in, so it is tested without a clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum


class BreakerState(StrEnum):
    """State of one participant's breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, kw_only=True)
class BreakerPolicy:
    """When a participant's breaker opens and how long it stays open."""

    window: timedelta = timedelta(seconds=30)
    """Sliding window over which outcomes are counted."""
    min_calls: int = 20
    """Fewer outcomes than this in the window never open the breaker."""
    failure_ratio: float = 0.5
    """Share of failures and timeouts in the window that opens the breaker."""
    cool_down: timedelta = timedelta(seconds=10)
    """How long an open breaker waits before letting a probe through."""
    enabled: bool = True
    """Set to False to never pause a participant."""

    def __post_init__(self) -> None:
        if not 0 < self.failure_ratio <= 1:
            raise ValueError("failure_ratio must be in (0, 1]")
        if self.min_calls < 1:
            raise ValueError("min_calls must be at least 1")


@dataclass(frozen=True, kw_only=True)
class BreakerReport:
    """One participant's breaker as a status page shows it."""

    participant: str
    state: BreakerState
    calls: int
    """Outcomes in the window."""
    failures: int
    """Failures and timeouts among them."""
    opened_at: datetime | None
    """When the breaker last opened (``None`` while closed)."""


@dataclass(kw_only=True)
class _Breaker:
    outcomes: deque[tuple[datetime, bool]] = field(default_factory=deque)
    failures: int = 0  # failures in ``outcomes``, kept so ``record`` is O(1), not O(window)
    state: BreakerState = BreakerState.CLOSED
    opened_at: datetime | None = None
    probe_out: bool = False
    probe_at: datetime | None = None


class CircuitBreakers:
    """The breakers of all participants, fed with outcomes by the coordinator."""

    def __init__(self, policy: BreakerPolicy | None = None) -> None:
        self.policy = policy or BreakerPolicy()
        self._breakers: dict[str, _Breaker] = {}

    def record(self, participant: str, *, ok: bool, now: datetime) -> BreakerState:
        """Record one outcome (``ok=False`` for a failure or a timeout); return the new state."""
        b = self._breakers.setdefault(participant, _Breaker())
        if not self.policy.enabled:
            return BreakerState.CLOSED
        if b.state is BreakerState.HALF_OPEN and b.probe_out:
            b.probe_out = False
            if ok:
                b.state, b.opened_at = BreakerState.CLOSED, None
                b.outcomes.clear()
                b.failures = 0
            else:
                b.state, b.opened_at = BreakerState.OPEN, now
            return b.state
        b.outcomes.append((now, ok))
        b.failures += not ok
        self._trim(b, now)
        if (
            b.state is BreakerState.CLOSED
            and len(b.outcomes) >= self.policy.min_calls
            and b.failures / len(b.outcomes) >= self.policy.failure_ratio
        ):
            b.state, b.opened_at = BreakerState.OPEN, now
        return b.state

    def state(self, participant: str, now: datetime) -> BreakerState:
        """The participant's state at ``now`` (an open breaker half-opens after the cool-down)."""
        b = self._breakers.get(participant)
        if b is None:
            return BreakerState.CLOSED
        if (
            b.state is BreakerState.OPEN
            and b.opened_at is not None
            and now - b.opened_at >= self.policy.cool_down
        ):
            b.state = BreakerState.HALF_OPEN
            b.probe_out = False
        return b.state

    def take_probe(self, participant: str, now: datetime) -> bool:
        """Whether one probe command may be sent now (half-open, no probe in flight)."""
        b = self._breakers.get(participant)
        if b is None or self.state(participant, now) is not BreakerState.HALF_OPEN:
            return False
        if b.probe_out and b.probe_at is not None and now - b.probe_at < self.policy.cool_down:
            return False
        # No probe in flight, or its outcome never came back within a cool-down (the
        # probe itself may have been deferred or lost): let another one through.
        b.probe_out, b.probe_at = True, now
        return True

    def paused(self, now: datetime) -> frozenset[str]:
        """Participants that must not get new commands now (open or half-open)."""
        return frozenset(
            name for name in self._breakers if self.state(name, now) is not BreakerState.CLOSED
        )

    def snapshot(self, now: datetime) -> dict[str, BreakerState]:
        """Every known participant's state, for status pages and metrics."""
        return {name: self.state(name, now) for name in sorted(self._breakers)}

    def reports(self, now: datetime) -> list[BreakerReport]:
        """Every known participant's breaker with its counts, sorted by participant."""
        out = []
        for name in sorted(self._breakers):
            state = self.state(name, now)
            b = self._breakers[name]
            self._trim(b, now)
            out.append(
                BreakerReport(
                    participant=name,
                    state=state,
                    calls=len(b.outcomes),
                    failures=b.failures,
                    opened_at=b.opened_at,
                )
            )
        return out

    def _trim(self, b: _Breaker, now: datetime) -> None:
        horizon = now - self.policy.window
        while b.outcomes and b.outcomes[0][0] < horizon:
            b.failures -= not b.outcomes.popleft()[1]
