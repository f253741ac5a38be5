"""Bulk statements that serve both backends, whatever the batch size.

Every write of a batch is one or a few statements, never a statement per row. Lists of
values go to PostgreSQL as arrays (``= ANY(:array)``, ``unnest``), whose SQL text is the
same for any number of values, so one prepared statement serves every batch; SQLite
gets ``IN`` lists cut to :data:`CHUNK` values, under its limit of bound parameters.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from sqlalchemy import JSON, ColumnElement, Text, any_, bindparam, cast, func, select
from sqlalchemy.dialects import postgresql
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
    once per batch. Rows are inserted in the given order (``WITH ORDINALITY``), so
    serial ids follow it. JSON columns travel as text and are cast back. Returns the
    statement (:func:`unnest_insert`) and its parameters (:func:`unnest_params`), for
    ``conn.execute(*insert_unnest(...))``.
    """
    names = tuple(rows[0])
    return unnest_insert(table, names), unnest_params(table, names, rows)


@functools.cache
def unnest_insert(table: Any, names: tuple[str, ...]) -> Any:
    """The statement of :func:`insert_unnest` for these columns, built once.

    PostgreSQL's ``INSERT``, so callers can add ``on_conflict_*`` and ``returning``
    (and should keep what they build: SQLAlchemy works out a statement's cache key once
    per statement object, so a statement built anew for every batch pays for it every
    time). The parameters are named ``u0``, ``u1``, ... in column order.
    """
    columns = [table.c[n] for n in names]
    arrays = [
        bindparam(f"u{i}", type_=ARRAY(Text if isinstance(col.type, JSON) else col.type))
        for i, col in enumerate(columns)
    ]
    src = (
        func.unnest(*arrays)
        .table_valued(*names, with_ordinality="ordinal")
        .render_derived(name="rows")
    )
    picked = [
        cast(src.c[n], col.type) if isinstance(col.type, JSON) else src.c[n]
        for n, col in zip(names, columns, strict=True)
    ]
    query = select(*picked).order_by(src.c.ordinal)
    return postgresql.insert(table).from_select(list(names), query)


def unnest_params(
    table: Any, names: Sequence[str], rows: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The arrays of :func:`unnest_insert`: one per column, JSON columns as text."""
    params: dict[str, Any] = {}
    for i, name in enumerate(names):
        if isinstance(table.c[name].type, JSON):
            params[f"u{i}"] = [json_text(r[name]) for r in rows]
        else:
            params[f"u{i}"] = [r[name] for r in rows]
    return params
