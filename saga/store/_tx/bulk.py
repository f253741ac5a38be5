"""Bulk statements that serve both backends, whatever the batch size.

Every write of a batch is one or a few statements, never a statement per row. Lists of
values go to PostgreSQL as arrays (``= ANY(:array)``, ``unnest``), whose SQL text is the
same for any number of values, so one prepared statement serves every batch; SQLite
gets ``IN`` lists cut to :data:`CHUNK` values, under its limit of bound parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from sqlalchemy import JSON, ColumnElement, Text, any_, bindparam, cast, func, select
from sqlalchemy.dialects.postgresql import ARRAY

from saga.store._engine import json_text

CHUNK: Final = 500
"""Most values bound in one ``IN (...)`` list (SQLite limits bound parameters)."""


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    """``items`` in slices of at most ``size``."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


def any_of(
    column: ColumnElement[Any], values: Sequence[Any], *, postgres: bool
) -> Iterable[ColumnElement[bool]]:
    """``column IN values`` as few conditions as the backend allows.

    PostgreSQL gets one ``column = ANY(:array)``: its SQL text is the same for any
    number of values, so one prepared statement serves every batch (an ``IN`` list
    renders one placeholder per value, a new statement to prepare for each batch
    size). SQLite gets ``IN`` lists of at most :data:`CHUNK` values.
    """
    if postgres:
        if values:
            yield column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
        return
    for chunk in chunks(values):
        yield column.in_(chunk)


def insert_unnest(table: Any, rows: Sequence[Mapping[str, Any]]) -> tuple[Any, dict[str, Any]]:
    """One PostgreSQL ``INSERT ... SELECT FROM unnest(<one array per column>)`` of ``rows``.

    An ``executemany`` is pipelined by asyncpg, but the server still runs every row as
    a statement of its own; a multi-row ``VALUES`` list is a new statement to prepare
    for each batch size. Arrays keep one prepared statement for any number of rows, run
    once per batch. JSON columns travel as text and are cast back. Returns the
    statement and its parameters, for ``conn.execute(*insert_unnest(...))``.
    """
    names = list(rows[0])
    columns = [table.c[n] for n in names]
    params: dict[str, Any] = {}
    arrays = []
    for i, (name, col) in enumerate(zip(names, columns, strict=True)):
        is_json = isinstance(col.type, JSON)
        if is_json:
            params[f"u{i}"] = [json_text(r[name]) for r in rows]
        else:
            params[f"u{i}"] = [r[name] for r in rows]
        arrays.append(bindparam(f"u{i}", type_=ARRAY(Text if is_json else col.type)))
    src = func.unnest(*arrays).table_valued(*names).render_derived(name="rows")
    picked = [
        cast(src.c[n], col.type) if isinstance(col.type, JSON) else src.c[n]
        for n, col in zip(names, columns, strict=True)
    ]
    return table.insert().from_select(names, select(*picked)), params
