"""What every long-running resource shares: its lifecycle states, its base class, the clock.

``Coordinator``, ``Relay``, ``TimerService`` and ``Participant`` are async context
managers that move UNOPENED -> RUNNING -> DRAINING -> CLOSED and raise a clear error
when opened twice or used after close. They, and the other resources a process opens
with ``async with``, derive from :class:`AsyncResource`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

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


class AsyncResource:
    """An async context manager: ``async with`` calls :meth:`_open`, leaving :meth:`_close`."""

    async def __aenter__(self) -> Self:
        await self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close(exc)

    async def _open(self) -> None:
        """Start what the resource needs (raise to refuse); nothing by default."""

    async def _close(self, exc: BaseException | None) -> None:
        """Stop and release it; ``exc`` is the exception leaving the block (or ``None``)."""


__all__ = ["AsyncResource", "Clock", "State", "cancel_and_wait", "utc_now"]


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it has ended (its cancellation is not re-raised)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def wait_at_most(event: asyncio.Event, seconds: float) -> None:
    """Wait until ``event`` is set or ``seconds`` have passed, whichever comes first.

    The loops use it to sleep between rounds and still stop at once when asked to.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


def awaiting(task: asyncio.Task[Any]) -> str:
    """Where a task waits: its chain of awaits, outermost first (``func (file:line) > ...``).

    For a warning about work that takes too long: unlike ``Task.get_stack``, which gives
    one frame of a suspended coroutine, this follows every ``await`` down to the future
    the task waits for. Empty for a finished task.
    """
    if task.done():
        return ""
    parts: list[str] = []
    awaited: Any = task.get_coro()
    while awaited is not None and len(parts) < 64:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
        if frame is None:
            parts.append(type(awaited).__name__)
            break
        code = frame.f_code
        parts.append(f"{code.co_name} ({code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno})")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)
    return " > ".join(parts)
