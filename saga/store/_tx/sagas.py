"""Saga rows and step executions, written by one batch.

Saga rows carry a revision: an update names the revision it was computed from and
fails with ``ConcurrencyConflict`` when the stored one differs (a guard behind the row
locks; it is what catches a writer that skipped
:meth:`SagaWrites.load_sagas_for_update`). Step executions are upserted on their
natural key ``(saga, step, attempt, kind)``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any, Final

from sqlalchemy import Integer, Text, any_, bindparam, cast, column, select, true, update
from sqlalchemy.dialects.postgresql import ARRAY

from saga.errors import ConcurrencyConflict, SagaNotFound
from saga.store import tables as t
from saga.store._errors import translate_errors
from saga.store._records import (
    SagaRow,
    SagaWrite,
    StepExecutionWrite,
    as_utc,
    as_utc_or_none,
)
from saga.store._tx.bulk import any_of, rows_insert, rows_params, unnest_rows
from saga.store._tx.connection import TxConnection

_UPDATE_SAGA = (
    update(t.sagas)
    .where(t.sagas.c.id == bindparam("b_id"), t.sagas.c.revision == bindparam("b_expected"))
    .values(
        status=bindparam("b_status", type_=t.sagas.c.status.type),
        context=bindparam("b_context", type_=t.sagas.c.context.type),
        state=bindparam("b_state", type_=t.sagas.c.state.type),
        revision=bindparam("b_revision", type_=t.sagas.c.revision.type),
        correlation_id=bindparam("b_correlation_id", type_=t.sagas.c.correlation_id.type),
        deadline_at=bindparam("b_deadline_at", type_=t.sagas.c.deadline_at.type),
        updated_at=bindparam("b_updated_at", type_=t.sagas.c.updated_at.type),
    )
)
"""One ``executemany`` UPDATE for all saga writes of a batch (optimistic check included)."""


SAGA_COLUMNS: Final = (
    *(c for c in t.sagas.c if c.name != "state"),
    cast(t.sagas.c.state, Text).label("state"),
)
"""The columns :func:`saga_row` reads: the state comes as JSON text, left undecoded."""


def _load_for_update() -> Any:
    a = t.audit_log.c
    head = (
        select(a.seq.label("audit_seq"), a.hash.label("audit_hash"))
        .where(a.saga_id == t.sagas.c.id)
        .order_by(a.seq.desc())
        .limit(1)
        .lateral("audit_head")
    )
    return (
        select(*SAGA_COLUMNS, head.c.audit_seq, head.c.audit_hash)
        .select_from(t.sagas.outerjoin(head, true()))
        .where(t.sagas.c.id == any_(bindparam("ids", type_=ARRAY(t.sagas.c.id.type))))
        .order_by(t.sagas.c.id)
        .with_for_update(of=t.sagas)
    )


_LOAD_FOR_UPDATE: Final = _load_for_update()
"""PostgreSQL: load and lock the sagas ``ids`` in id order, each with the last record of
its audit chain (one backward index scan each), which an append needs next: one round
trip instead of two (one statement object, built once)."""


def saga_row(r: Any) -> SagaRow:
    """A :class:`SagaRow` from a result row of the ``sagas`` table."""
    return SagaRow(
        saga_id=r.id,
        saga_type=r.saga_type,
        saga_version=r.saga_version,
        status=r.status,
        context=r.context,
        state_json=r.state,
        revision=r.revision,
        idempotency_key=r.idempotency_key,
        correlation_id=r.correlation_id,
        deadline_at=as_utc_or_none(r.deadline_at),
        created_at=as_utc(r.created_at),
        updated_at=as_utc(r.updated_at),
    )


def saga_values(w: SagaWrite) -> dict[str, Any]:
    """Column values of a new saga row."""
    return {
        "id": w.saga_id,
        "saga_type": w.saga_type,
        "saga_version": w.saga_version,
        "status": w.status,
        "context": w.context,
        "state": w.state,
        "revision": w.revision,
        "idempotency_key": w.idempotency_key,
        "correlation_id": w.correlation_id,
        "deadline_at": as_utc_or_none(w.deadline_at),
        "created_at": as_utc(w.created_at),
        "updated_at": as_utc(w.updated_at),
    }


@functools.cache
def upsert_steps(names: tuple[str, ...], *, postgres: bool, prefix: str = "u") -> Any:
    """Step executions upserted on their natural key (built once per backend)."""
    insert = rows_insert(t.step_executions, names, postgres=postgres, prefix=prefix)
    return insert.on_conflict_do_update(
        index_elements=["saga_id", "step", "attempt", "kind"],
        set_={
            "status": insert.excluded.status,
            "finished_at": insert.excluded.finished_at,
            "error_code": insert.excluded.error_code,
            "error_message": insert.excluded.error_message,
        },
    )


class SagaWrites(TxConnection):
    """Loading, inserting and updating saga rows; recording step executions."""

    async def load_sagas_for_update(self, saga_ids: Sequence[str]) -> dict[str, SagaRow]:
        """Load sagas in id order, locking them on PostgreSQL (``SELECT ... FOR UPDATE``).

        Locking in id order keeps two coordinators from deadlocking; on SQLite the
        transaction holds the database write lock already.
        """
        found: dict[str, SagaRow] = {}
        ids = sorted(set(saga_ids))
        with translate_errors("load sagas"):
            for stmt, params in self._load_queries(ids):
                for r in await self.conn.execute(stmt, params):
                    found[r.id] = saga_row(r)
                    self._locked[r.id] = r.revision
                    if self.postgres:
                        # Locked, so no other writer extends the chain before commit.
                        self._audit_heads[r.id] = (
                            (r.audit_seq, r.audit_hash) if r.audit_seq is not None else None
                        )
        return found

    def _load_queries(self, ids: list[str]) -> Iterable[tuple[Any, dict[str, Any]]]:
        """Queries (and their parameters) that load the sagas ``ids`` in id order."""
        if self.postgres:
            if ids:
                yield _LOAD_FOR_UPDATE, {"ids": ids}
            return
        for cond in any_of(t.sagas.c.id, ids, postgres=False):
            yield select(*SAGA_COLUMNS).where(cond).order_by(t.sagas.c.id), {}

    async def insert_sagas(self, writes: Sequence[SagaWrite]) -> None:
        """Insert new sagas.

        Raises:
            ConcurrencyConflict: A saga with the same id or idempotency key exists.
        """
        if not writes:
            return
        with translate_errors("insert sagas", integrity=ConcurrencyConflict):
            await self.conn.execute(t.sagas.insert(), [saga_values(w) for w in writes])
        # Rows inserted by this transaction are invisible (and so locked) to others.
        self._locked.update({w.saga_id: w.revision for w in writes})

    async def save_sagas(self, writes: Sequence[SagaWrite]) -> None:
        """Insert new sagas and update the others if their revision is the expected one.

        The stored revisions are compared before one ``executemany`` UPDATE, which
        checks them again. Rows this transaction locked already (with
        :meth:`load_sagas_for_update`) are compared with the revision they were loaded
        at; the others are read (and locked on PostgreSQL) in one query first.

        Raises:
            ConcurrencyConflict: A stored revision is not the expected one (or a new
                saga exists already). Let it propagate out of the transaction block:
                the whole batch is rolled back.
            SagaNotFound: A saga to update does not exist.
        """
        await self.insert_sagas([w for w in writes if w.expected_revision is None])
        updates = await self.checked_updates(writes)
        if not updates:
            return
        with translate_errors("save sagas"):
            result = await self.conn.execute(_UPDATE_SAGA, [_update_params(w) for w in updates])
            if self.conn.dialect.supports_sane_multi_rowcount and result.rowcount != len(updates):
                raise ConcurrencyConflict(
                    f"{len(updates) - result.rowcount} saga update(s) matched no row"
                )

    async def checked_updates(self, writes: Sequence[SagaWrite]) -> list[SagaWrite]:
        """The updates among ``writes``, once their expected revisions are checked.

        Rows this transaction locked already are compared with the revision they were
        loaded at; the others are read (and locked on PostgreSQL) in one query first.

        Raises:
            ConcurrencyConflict: A stored revision is not the expected one.
            SagaNotFound: A saga to update does not exist.
        """
        updates = [w for w in writes if w.expected_revision is not None]
        if not updates:
            return []
        with translate_errors("save sagas"):
            stored = {
                w.saga_id: self._locked[w.saga_id] for w in updates if w.saga_id in self._locked
            }
            unlocked = sorted({w.saga_id for w in updates} - stored.keys())
            for cond in any_of(t.sagas.c.id, unlocked, postgres=self.postgres):
                stmt = select(t.sagas.c.id, t.sagas.c.revision).where(cond).order_by(t.sagas.c.id)
                if self.postgres:
                    stmt = stmt.with_for_update()
                for r in await self.conn.execute(stmt):
                    stored[r.id] = self._locked[r.id] = r.revision
            for w in updates:
                have = stored.get(w.saga_id)
                if have is None:
                    raise SagaNotFound(f"saga {w.saga_id} does not exist", saga_id=w.saga_id)
                if have != w.expected_revision:
                    raise ConcurrencyConflict(
                        f"saga {w.saga_id} is at revision {have}, "
                        f"not {w.expected_revision}: another writer changed it first",
                        saga_id=w.saga_id,
                    )
                # A second write of it in this call (or a later call) follows this one.
                stored[w.saga_id] = self._locked[w.saga_id] = w.revision
        return updates

    async def record_steps(self, writes: Sequence[StepExecutionWrite]) -> None:
        """Upsert step executions on ``(saga_id, step, attempt, kind)``.

        A later write of a key replaces status, finish time and error; the start time
        of the first write is kept.
        """
        rows = step_rows(writes)
        if not rows:
            return
        with translate_errors("record step executions"):
            names = tuple(rows[0])
            await self.conn.execute(
                upsert_steps(names, postgres=self.postgres),
                rows_params(t.step_executions, names, rows, postgres=self.postgres),
            )


def _update_params(w: SagaWrite) -> dict[str, Any]:
    """The parameters of :data:`_UPDATE_SAGA` for ``w``."""
    return {f"b_{name}": value for name, value in update_row(w).items()}


UPDATE_COLUMNS: Final = (
    "id",
    "expected",
    "status",
    "context",
    "state",
    "revision",
    "correlation_id",
    "deadline_at",
    "updated_at",
)
"""The arrays of :func:`update_sagas_unnest`, in order."""


def update_row(w: SagaWrite) -> dict[str, Any]:
    """The values of a saga update, by the names of :data:`UPDATE_COLUMNS`."""
    return {
        "id": w.saga_id,
        "expected": w.expected_revision,
        "status": w.status,
        "context": w.context,
        "state": w.state,
        "revision": w.revision,
        "correlation_id": w.correlation_id,
        "deadline_at": as_utc_or_none(w.deadline_at),
        "updated_at": as_utc(w.updated_at),
    }


def update_rows(updates: Sequence[SagaWrite]) -> list[dict[str, Any]]:
    """The rows of :func:`update_sagas_unnest` for ``updates``."""
    return [update_row(w) for w in updates]


@functools.cache
def update_sagas_unnest(prefix: str) -> Any:
    """PostgreSQL: every saga update of a batch as ONE ``UPDATE ... FROM unnest(...)``.

    A row is updated only at its expected revision, so a caller compares the rows it
    updated with the updates it made (one saga at most once).
    """
    s = t.sagas.c
    columns = [s.id, column("expected", Integer), *(s[n] for n in UPDATE_COLUMNS[2:])]
    src = unnest_rows(columns, prefix=prefix)
    return (
        update(t.sagas)
        .where(s.id == src.c.id, s.revision == src.c.expected)
        .values(
            status=src.c.status,
            context=cast(src.c.context, s.context.type),
            state=cast(src.c.state, s.state.type),
            revision=src.c.revision,
            correlation_id=src.c.correlation_id,
            deadline_at=src.c.deadline_at,
            updated_at=src.c.updated_at,
        )
    )


def step_rows(writes: Sequence[StepExecutionWrite]) -> list[dict[str, Any]]:
    """The rows of :func:`upsert_steps`: one per natural key, the later write winning.

    A later write of a key replaces status, finish time and error; the start time of the
    first write is kept (PostgreSQL refuses an upsert that touches one row twice).
    """
    if not writes:
        return []
    merged: dict[tuple[str, str, int, str], dict[str, Any]] = {}
    for w in writes:
        key = (w.saga_id, w.step, w.attempt, w.kind)
        first = merged.get(key)
        merged[key] = {
            "saga_id": w.saga_id,
            "step": w.step,
            "attempt": w.attempt,
            "kind": w.kind,
            "status": w.status,
            "started_at": first["started_at"] if first else as_utc(w.started_at),
            "finished_at": as_utc_or_none(w.finished_at),
            "error_code": w.error_code,
            "error_message": w.error_message,
        }
    return list(merged.values())
