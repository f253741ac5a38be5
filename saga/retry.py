"""Retrying through outages: capped exponential back-off, and start-up that waits.

Every long-running loop (coordinator, participants, relays, timers, pruners) retries a
retriable :class:`~saga.errors.SagaError` (database or Kafka unavailable) with back-off
instead of ending. Start-up follows the same rule through
:func:`retry_while_unavailable`: a process started while its database or broker is
down (a crash-restarted replica during an outage, a deployment whose database comes up
last) waits for it, logging each attempt, instead of exiting and crash-looping. A
non-retriable error (a wrong password, a refused definition) still fails at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from saga.errors import SagaError, TransportError
from saga.lifecycle import wait_at_most

T = TypeVar("T")

log = logging.getLogger("saga.retry")


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


def outage_kind(exc: SagaError) -> str:
    """``"Kafka"`` or ``"database"``: what a retriable error says is unavailable."""
    return "Kafka" if isinstance(exc, TransportError) else "database"


async def retry_while_unavailable(
    action: Callable[[], Awaitable[T]],
    *,
    what: str,
    stop: asyncio.Event,
    initial: float = 0.2,
    maximum: float = 5.0,
    logger: logging.Logger = log,
    on_retry: Callable[[str], None] | None = None,
) -> T:
    """Run ``action`` until it succeeds, retrying retriable errors with back-off.

    Args:
        action: Called anew for each attempt; it must leave nothing half-open when it
            raises (the next attempt starts from scratch).
        what: What is being done, for the log (``"coordinator start-up"``).
        stop: Set it to give up: the wait between attempts ends at once.
        initial: First delay, in seconds.
        maximum: Longest delay, in seconds.
        logger: Where each retry is logged (a warning naming the outage and the delay).
        on_retry: Called before each wait with what is unavailable and why
            (``"database unavailable (attempt 2): ..."``), for a readiness probe.

    Returns:
        What ``action`` returned.

    Raises:
        SagaError: A non-retriable error of ``action`` (at once), or the last retriable
            one when ``stop`` is set before an attempt succeeds.
    """
    backoff = Backoff(initial, maximum)
    attempt = 1
    while True:
        try:
            return await action()
        except SagaError as exc:
            if not exc.retriable or stop.is_set():
                raise
            delay = backoff.next_delay()
            kind = outage_kind(exc)
            problem = f"{kind} unavailable (attempt {attempt}): {exc}"
            if on_retry is not None:
                on_retry(problem)
            logger.warning(
                "%s: %s; retrying in %.1fs (check that it runs and is reachable)",
                what,
                problem,
                delay,
            )
            await wait_at_most(stop, delay)
            if stop.is_set():
                waited = kind if kind == "Kafka" else f"the {kind}"
                logger.warning("%s: stopped while waiting for %s", what, waited)
                raise
            attempt += 1


class Startup:
    """A resource's start-up that waits out an outage, and what it waits for now.

    Example::

        self._startup = Startup("coordinator start-up", self._stop, log)
        ...
        await self._startup(self._start)  # in _open
        ...
        self._startup.waiting_for         # for /readyz, while it waits
    """

    def __init__(self, what: str, stop: asyncio.Event, logger: logging.Logger = log) -> None:
        """Describe it (nothing runs until called).

        Args:
            what: What starts, for the log (``"participant inventory start-up"``).
            stop: Set it to give up (see :func:`retry_while_unavailable`).
            logger: Where each retry is logged.
        """
        self.what = what
        self.waiting_for: str | None = None
        """While it waits: what is unavailable, and why (``None`` otherwise)."""
        self._stop = stop
        self._logger = logger

    async def __call__(self, action: Callable[[], Awaitable[T]]) -> T:
        """Run ``action`` through :func:`retry_while_unavailable`."""
        try:
            return await retry_while_unavailable(
                action, what=self.what, stop=self._stop, logger=self._logger, on_retry=self._waiting
            )
        finally:
            self.waiting_for = None  # it waits no more, whether it succeeded or gave up

    def _waiting(self, problem: str) -> None:
        self.waiting_for = problem
