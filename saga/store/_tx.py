"""The statements of one coordinator batch, inside one database transaction.

Theory of operation
-------------------
:meth:`saga.store.SqlStore.transaction` opens the transaction (``BEGIN IMMEDIATE`` on
SQLite, so the write lock is taken up front; ``READ COMMITTED`` plus row locks on
PostgreSQL) and yields a :class:`SqlTransaction`. Each method is one or a few bulk
statements (``executemany`` / multi-row ``INSERT``), never a statement per ORM object.

Idempotency lives in the schema: inbox ids, outbox message ids, step
executions ``(saga, step, attempt, kind)``, timers ``(saga, kind, step, attempt)`` and
offsets ``(group, topic, partition)`` are unique keys, written with ``ON CONFLICT``
so a replayed batch writes nothing twice. Saga rows carry a revision: an update names
the revision it was computed from and fails with ``ConcurrencyConflict`` when the
stored one differs (a guard behind the row locks; it is what catches a writer that
skipped :meth:`SqlTransaction.load_sagas_for_update`).

Rows written by one call with the same natural key are merged first: PostgreSQL
refuses an ``ON CONFLICT DO UPDATE`` that touches one row twice in one statement.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    JSON,
    ColumnElement,
    Text,
    and_,
    any_,
    bindparam,
    cast,
    delete,
    func,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from saga.errors import ConcurrencyConflict, DuplicateMessage, SagaNotFound
from saga.store import _leases
from saga.store import tables as t
from saga.store._audit import GENESIS, normalize_detail, record_hash
from saga.store._errors import translate_errors
from saga.store._records import (
    AuditWrite,
    LockWrite,
    OutboxMessage,
    SagaRow,
    SagaStart,
    SagaWrite,
    StepExecutionWrite,
    TimerKey,
    TimerWrite,
    as_utc,
    as_utc_or_none,
)

CHUNK: Final = 500
"""Most values bound in one ``IN (...)`` list (SQLite limits bound parameters)."""

NOTIFY_CHANNEL: Final = "saga_outbox"
"""PostgreSQL channel the relays LISTEN on, per schema: ``saga_outbox.<current_schema()>``.

The payload names the outbox lane written, ``<owner_topic>:<shard>`` (``:`` never occurs
in a topic name), so only that lane's relay wakes; an empty payload wakes every relay."""


def lane_payload(owner_topic: str, shard: int) -> str:
    """The NOTIFY payload that wakes the relay of one outbox lane."""
    return f"{owner_topic}:{shard}"


async def notify_outbox(conn: AsyncConnection, lanes: Iterable[tuple[str, int]]) -> None:
    """Wake the relays of the given ``(owner_topic, shard)`` lanes when ``conn`` commits.

    PostgreSQL only (one channel per schema, so deployments and tests sharing a database
    in different schemas never wake each other's relays); a no-op elsewhere. One
    statement for all lanes (``pg_notify`` over an array of payloads): a batch that wrote
    to every shard pays one round trip, not one per shard.
    """
    if conn.dialect.name != "postgresql":
        return
    payloads = [lane_payload(owner_topic, shard) for owner_topic, shard in sorted(lanes)]
    if not payloads:
        return
    channel = func.concat(NOTIFY_CHANNEL + ".", func.current_schema())
    lane = (
        func.unnest(bindparam(None, payloads, type_=ARRAY(Text)))
        .table_valued("payload")
        .render_derived(name="lanes")
    )
    await conn.execute(select(func.pg_notify(channel, lane.c.payload)).select_from(lane))


async def outbox_channel(engine: AsyncEngine) -> str:
    """The NOTIFY channel of the engine's schema: ``saga_outbox.<current_schema()>``.

    :func:`notify_outbox` names it in SQL (``'saga_outbox.' || current_schema()``), so
    deployments (and tests) that share a database in different schemas never wake each
    other's relays; a relay LISTENs on this name.
    """
    with translate_errors("read the current schema"):
        async with engine.connect() as conn:
            schema = (await conn.execute(select(func.current_schema()))).scalar_one()
    return f"{NOTIFY_CHANNEL}.{schema}"


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
            params[f"u{i}"] = [json.dumps(r[name]) for r in rows]
        else:
            params[f"u{i}"] = [r[name] for r in rows]
        arrays.append(bindparam(f"u{i}", type_=ARRAY(Text if is_json else col.type)))
    src = func.unnest(*arrays).table_valued(*names).render_derived(name="rows")
    picked = [
        cast(src.c[n], col.type) if isinstance(col.type, JSON) else src.c[n]
        for n, col in zip(names, columns, strict=True)
    ]
    return table.insert().from_select(names, select(*picked)), params


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

