"""The timer loop (see the package docstring)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import NAMESPACE_URL, UUID, uuid5

from contracts import Envelope, MessageKind
from saga.errors import StoreUnavailable
from saga.kafka import shard_of
from saga.lifecycle import AsyncResource, State, wait_at_most
from saga.store import OutboxMessage, SqlStore, TimerRow
from saga.topics import Topics

log = logging.getLogger("saga.timers")


def timer_message(timer: TimerRow, topics: Topics, *, partitions: int) -> OutboxMessage:
    """The outbox row that delivers a due timer to the coordinator owning its saga.

    The message id is derived from the timer's natural key and due time, so a timer
    claimed twice (a crash between claim and commit) is deduplicated by the inbox.
    """
    saga_id = UUID(timer.saga_id)
    mid = uuid5(
        NAMESPACE_URL,
        f"timer:{timer.saga_id}:{timer.kind}:{timer.step}:{timer.attempt}:{timer.due_at.isoformat()}",
    )
    env = Envelope(
        message_id=mid,
        saga_id=saga_id,
        saga_type="",
        saga_version=1,
        step=timer.step or None,
        attempt=timer.attempt,
        kind=MessageKind.TIMER,
        type=f"timer.{timer.kind}",
        occurred_at=timer.due_at,
    )
    return OutboxMessage(
        message_id=str(mid),
        topic=topics.replies,
        key=timer.saga_id.encode(),
        headers=[],
        payload=env.to_bytes(),
        owner_topic=topics.replies,
        shard=shard_of(saga_id, partitions),
    )


class TimerService(AsyncResource):
    """Turns due timers into timer messages; an async context manager."""

    def __init__(
        self,
        store: SqlStore,
        topics: Topics,
        *,
        interval: timedelta = timedelta(milliseconds=100),
        batch: int = 500,
        partitions: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.topics = topics
        self.interval = interval
        self.batch = batch
        self.partitions = partitions
        self.clock = clock
        self._state = State.UNOPENED
        self._stop = asyncio.Event()
        self.fired = 0

    async def _open(self) -> None:
        if self._state is not State.UNOPENED:
            raise RuntimeError(f"timer service cannot be opened: it is {self._state.value}")
        self._state = State.RUNNING

    async def _close(self, exc: BaseException | None) -> None:
        self._state = State.CLOSED

    def stop(self) -> None:
        """Ask :meth:`run` to return."""
        self._stop.set()

    async def fire_due(self) -> int:
        """Fire every timer due now (in batches); returns how many fired."""
        if self._state is not State.RUNNING:
            raise RuntimeError(f"timer service is not running (it is {self._state.value})")
        total = 0
        while True:
            n = await self.store.claim_due_timers(
                self.clock(),
                self.batch,
                lambda t: timer_message(t, self.topics, partitions=self.partitions),
            )
            total += n
            if n < self.batch:
                break
        self.fired += total
        return total

    async def run(self) -> None:
        """Fire due timers every ``interval`` until :meth:`stop`."""
        while not self._stop.is_set():
            try:
                await self.fire_due()
            except StoreUnavailable as exc:
                log.warning("timers: database unavailable, retrying: %s", exc)
            await wait_at_most(self._stop, self.interval.total_seconds())
