"""Timers, set and cancelled by one batch.

A timer's natural key is ``(saga, kind, step, attempt)``: setting it again moves its
due time, cancelling a missing one does nothing, so a replayed batch changes nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, delete

from saga.store import tables as t
from saga.store._errors import translate_errors
from saga.store._records import TimerKey, TimerWrite, as_utc
from saga.store._tx.bulk import rows_insert, rows_params
from saga.store._tx.connection import TxConnection

_DELETE_TIMER = delete(t.timers).where(
    t.timers.c.saga_id == bindparam("b_saga_id"),
    t.timers.c.kind == bindparam("b_kind"),
    t.timers.c.step == bindparam("b_step"),
    t.timers.c.attempt == bindparam("b_attempt"),
)


@functools.cache
def _upsert_timers(names: tuple[str, ...], *, postgres: bool) -> Any:
    """Timers upserted on their natural key (built once per backend)."""
    insert = rows_insert(t.timers, names, postgres=postgres)
    return insert.on_conflict_do_update(
        index_elements=["saga_id", "kind", "step", "attempt"],
        set_={"due_at": insert.excluded.due_at},
    )


class TimerWrites(TxConnection):
    """Setting and cancelling timers."""

    async def set_timers(self, timers: Sequence[TimerWrite]) -> None:
        """Set timers; an existing ``(saga, kind, step, attempt)`` gets the new due time."""
        merged = {(x.saga_id, x.kind, x.step, x.attempt): x for x in timers}
        if not merged:
            return
        rows = [
            {
                "saga_id": x.saga_id,
                "kind": x.kind,
                "step": x.step,
                "attempt": x.attempt,
                "due_at": as_utc(x.due_at),
            }
            for x in merged.values()
        ]
        names = tuple(rows[0])
        earliest = min(as_utc(x.due_at) for x in merged.values())
        if self.earliest_timer is None or earliest < self.earliest_timer:
            self.earliest_timer = earliest
        with translate_errors("set timers"):
            await self.conn.execute(
                _upsert_timers(names, postgres=self.postgres),
                rows_params(t.timers, names, rows, postgres=self.postgres),
            )

    async def cancel_timers(self, keys: Sequence[TimerKey]) -> None:
        """Delete timers by natural key (missing ones are ignored)."""
        unique = {(k.saga_id, k.kind, k.step, k.attempt) for k in keys}
        if not unique:
            return
        with translate_errors("cancel timers"):
            await self.conn.execute(
                _DELETE_TIMER,
                [
                    {"b_saga_id": s, "b_kind": k, "b_step": st, "b_attempt": a}
                    for s, k, st, a in sorted(unique)
                ],
            )
