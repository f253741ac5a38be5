"""Lock queues: sagas that share a lock key run one at a time, in arrival order.

A key's row in ``saga_locks`` names its holder; ``saga_lock_waiters`` queues the
others. Leaving the queue (or finishing as holder) grants the key to the first waiter,
whose ``lock_granted`` timer is set due now, so the coordinator owning it starts it.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select, update

from saga.store import tables as t
from saga.store._errors import translate_errors
from saga.store._records import LockWrite, TimerWrite
from saga.store._tx.timers import TimerWrites


class LockQueues(TimerWrites):
    """Joining and leaving lock queues (a grant sets a timer)."""

    async def apply_locks(self, writes: Sequence[LockWrite]) -> list[str]:
        """Join or leave lock queues; grant each key that is free to its first waiter.

        A grant sets the waiter's ``lock_granted`` timer (due now), so the coordinator
        that owns the saga starts it. The key's row is locked first (``FOR UPDATE`` on
        PostgreSQL), so two transactions never grant one key twice.

        Returns:
            The sagas granted a key.
        """
        granted: list[str] = []
        now = self.now()
        for w in writes:
            with translate_errors("update a lock queue", saga_id=w.saga_id):
                await self.conn.execute(
                    self.insert(t.locks).values(lock_key=w.key).on_conflict_do_nothing()
                )
                held = select(t.locks.c.holder).where(t.locks.c.lock_key == w.key)
                if self.postgres:
                    held = held.with_for_update()
                holder = (await self.conn.execute(held)).scalar_one_or_none()
                if w.action == "wait":
                    await self.conn.execute(
                        t.lock_waiters.insert().values(
                            lock_key=w.key, saga_id=w.saga_id, queued_at=now
                        )
                    )
                else:
                    await self.conn.execute(
                        delete(t.lock_waiters).where(t.lock_waiters.c.saga_id == w.saga_id)
                    )
                    if holder == w.saga_id:
                        holder = None
                if holder is not None:
                    continue
                waiters = t.lock_waiters.c
                first = (
                    await self.conn.execute(
                        select(waiters.id, waiters.saga_id)
                        .where(waiters.lock_key == w.key)
                        .order_by(waiters.id)
                        .limit(1)
                    )
                ).first()
                await self.conn.execute(
                    update(t.locks)
                    .where(t.locks.c.lock_key == w.key)
                    .values(
                        holder=first.saga_id if first else None,
                        granted_at=now if first else None,
                    )
                )
                if first is not None:
                    await self.conn.execute(delete(t.lock_waiters).where(waiters.id == first.id))
                    granted.append(first.saga_id)
        await self.set_timers(
            [
                TimerWrite(saga_id=sid, kind="lock_granted", step="", attempt=1, due_at=now)
                for sid in granted
            ]
        )
        return granted