_DELETE_TIMER = delete(t.timers).where(
    t.timers.c.saga_id == bindparam("b_saga_id"),
    t.timers.c.kind == bindparam("b_kind"),
    t.timers.c.step == bindparam("b_step"),
    t.timers.c.attempt == bindparam("b_attempt"),
)

_NOT_ACTIVE: Final = ("completed", "compensated", "aborted")
"""Terminal saga statuses (mirrors ``saga.engine.TERMINAL``; the store does not import it)."""


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


SAGA_COLUMNS: Final = (
    *(c for c in t.sagas.c if c.name != "state"),
    cast(t.sagas.c.state, Text).label("state"),
)
"""The columns :func:`saga_row` reads: the state comes as JSON text, left undecoded."""


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


class SqlTransaction:
    """The statements of one batch, all inside one database transaction.

    Get one from :meth:`saga.store.SqlStore.transaction`; do not keep it after the
    ``async with`` block. ``conn`` is the underlying connection, for the store's own
    helpers and tests.
    """

    def __init__(self, conn: AsyncConnection, *, clock: Callable[[], datetime]) -> None:
        self.conn = conn
        self.dialect = conn.dialect.name
        self._clock = clock
        self._notified: set[tuple[str, int]] = set()
        # Revisions of the saga rows this transaction holds locked (loaded FOR UPDATE,
        # or anything on SQLite, whose transaction holds the database write lock): no
        # other writer can change them before commit, so they need no second look.
        self._locked: dict[str, int] = {}

    @property
    def postgres(self) -> bool:
        """Whether the backend is PostgreSQL (row locks, ``SKIP LOCKED``, ``NOTIFY``)."""
        return self.dialect == "postgresql"

    def insert(self, table: Any) -> Any:
        """The dialect's ``INSERT`` (it has ``on_conflict_do_nothing/_update``)."""
        return (postgresql.insert if self.postgres else sqlite.insert)(table)

    def now(self) -> datetime:
        """The store clock, in UTC."""
        return as_utc(self._clock())

    # -- locks ---------------------------------------------------------------------------

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

    # -- starting ------------------------------------------------------------------------

    async def start_saga(self, start: SagaStart) -> tuple[str, bool]:
        """Insert a new saga and its first writes, unless a saga has the key already.

        Returns:
            ``(saga_id, created)``: the existing saga's id and ``False`` when a saga was
            started with the same idempotency key before (then nothing is written).

        Raises:
            DuplicateMessage: A saga with this id exists (and the key does not match one).
            ConcurrencyConflict: A concurrent start with the same key committed first.
        """
        saga, key = start.saga, start.key
        sagas = t.sagas.c
        with translate_errors("start saga", saga_id=saga.saga_id):
            cond = sagas.id == saga.saga_id
            if key is not None:
                cond = or_(cond, sagas.idempotency_key == key)
            found = (
                await self.conn.execute(select(sagas.id, sagas.idempotency_key).where(cond))
            ).all()
        for row in found:
            if key is not None and row.idempotency_key == key:
                return str(row.id), False
        if found:
            raise DuplicateMessage(f"saga {saga.saga_id} exists already", saga_id=saga.saga_id)
        if saga.idempotency_key != key:
            saga = replace(saga, idempotency_key=key)
        await self.insert_sagas([saga])
        await self.record_steps(start.steps)
        await self.enqueue(start.outbox)
        await self.set_timers(start.timers)
        await self.append_audit(start.audit)
        await self.apply_locks(start.locks)
        return saga.saga_id, True

    # -- inbox ---------------------------------------------------------------------------

    async def claim_message_ids(self, ids: Sequence[str]) -> list[str]:
        """Add message ids to the inbox; returns those that were new.

        The result keeps the given order, without repeats. One ``INSERT ... ON CONFLICT
        DO NOTHING RETURNING`` statement both checks and records them: rolled back with
        the transaction, the ids count as unseen again.
        """
        unique = list(dict.fromkeys(ids))
        if not unique:
            return []
        at = self.now()
        stmt = (
            self.insert(t.inbox)
            .on_conflict_do_nothing(index_elements=["message_id"])
            .returning(t.inbox.c.message_id)
        )
        with translate_errors("claim message ids", integrity=DuplicateMessage):
            result = await self.conn.execute(
                stmt, [{"message_id": i, "received_at": at} for i in unique]
            )
            new = set(result.scalars())
        return [i for i in unique if i in new]

    async def release_message_ids(self, ids: Sequence[str]) -> None:
        """Take message ids out of the inbox again (messages this batch dead-lettered).

        A dead letter that is replayed after its cause was fixed (a definition deployed,
        a saga restored) must not be taken for a duplicate. A redelivery of the record
        itself is harmless: its dead letter has a deterministic id and is written once.
        """
        if not ids:
            return
        with translate_errors("release message ids"):
            for cond in any_of(t.inbox.c.message_id, list(ids), postgres=self.postgres):
                await self.conn.execute(delete(t.inbox).where(cond))

    # -- sagas ---------------------------------------------------------------------------

    async def load_sagas_for_update(self, saga_ids: Sequence[str]) -> dict[str, SagaRow]:
        """Load sagas in id order, locking them on PostgreSQL (``SELECT ... FOR UPDATE``).

        Locking in id order keeps two coordinators from deadlocking; on SQLite the
        transaction holds the database write lock already.
        """
        found: dict[str, SagaRow] = {}
        with translate_errors("load sagas"):
            for cond in any_of(t.sagas.c.id, sorted(set(saga_ids)), postgres=self.postgres):
                stmt = select(*SAGA_COLUMNS).where(cond).order_by(t.sagas.c.id)
                if self.postgres:
                    stmt = stmt.with_for_update()
                for r in await self.conn.execute(stmt):
                    found[r.id] = saga_row(r)
                    self._locked[r.id] = r.revision
        return found

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
        updates = [w for w in writes if w.expected_revision is not None]
        if not updates:
            return
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
            result = await self.conn.execute(
                _UPDATE_SAGA,
                [
                    {
                        "b_id": w.saga_id,
                        "b_expected": w.expected_revision,
                        "b_status": w.status,
                        "b_context": w.context,
                        "b_state": w.state,
                        "b_revision": w.revision,
                        "b_correlation_id": w.correlation_id,
                        "b_deadline_at": as_utc_or_none(w.deadline_at),
                        "b_updated_at": as_utc(w.updated_at),
                    }
                    for w in updates
                ],
            )
            if self.conn.dialect.supports_sane_multi_rowcount and result.rowcount != len(updates):
                raise ConcurrencyConflict(
                    f"{len(updates) - result.rowcount} saga update(s) matched no row"
                )

    async def record_steps(self, writes: Sequence[StepExecutionWrite]) -> None:
        """Upsert step executions on ``(saga_id, step, attempt, kind)``.

        A later write of a key replaces status, finish time and error; the start time
        of the first write is kept.
        """
        if not writes:
            return
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
        stmt = self.insert(t.step_executions)
        stmt = stmt.on_conflict_do_update(
            index_elements=["saga_id", "step", "attempt", "kind"],
            set_={
                "status": stmt.excluded.status,
                "finished_at": stmt.excluded.finished_at,
                "error_code": stmt.excluded.error_code,
                "error_message": stmt.excluded.error_message,
            },
        )
        with translate_errors("record step executions"):
            await self.conn.execute(stmt, list(merged.values()))

    # -- outbox --------------------------------------------------------------------------

    async def enqueue(self, messages: Sequence[OutboxMessage]) -> None:
        """Append messages to the outbox; ids are assigned in the given order.

        A message id that is stored already (or repeated in ``messages``) with the same
        topic and key is a real duplicate (a replayed timer or dead letter) and is
        skipped. On PostgreSQL the relay of each written ``(owner_topic, shard)`` is woken
        (:func:`notify_outbox`), delivered at commit.

        Raises:
            DuplicateMessage: The id is taken by a message for another topic or key.
        """
        unique: dict[str, OutboxMessage] = {}
        for m in messages:
            earlier = unique.setdefault(m.message_id, m)
            if (earlier.topic, earlier.key) != (m.topic, m.key):
                raise _not_a_duplicate(m.message_id)
        if not unique:
            return
        with translate_errors("enqueue", integrity=DuplicateMessage):
            at = self.now()
            stmt = (
                self.insert(t.outbox)
                .on_conflict_do_nothing(index_elements=["message_id"])
                .returning(t.outbox.c.message_id)
            )
            result = await self.conn.execute(
                stmt,
                [
                    {
                        "message_id": m.message_id,
                        "topic": m.topic,
                        "key": m.key,
                        "headers": [[k, v] for k, v in m.headers],
                        "payload": m.payload,
                        "owner_topic": m.owner_topic,
                        "shard": m.shard,
                        "created_at": at,
                        "published_at": None,
                    }
                    for m in unique.values()
                ],
            )
            inserted = set(result.scalars())
            # The ids skipped were stored already: fine if it is the same message again.
            await self._check_duplicates([m for i, m in unique.items() if i not in inserted])
            if self.postgres:
                written = {(m.owner_topic, m.shard) for i, m in unique.items() if i in inserted}
                await notify_outbox(self.conn, written - self._notified)
                self._notified |= written

    async def _check_duplicates(self, skipped: Sequence[OutboxMessage]) -> None:
        """Raise unless every skipped message matches the stored one's topic and key."""
        wanted = {m.message_id: m for m in skipped}
        for cond in any_of(t.outbox.c.message_id, list(wanted), postgres=self.postgres):
            rows = await self.conn.execute(
                select(t.outbox.c.message_id, t.outbox.c.topic, t.outbox.c.key).where(cond)
            )
            for r in rows:
                m = wanted[r.message_id]
                stored_key = bytes(r.key) if r.key is not None else None
                if (r.topic, stored_key) != (m.topic, m.key):
                    raise _not_a_duplicate(m.message_id)

    # -- timers --------------------------------------------------------------------------

    async def set_timers(self, timers: Sequence[TimerWrite]) -> None:
        """Set timers; an existing ``(saga, kind, step, attempt)`` gets the new due time."""
        merged = {(x.saga_id, x.kind, x.step, x.attempt): x for x in timers}
        if not merged:
            return
        stmt = self.insert(t.timers)
        stmt = stmt.on_conflict_do_update(
            index_elements=["saga_id", "kind", "step", "attempt"],
            set_={"due_at": stmt.excluded.due_at},
        )
        with translate_errors("set timers"):
            await self.conn.execute(
                stmt,
                [
                    {
                        "saga_id": x.saga_id,
                        "kind": x.kind,
                        "step": x.step,
                        "attempt": x.attempt,
                        "due_at": as_utc(x.due_at),
                    }
                    for x in merged.values()
                ],
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

    # -- audit ---------------------------------------------------------------------------

    async def append_audit(self, writes: Sequence[AuditWrite]) -> None:
        """Append records to each saga's hash chain, in the given order.

        One query finds the last record of every saga in the batch. On PostgreSQL the
        saga rows this transaction has not locked yet are locked first (in id order) so
        concurrent appenders queue instead of failing; if they still race,
        ``(saga_id, seq)`` is unique and the loser gets ``ConcurrencyConflict``.
        """
        if not writes:
            return
        saga_ids = sorted({w.saga_id for w in writes})
        heads: dict[str, tuple[int, str]] = {}
        with translate_errors("append audit records"):
            unlocked = [i for i in saga_ids if i not in self._locked]
            if self.postgres and unlocked:
                for cond in any_of(t.sagas.c.id, unlocked, postgres=True):
                    await self.conn.execute(
                        select(t.sagas.c.id).where(cond).order_by(t.sagas.c.id).with_for_update()
                    )
            for stmt in self._audit_heads(saga_ids):
                heads.update({r.saga_id: (r.seq, r.hash) for r in await self.conn.execute(stmt)})
            values = []
            for w in writes:
                seq, prev = heads.get(w.saga_id, (0, GENESIS))
                seq += 1
                at = as_utc(w.recorded_at)
                detail = normalize_detail(w.detail)
                digest = record_hash(
                    prev,
                    saga_id=w.saga_id,
                    seq=seq,
                    recorded_at=at,
                    kind=w.kind,
                    step=w.step,
                    attempt=w.attempt,
                    actor=w.actor,
                    detail=detail,
                )
                heads[w.saga_id] = (seq, digest)
                values.append(
                    {
                        "saga_id": w.saga_id,
                        "seq": seq,
                        "recorded_at": at,
                        "kind": w.kind,
                        "step": w.step,
                        "attempt": w.attempt,
                        "actor": w.actor,
                        "detail": detail,
                        "prev_hash": prev,
                        "hash": digest,
                    }
                )
            if self.postgres:
                await self.conn.execute(*insert_unnest(t.audit_log, values))
            else:
                await self.conn.execute(t.audit_log.insert(), values)

    def _audit_heads(self, saga_ids: Sequence[str]) -> Iterable[Any]:
        """Queries for the last audit record (saga_id, seq, hash) of each saga."""
        a = t.audit_log
        if self.postgres:
            # One backward index scan per saga (LATERAL ... LIMIT 1): cheaper than a
            # GROUP BY over every record of the batch's sagas.
            ids = (
                func.unnest(bindparam(None, list(saga_ids), type_=ARRAY(a.c.saga_id.type)))
                .table_valued("saga_id")
                .render_derived(name="ids")
            )
            head = (
                select(a.c.seq, a.c.hash)
                .where(a.c.saga_id == ids.c.saga_id)
                .order_by(a.c.seq.desc())
                .limit(1)
                .lateral("head")
            )
            yield select(ids.c.saga_id, head.c.seq, head.c.hash).select_from(ids.join(head, true()))
            return
        for chunk in chunks(saga_ids):
            last = (
                select(a.c.saga_id, func.max(a.c.seq).label("seq"))
                .where(a.c.saga_id.in_(chunk))
                .group_by(a.c.saga_id)
                .subquery()
            )
            yield select(a.c.saga_id, a.c.seq, a.c.hash).join(
                last, and_(a.c.saga_id == last.c.saga_id, a.c.seq == last.c.seq)
            )

    # -- offsets -------------------------------------------------------------------------

    async def commit_offsets(
        self,
        group_id: str,
        topic: str,
        offsets: Mapping[int, int],
        epochs: Mapping[int, int],
    ) -> None:
        """Store the next offsets of ``topic``'s partitions, fenced by the owner epochs.

        Raises:
            PartitionFenced: Another member claimed a partition since (see
                :func:`saga.store.commit_offsets`); roll the transaction back.
        """
        with translate_errors("store offsets"):
            await _leases.commit_offsets(self.conn, group_id, topic, offsets, epochs)

    # -- used by the store's own helpers -------------------------------------------------

    async def saga_ids_with_deferred(self, participant: str, limit: int) -> list[str]:
        """Active sagas holding a command or compensation deferred for ``participant``."""
        stmt = (
            select(t.audit_log.c.saga_id, t.audit_log.c.detail, t.sagas.c.state)
            .join(t.sagas, t.sagas.c.id == t.audit_log.c.saga_id)
            .where(
                t.audit_log.c.kind.in_(("command.deferred", "compensation.deferred")),
                t.sagas.c.status.not_in(_NOT_ACTIVE),
            )
            .order_by(t.audit_log.c.saga_id)
        )
        found: list[str] = []
        with translate_errors("find deferred commands"):
            for r in await self.conn.execute(stmt):
                if found and found[-1] == r.saga_id:
                    continue
                if (r.detail or {}).get("participant") != participant:
                    continue
                steps = (r.state or {}).get("steps", {})
                if any(s.get("deferred") or s.get("compensation_deferred") for s in steps.values()):
                    found.append(r.saga_id)
                    if len(found) >= limit:
                        break
        return found


def _not_a_duplicate(message_id: str) -> DuplicateMessage:
    return DuplicateMessage(
        f"outbox message id {message_id} is taken by a message for another topic or key",
        message_id=message_id,
    )
