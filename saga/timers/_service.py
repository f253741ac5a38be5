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
    """Turns due timers into timer messages; an async context manager.

    The loop sleeps until the earliest timer is due, at most ``max_interval`` and at
    least ``interval`` between two looks. A commit through the same store that sets a
    timer due earlier wakes it at once (:meth:`saga.store.SqlStore.on_timers_set`), so
    the timers a coordinator sets fire on time without polling the database ten times a
    second. Timers set elsewhere (another process, a coordinator that died) are found
    by the look at least every ``max_interval``.
    """

    def __init__(
        self,
        store: SqlStore,
        topics: Topics,
        *,
        interval: timedelta = timedelta(milliseconds=100),
        max_interval: timedelta = timedelta(seconds=1),
        batch: int = 500,
        partitions: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if max_interval < interval:
            raise ValueError(
                f"max_interval ({max_interval}) must not be shorter than interval ({interval})"
            )
        self.store = store
        self.topics = topics
        self.interval = interval
        self.max_interval = max_interval
        self.batch = batch
        self.partitions = partitions
        self.clock = clock
        self._state = State.UNOPENED
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        # When the loop means to look next; None while it is looking (then any timer
        # set wakes the next sleep: it may have been missed by the look).
        self._next_look: datetime | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.fired = 0
        self.looks = 0
        """How many times the loop looked for due timers (for tests and metrics)."""

    async def _open(self) -> None:
        if self._state is not State.UNOPENED:
            raise RuntimeError(f"timer service cannot be opened: it is {self._state.value}")
        self._unsubscribe = self.store.on_timers_set(self._timer_set)
        self._state = State.RUNNING

    async def _close(self, exc: BaseException | None) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._state = State.CLOSED

    def stop(self) -> None:
        """Ask :meth:`run` to return."""
        self._stop.set()
        self._wake.set()

    def _timer_set(self, due_at: datetime) -> None:
        if self._next_look is None or due_at < self._next_look:
            self._wake.set()

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
        """Fire due timers as they fall due until :meth:`stop`."""
        while not self._stop.is_set():
            self._next_look = None
            self._wake.clear()
            self.looks += 1
            next_due: datetime | None
            try:
                await self.fire_due()
                next_due = await self.store.next_timer_due()
            except StoreUnavailable as exc:
                log.warning("timers: database unavailable, retrying: %s", exc)
                next_due = self.clock()  # look again after the shortest sleep
            now = self.clock()
            look = now + self.max_interval
            if next_due is not None:
                look = max(now + self.interval, min(look, next_due))
            self._next_look = look
            await wait_at_most(self._wake, (look - now).total_seconds())
