"""Timers, set and cancelled by one batch.

A timer's natural key is ``(saga, kind, step, attempt)``: setting it again moves its
due time, cancelling a missing one does nothing, so a replayed batch changes nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Final

from sqlalchemy import bindparam, delete

from saga.store import tables as t
from saga.store._errors import translate_errors
from saga.store._records import TimerKey, TimerWrite, as_utc
from saga.store._tx.bulk import rows_insert, rows_params, unnest_rows
from saga.store._tx.connection import TxConnection

_DELETE_TIMER = delete(t.timers).where(
    t.timers.c.saga_id == bindparam("b_saga_id"),
    t.timers.c.kind == bindparam("b_kind"),
    t.timers.c.step == bindparam("b_step"),
    t.timers.c.attempt == bindparam("b_attempt"),
)


@functools.cache
def upsert_timers(names: tuple[str, ...], *, postgres: bool, prefix: str = "u") -> Any:
    """Timers upserted on their natural key (built once per backend)."""
    insert = rows_insert(t.timers, names, postgres=postgres, prefix=prefix)
    return insert.on_conflict_do_update(
        index_elements=["saga_id", "kind", "step", "attempt"],
        set_={"due_at": insert.excluded.due_at},
    )


TIMER_KEY_COLUMNS: Final = ("saga_id", "kind", "step", "attempt")
"""A timer's natural key, the arrays of :func:`delete_timers_unnest` in order."""


def timer_rows(timers: Sequence[TimerWrite]) -> list[dict[str, Any]]:
    """The rows of :func:`upsert_timers`: one per natural key, the last write winning."""
    merged = {(x.saga_id, x.kind, x.step, x.attempt): x for x in timers}
    return [
        {
            "saga_id": x.saga_id,
            "kind": x.kind,
            "step": x.step,
            "attempt": x.attempt,
            "due_at": as_utc(x.due_at),
        }
        for x in merged.values()
    ]


def timer_key_rows(keys: Sequence[TimerKey]) -> list[dict[str, Any]]:
    """The rows of :func:`delete_timers_unnest`: each key once, in key order."""
    unique = sorted({(k.saga_id, k.kind, k.step, k.attempt) for k in keys})
    return [dict(zip(TIMER_KEY_COLUMNS, key, strict=True)) for key in unique]


@functools.cache
def delete_timers_unnest(prefix: str) -> Any:
    """PostgreSQL: timers deleted by natural key in ONE ``DELETE ... USING unnest(...)``."""
    c = t.timers.c
    src = unnest_rows([c[n] for n in TIMER_KEY_COLUMNS], prefix=prefix)
    return delete(t.timers).where(*(c[n] == src.c[n] for n in TIMER_KEY_COLUMNS))


def not_set_again(
    cancelled: Sequence[dict[str, Any]], set_rows: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The cancels among ``cancelled`` whose timer ``set_rows`` does not set again.

    Cancels ran before sets, so a timer both cancelled and set by one call is set.
    """
    again = {tuple(r[n] for n in TIMER_KEY_COLUMNS) for r in set_rows}
    return [r for r in cancelled if tuple(r[n] for n in TIMER_KEY_COLUMNS) not in again]


class TimerWrites(TxConnection):
    """Setting and cancelling timers."""

    async def set_timers(self, timers: Sequence[TimerWrite]) -> None:
        """Set timers; an existing ``(saga, kind, step, attempt)`` gets the new due time."""
        rows = self.timers_to_set(timers)
        if not rows:
            return
        names = tuple(rows[0])
        with translate_errors("set timers"):
            await self.conn.execute(
                upsert_timers(names, postgres=self.postgres),
                rows_params(t.timers, names, rows, postgres=self.postgres),
            )

    def timers_to_set(self, timers: Sequence[TimerWrite]) -> list[dict[str, Any]]:
        """The rows that set ``timers`` (see :func:`timer_rows`), noting the earliest."""
        rows = timer_rows(timers)
        if rows:
            earliest = min(r["due_at"] for r in rows)
            if self.earliest_timer is None or earliest < self.earliest_timer:
                self.earliest_timer = earliest
        return rows

    async def cancel_timers(self, keys: Sequence[TimerKey]) -> None:
        """Delete timers by natural key (missing ones are ignored)."""
        rows = timer_key_rows(keys)
        if not rows:
            return
        with translate_errors("cancel timers"):
            await self.conn.execute(
                _DELETE_TIMER,
                [
                    {
                        "b_saga_id": r["saga_id"],
                        "b_kind": r["kind"],
                        "b_step": r["step"],
                        "b_attempt": r["attempt"],
                    }
                    for r in rows
                ],
            )
