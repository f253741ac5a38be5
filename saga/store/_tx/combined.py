"""PostgreSQL: the writes of one batch in ONE statement.

A coordinator batch writes saga rows, step executions, outbox rows, timers and audit
records, and its consumer offsets: one statement per table made eight round trips per
batch, each a wake-up of the server and of the client, and round trips are what a
batch's cost is made of. On
PostgreSQL they go as one statement instead: each write is a data-modifying CTE
(``WITH s AS (UPDATE ...), o AS (INSERT ...) ... SELECT``), the final ``SELECT`` counts
what each one did, and the caller checks the counts the separate statements checked.

Every CTE of one statement sees the same snapshot and none sees another's rows, which
is why the writes are prepared first: timers cancelled and set again are netted out
(the set wins, as it did when the cancels ran first), step executions and timers are
merged per natural key, and audit hashes are computed from the chain heads loaded
with the sagas. Each CTE binds its arrays under its own prefix. The statement text
depends only on which writes a batch has and on their columns, so a handful of
prepared statements serve every batch. SQLite keeps one statement per table: it has
no round trip to save.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import aggregate_order_by

from saga.errors import ConcurrencyConflict
from saga.store import tables as t
from saga.store._leases import PG_COMMIT_CTE, OffsetCommit
from saga.store._tx.bulk import rows_insert, rows_params
from saga.store._tx.notify import outbox_written_and_notified
from saga.store._tx.sagas import update_sagas_unnest, upsert_steps
from saga.store._tx.timers import delete_timers_unnest, upsert_timers


@dataclass(frozen=True, slots=True)
class Part:
    """One write of the statement: its table's rows, and the columns they carry."""

    name: str
    """Which write (``sagas_new``, ``sagas``, ``steps``, ``outbox``, ``timers_cancelled``,
    ``timers_set``, ``audit``); it names its CTE (``w_<name>``) and its bind prefix."""
    names: tuple[str, ...]
    """The columns of its rows, in order."""
    rows: Sequence[Mapping[str, Any]]

    @classmethod
    def of(cls, name: str, rows: Sequence[Mapping[str, Any]]) -> Part:
        """The part ``name`` of ``rows`` (all with the columns of the first, in order)."""
        return cls(name, tuple(rows[0]) if rows else (), rows)


_TABLES = {
    "sagas_new": t.sagas,
    "sagas": t.sagas,
    "steps": t.step_executions,
    "outbox": t.outbox,
    "timers_cancelled": t.timers,
    "timers_set": t.timers,
    "audit": t.audit_log,
}


def _prefix(name: str) -> str:
    return f"w_{name}_"


@functools.cache
def combined_statement(
    shape: tuple[tuple[str, tuple[str, ...]], ...], *, announce: bool = True
) -> Any:
    """The one statement for writes of this shape (``(name, columns)`` per part).

    Its one result row has, per part, the column ``<name>`` counting the rows the part
    wrote; the outbox part adds ``outbox_ids`` (the message ids inserted) and
    ``outbox_row_ids`` (their outbox ids, in the same order), and unless told not to
    ``announce`` them, ``outbox_notified``; an ``offsets`` part (no columns) stores a
    batch's consumer offsets, fenced (:data:`saga.store._leases.PG_COMMIT_CTE`), and
    lists in ``offsets`` the partitions it stored.
    """
    columns: list[Any] = []
    for name, names in shape:
        prefix = _prefix(name)
        stmt: Any
        if name == "sagas":
            stmt = update_sagas_unnest(prefix)
        elif name == "timers_cancelled":
            stmt = delete_timers_unnest(prefix)
        elif name == "steps":
            stmt = upsert_steps(names, postgres=True, prefix=prefix)
        elif name == "timers_set":
            stmt = upsert_timers(names, postgres=True, prefix=prefix)
        elif name == "offsets":
            stored = select(func.array_agg(PG_COMMIT_CTE.c.partition)).scalar_subquery()
            columns.append(stored.label("offsets"))
            continue
        elif name == "outbox":
            insert = rows_insert(t.outbox, names, postgres=True, prefix=prefix)
            insert = insert.on_conflict_do_nothing(index_elements=["message_id"])
            written, notified = outbox_written_and_notified(insert, f"w_{name}")
            columns.append(select(func.count()).select_from(written).scalar_subquery().label(name))
            for label, column in (
                ("outbox_ids", written.c.message_id),
                ("outbox_row_ids", written.c.id),
            ):
                ordered = aggregate_order_by(column, written.c.id)
                columns.append(select(func.array_agg(ordered)).scalar_subquery().label(label))
            if announce:
                columns.append(notified.label("outbox_notified"))
            continue
        else:  # sagas_new, audit: plain inserts
            stmt = rows_insert(_TABLES[name], names, postgres=True, prefix=prefix)
        cte = stmt.returning(_TABLES[name].c.id).cte(f"w_{name}")
        columns.append(select(func.count()).select_from(cte).scalar_subquery().label(name))
    return select(*columns)


async def write_combined(
    conn: Any,
    parts: Sequence[Part],
    offsets: OffsetCommit | None = None,
    *,
    announce: bool = True,
) -> dict[str, Any]:
    """Run the parts that have rows, and the offset commit, as one statement.

    The outbox rows written wake their relays at commit unless ``announce`` is false.

    Returns:
        Its result row as a dict (see :func:`combined_statement`).

    Raises:
        ConcurrencyConflict: A saga update matched no row (its revision moved on).
        PartitionFenced: Another member claimed a partition of ``offsets`` since.
    """
    present = [p for p in parts if p.rows]
    commit = offsets if offsets is not None and offsets.offsets else None
    if not present and commit is None:
        return {}
    shape = tuple((p.name, p.names) for p in present)
    params: dict[str, Any] = {}
    if commit is not None:
        shape += (("offsets", ()),)
        params.update(commit.params())
    for p in present:
        params.update(
            rows_params(_TABLES[p.name], p.names, p.rows, postgres=True, prefix=_prefix(p.name))
        )
    statement = combined_statement(shape, announce=announce)
    row = (await conn.execute(statement, params)).mappings().one()
    result = dict(row)
    for p in present:
        if p.name == "sagas" and result["sagas"] != len(p.rows):
            raise ConcurrencyConflict(
                f"{len(p.rows) - result['sagas']} saga update(s) matched no row"
            )
    if commit is not None:
        commit.check(result["offsets"] or ())
    return result


__all__ = ["Part", "combined_statement", "write_combined"]
