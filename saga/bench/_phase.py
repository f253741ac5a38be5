"""One measured phase: start sagas at a rate or flat out, track them until they end.

The driver starts sagas in batches (one database transaction per batch), never more
than ``concurrency`` in flight and, with a rate, never ahead of ``rate * elapsed``. A
consumer task (the events topic for sagas, the ``done`` topic for the baseline) calls
:meth:`Tracker.finish`; the phase ends when every saga it started has finished.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from rich.progress import Progress, TaskID

from saga.bench._procs import Workers
from saga.errors import ConfigError

Starter = Callable[[int], Awaitable[list[str]]]
"""Start ``k`` sagas; return their ids (the start time is taken before the call)."""

MAX_START_BATCH = 500
"""Most sagas started in one database transaction."""


@dataclass
class Finished:
    """How a saga ended."""

    status: str
    """``completed``, ``compensated``, ``stuck`` or ``aborted``."""
    duration_s: float
    """From the start (driver clock) to the terminal event (coordinator clock)."""
    step_latencies_s: list[float] = field(default_factory=list)
    """Baseline only: the latency of each step after the first."""


class Tracker:
    """Sagas started and finished in the current phase."""

    def __init__(self) -> None:
        self.started_at: dict[str, float] = {}
        self.finished: dict[str, Finished] = {}
        self.last_finished_at = 0.0
        # Terminal events of sagas not started yet: a starter returns its ids only after
        # Kafka acknowledged every start, and a fast saga can end before that.
        self._early: dict[str, tuple[str, float, list[float]]] = {}
        self.changed = asyncio.Event()

    @property
    def in_flight(self) -> int:
        """Started and not finished."""
        return len(self.started_at) - len(self.finished)

    def reset(self) -> None:
        """Forget everything (a new phase)."""
        self.started_at.clear()
        self.finished.clear()
        self._early.clear()
        self.last_finished_at = 0.0

    def start(self, ids: list[str], at: float) -> None:
        """Record sagas started at ``at`` (epoch seconds)."""
        for saga_id in ids:
            self.started_at[saga_id] = at
            early = self._early.pop(saga_id, None)
            if early is not None:
                self.finish(saga_id, *early)

    def finish(
        self, saga_id: str, status: str, ended_at: float, latencies: list[float] | None = None
    ) -> None:
        """Record a terminal event (ignored for repeats).

        The event of a saga not started yet is kept until :meth:`start` names it (or
        :meth:`reset` forgets it: a saga of an earlier phase).
        """
        start = self.started_at.get(saga_id)
        if start is None:
            self._early.setdefault(saga_id, (status, ended_at, latencies or []))
            return
        if saga_id in self.finished:
            return
        self.finished[saga_id] = Finished(status, ended_at - start, latencies or [])
        self.last_finished_at = time.time()
        self.changed.set()


@dataclass
class PhaseTimes:
    """When a phase ran."""

    started_at: float
    ended_at: float

    @property
    def elapsed_s(self) -> float:
        """Wall time from the first start to the last terminal event seen."""
        return max(self.ended_at - self.started_at, 1e-9)


async def run_phase(
    tracker: Tracker,
    starter: Starter,
    *,
    sagas: int,
    concurrency: int,
    rate: float | None,
    timeout_s: float,
    workers: Workers,
    progress: Progress | None = None,
    label: str = "sagas",
) -> PhaseTimes:
    """Start ``sagas`` sagas and wait until all of them have finished.

    Raises:
        ConfigError: The phase took longer than ``timeout_s`` or a worker died.
    """
    tracker.reset()
    task: TaskID | None = progress.add_task(label, total=sagas) if progress else None
    t0 = time.time()
    deadline = time.monotonic() + timeout_s
    started = 0
    last_check = 0.0
    while len(tracker.finished) < sagas:
        now = time.monotonic()
        if now > deadline:
            raise ConfigError(
                f"phase {label!r} timed out after {timeout_s:.0f}s: "
                f"{len(tracker.finished)}/{sagas} sagas finished"
            )
        if now - last_check > 1.0:
            workers.check_alive()
            last_check = now
        if progress is not None and task is not None:
            progress.update(task, completed=len(tracker.finished))
        allowed = min(concurrency - tracker.in_flight, sagas - started, MAX_START_BATCH)
        wait_s = 0.1
        if rate is not None and started < sagas:
            due = math.floor(rate * (time.time() - t0)) + 1 - started
            allowed = min(allowed, due)
            if due <= 0:
                wait_s = min(wait_s, (started + 1 - rate * (time.time() - t0)) / rate)
        if allowed > 0:
            at = time.time()
            tracker.start(await starter(allowed), at)
            started += allowed
            continue
        tracker.changed.clear()
        try:
            async with asyncio.timeout(max(wait_s, 0.001)):
                await tracker.changed.wait()
        except TimeoutError:
            pass
    if progress is not None and task is not None:
        progress.update(task, completed=sagas)
    return PhaseTimes(t0, tracker.last_finished_at)
