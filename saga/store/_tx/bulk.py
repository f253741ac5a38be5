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
from sqlalchemy.dialects import postgresql, sqlite
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


@functools.cache
def rows_insert(table: Any, names: tuple[str, ...], *, postgres: bool, prefix: str = "u") -> Any:
    """The ``INSERT`` of many rows with these columns, built once per backend.

    PostgreSQL gets ONE ``INSERT ... SELECT FROM unnest(<one array per column>)``: an
    ``executemany`` is pipelined by asyncpg, but the server still runs every row as a
    statement of its own, and a multi-row ``VALUES`` list is a new statement to prepare
    for each batch size; arrays keep one prepared statement for any number of rows, run
    once per batch. Rows are inserted in the given order (``WITH ORDINALITY``), so
    serial ids follow it. JSON columns travel as text and are cast back. SQLite gets
    the dialect's plain ``INSERT`` for an ``executemany``.

    Either way it is the dialect's ``INSERT``, so callers can add ``on_conflict_*`` and
    ``returning``, and should keep what they build: SQLAlchemy works out a statement's
    cache key once per statement object, so a statement built anew for every batch
    pays for it every time. Execute it with :func:`rows_params` (the same ``prefix``: it
    names the arrays, so that several such statements can share one, see
    :mod:`saga.store._tx.combined`).
    """
    if not postgres:
        return sqlite.insert(table)
    columns = [table.c[n] for n in names]
    src = unnest_rows(columns, prefix=prefix, ordinal=True)
    picked = [
        cast(src.c[n], col.type) if isinstance(col.type, JSON) else src.c[n]
        for n, col in zip(names, columns, strict=True)
    ]
    query = select(*picked).order_by(src.c.ordinal)
    return postgresql.insert(table).from_select(list(names), query)


def unnest_rows(columns: Sequence[Any], *, prefix: str, ordinal: bool = False) -> Any:
    """PostgreSQL: ``unnest(:<prefix>0, :<prefix>1, ...)`` as a table of ``columns``' names.

    One array parameter per column (JSON columns as text arrays); with ``ordinal`` an
    ``ordinal`` column numbers the rows. Bind the arrays with :func:`rows_params`.
    """
    arrays = [
        bindparam(f"{prefix}{i}", type_=ARRAY(Text if isinstance(col.type, JSON) else col.type))
        for i, col in enumerate(columns)
    ]
    names = [col.name for col in columns]
    if ordinal:
        return (
            func.unnest(*arrays)
            .table_valued(*names, with_ordinality="ordinal")
            .render_derived(name=f"{prefix}rows")
        )
    return func.unnest(*arrays).table_valued(*names).render_derived(name=f"{prefix}rows")


def rows_params(
    table: Any,
    names: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    *,
    postgres: bool,
    prefix: str = "u",
) -> Any:
    """The parameters of :func:`rows_insert` (or :func:`unnest_rows`) for ``rows``.

    On PostgreSQL one array per column (named ``u0``, ``u1``, ... in column order for the
    default ``prefix``, JSON columns as text); on SQLite the rows themselves, for an
    ``executemany``. A name that is no column of ``table`` is bound as it is.
    """
    if not postgres:
        return list(rows)
    params: dict[str, Any] = {}
    for i, name in enumerate(names):
        column = table.c.get(name)
        if column is not None and isinstance(column.type, JSON):
            params[f"{prefix}{i}"] = [json_text(r[name]) for r in rows]
        else:
            params[f"{prefix}{i}"] = [r[name] for r in rows]
    return params
