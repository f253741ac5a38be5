"""The saga store: SQLAlchemy Core over SQLite or PostgreSQL.

Theory of operation
-------------------
ONE class, :class:`SqlStore`, serves both backends. The few places where they differ
are chosen by ``engine.dialect.name`` in :class:`saga.store.SqlTransaction`: row locks
(``FOR UPDATE``, ``FOR UPDATE SKIP LOCKED``), ``NOTIFY``, and the dialect's ``INSERT ...
ON CONFLICT``. (Two subclasses would have split about ten lines; one class keeps the
contract suite honest about there being one behaviour.)

The store does not own the engine: whoever made it with :func:`saga.store.create_engine`
disposes of it. Every method translates database errors into :mod:`saga.errors` (see
``_errors.py``); a database that cannot be reached raises ``StoreUnavailable``.

Writes outside a coordinator batch (starting a saga, firing timers, registering a
definition, pruning) are each one transaction of their own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, and_, bindparam, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from saga.errors import ConcurrencyConflict, DefinitionConflict
from saga.lifecycle import utc_now
from saga.store import _leases
from saga.store import tables as t
from saga.store._engine import single_statement_engine
from saga.store._errors import translate_errors
from saga.store._protocol import Cursor
from saga.store._records import (
    AuditRecord,
    OutboxMessage,
    SagaRow,
    SagaStart,
    StepExecutionRow,
    TimerRow,
    as_utc,
    as_utc_or_none,
)
from saga.store._tx import SqlTransaction
from saga.store._tx.sagas import SAGA_COLUMNS, saga_row

_DUE_TIMERS = (
    select(t.timers)
    .where(t.timers.c.due_at <= bindparam("now", type_=t.UtcDateTime))
    .order_by(t.timers.c.due_at, t.timers.c.id)
    .limit(bindparam("limit", type_=Integer))
)
"""Timers due at ``:now``, oldest first (built once: the timer loop runs it ten times a second)."""
_DUE_TIMERS_SKIP_LOCKED = _DUE_TIMERS.with_for_update(skip_locked=True)
"""PostgreSQL: the same, claimed ``FOR UPDATE SKIP LOCKED`` (concurrent loops never share one)."""
_NEXT_TIMER_DUE = select(func.min(t.timers.c.due_at))
"""The due time of the earliest timer (the ``due_at`` index answers it)."""


class SqlStore:
    """The saga store on SQLite or PostgreSQL (see the module docstring).

    Args:
        engine: From :func:`saga.store.create_engine`; the schema must be migrated
            (:func:`saga.store.upgrade`). The caller disposes of it.
        clock: Time source for bookkeeping columns (inbox ``received_at``, outbox
            ``created_at``, definition ``registered_at``). Defaults to UTC wall time.
    """

    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], datetime] = utc_now) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._clock = clock
        self._timer_listeners: list[Callable[[datetime], None]] = []
        self._single = single_statement_engine(engine)

    def __repr__(self) -> str:
        return f"SqlStore({self.engine.url.render_as_string(hide_password=True)!r})"

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqlTransaction]:
        """One database transaction; committed when the block ends, rolled back on error.

        On SQLite the transaction starts with ``BEGIN IMMEDIATE`` (see ``create_engine``),
        so concurrent writers queue at the start instead of failing half-way.

        Raises:
            StoreUnavailable: The database cannot be reached (at begin or commit).
        """
        with translate_errors("transaction"):
            async with self.engine.begin() as conn:
                tx = SqlTransaction(conn, clock=self._clock)
                yield tx
        # Committed: the timer loops of this process learn of timers due earlier than
        # they planned to look (see on_timers_set).
        if tx.earliest_timer is not None:
            for listener in list(self._timer_listeners):
                listener(tx.earliest_timer)

    def on_timers_set(self, listener: Callable[[datetime], None]) -> Callable[[], None]:
        """Call ``listener(earliest due time)`` after each commit that set timers.

        Only transactions of this store object are seen: timers set by other processes
        are found by the timer loop's own polls.

        Returns:
            A function that removes the listener.
        """
        self._timer_listeners.append(listener)
        return lambda: self._timer_listeners.remove(listener)

    @asynccontextmanager
    async def _read(self, operation: str) -> AsyncIterator[AsyncConnection]:
        with translate_errors(operation):
            async with self.engine.connect() as conn:
                yield conn

    # -- partitions -----------------------------------------------------------------------

    async def partition_count(self, topic: str) -> int | None:
        """How many partitions of ``topic`` are registered (``None``: none yet)."""
        async with self._read("read partition count") as conn:
            return await _leases.partition_count(conn, topic)

    async def register_partitions(self, group_id: str, topic: str, partitions: int) -> None:
        """Record that ``topic`` has ``partitions`` partitions, consumed by ``group_id``."""
        async with self.transaction() as tx:
            with translate_errors("register partitions"):
                await _leases.check_single_group(tx.conn, group_id, topic)
                await _leases.register_partitions(tx.conn, group_id, topic, partitions)

    # -- definitions ---------------------------------------------------------------------

    async def register_definition(
        self, name: str, version: int, content_hash: str, body: dict[str, Any]
    ) -> None:
        """Register a definition; the same content hash again is a no-op.

        Raises:
            DefinitionConflict: Another hash is registered under this name and version
                (a changed definition needs a new version).
        """
        c = t.definitions.c
        async with self.transaction() as tx:
            stmt = tx.insert(t.definitions).on_conflict_do_nothing(
                index_elements=["name", "version"]
            )
            with translate_errors("register definition"):
                await tx.conn.execute(
                    stmt,
                    {
                        "name": name,
                        "version": version,
                        "content_hash": content_hash,
                        "body": body,
                        "registered_at": tx.now(),
                    },
                )
                stored = (
                    await tx.conn.execute(
                        select(c.content_hash).where(c.name == name, c.version == version)
                    )
                ).scalar_one()
        if stored != content_hash:
            raise DefinitionConflict(
                f"definition {name} v{version} is registered with hash {stored}, "
                f"this one has hash {content_hash}: a changed definition needs a new version"
            )

    async def load_definition(self, name: str, version: int) -> tuple[str, dict[str, Any]] | None:
        """``(content_hash, body)`` of a registered definition, or ``None``."""
        c = t.definitions.c
        async with self._read("load definition") as conn:
            r = (
                await conn.execute(
                    select(c.content_hash, c.body).where(c.name == name, c.version == version)
                )
            ).first()
            return None if r is None else (r.content_hash, r.body)

    async def list_definitions(self) -> list[tuple[str, int]]:
        """``(name, version)`` of every registered definition, sorted."""
        c = t.definitions.c
        async with self._read("list definitions") as conn:
            rows = await conn.execute(select(c.name, c.version).order_by(c.name, c.version))
            return [(r.name, r.version) for r in rows]

    # -- sagas ---------------------------------------------------------------------------

    async def start_saga(self, start: SagaStart) -> tuple[str, bool]:
        """Insert a new saga and its first writes in ONE transaction.

        Returns:
            ``(saga_id, created)``. A start retried with a known idempotency key returns
            the existing saga's id and ``False`` and writes nothing.

        Raises:
            DuplicateMessage: A saga with this id exists (and the key does not match one).
        """
        try:
            async with self.transaction() as tx:
                return await tx.start_saga(start)
        except ConcurrencyConflict:
            # A concurrent start with the same key committed first (PostgreSQL).
            key = start.key
            if key is not None and (existing := await self._saga_id_for_key(key)) is not None:
                return existing, False
            raise

    async def lock_state(self, key: str, saga_id: str) -> tuple[str | None, int | None]:
        """The saga holding a lock key, and ``saga_id``'s place in its queue.

        The place is 1 for the next saga to get the key, ``None`` when it is not waiting.
        """
        w = t.lock_waiters.c
        async with self._read("read a lock") as conn:
            holder = (
                await conn.execute(select(t.locks.c.holder).where(t.locks.c.lock_key == key))
            ).scalar_one_or_none()
            mine = (
                await conn.execute(select(w.id).where(w.saga_id == saga_id))
            ).scalar_one_or_none()
            if mine is None:
                return holder, None
            ahead = (
                await conn.execute(
                    select(func.count())
                    .select_from(t.lock_waiters)
                    .where(w.lock_key == key, w.id <= mine)
                )
            ).scalar_one()
            return holder, int(ahead)

    async def saga_id_for_key(self, key: str) -> str | None:
        """The id of the saga started with an idempotency key, or ``None``."""
        return await self._saga_id_for_key(key)

    async def _saga_id_for_key(self, key: str) -> str | None:
        async with self._read("find saga by idempotency key") as conn:
            found: str | None = (
                await conn.execute(select(t.sagas.c.id).where(t.sagas.c.idempotency_key == key))
            ).scalar_one_or_none()
            return found

    async def get_saga(self, saga_id: str) -> SagaRow | None:
        """One saga, or ``None``."""
        async with self._read("get saga") as conn:
            r = (await conn.execute(select(*SAGA_COLUMNS).where(t.sagas.c.id == saga_id))).first()
            return None if r is None else saga_row(r)

    async def list_sagas(
        self,
        *,
        saga_type: str | None = None,
        status: str | Sequence[str] | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        limit: int = 50,
        cursor: Cursor | None = None,
    ) -> tuple[list[SagaRow], Cursor | None]:
        """One page of sagas, newest first; keyset pagination on ``(created_at, id)``.

        Args:
            saga_type: Only this definition name.
            status: Only this status (or any of these).
            created_from: Only sagas created at or after this time.
            created_to: Only sagas created before this time.
            limit: Page size (at least 1).
            cursor: The ``next_cursor`` of the previous page.

        Returns:
            The rows and the cursor of the next page (``None`` on the last page).
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        c = t.sagas.c
        stmt = select(*SAGA_COLUMNS)
        if saga_type is not None:
            stmt = stmt.where(c.saga_type == saga_type)
        if isinstance(status, str):
            stmt = stmt.where(c.status == status)
        elif status is not None:
            stmt = stmt.where(c.status.in_(list(status)))
        if created_from is not None:
            stmt = stmt.where(c.created_at >= as_utc(created_from))
        if created_to is not None:
            stmt = stmt.where(c.created_at < as_utc(created_to))
        if cursor is not None:
            at, sid = as_utc(cursor[0]), cursor[1]
            stmt = stmt.where(or_(c.created_at < at, and_(c.created_at == at, c.id < sid)))
        stmt = stmt.order_by(c.created_at.desc(), c.id.desc()).limit(limit + 1)
        async with self._read("list sagas") as conn:
            rows = [saga_row(r) for r in await conn.execute(stmt)]
        if len(rows) > limit:
            rows = rows[:limit]
            return rows, (rows[-1].created_at, rows[-1].saga_id)
        return rows, None

    async def active_sagas(self, *, after: str = "", limit: int = 1000) -> list[SagaRow]:
        """Running and compensating sagas in id order, one page after ``after``."""
        c = t.sagas.c
        async with self._read("list active sagas") as conn:
            rows = await conn.execute(
                select(*SAGA_COLUMNS)
                .where(c.status.in_(["running", "compensating"]), c.id > after)
                .order_by(c.id)
                .limit(limit)
            )
            return [saga_row(r) for r in rows]

    async def sagas_with_deferred(self, participant: str, *, limit: int = 1000) -> list[str]:
        """Ids of unfinished sagas holding work deferred for a paused ``participant``.

        Found through the ``command.deferred``/``compensation.deferred`` audit records
        and confirmed against the saga state; a saga listed here whose work was already
        released is harmless (the engine ignores the resume).
        """
        async with self.transaction() as tx:
            return await tx.saga_ids_with_deferred(participant, limit)

    async def step_executions(self, saga_id: str) -> list[StepExecutionRow]:
        """Every step attempt of a saga, in the order they were first recorded."""
        c = t.step_executions.c
        async with self._read("read step executions") as conn:
            rows = await conn.execute(
                select(t.step_executions).where(c.saga_id == saga_id).order_by(c.id)
            )
            return [
                StepExecutionRow(
                    saga_id=r.saga_id,
                    step=r.step,
                    attempt=r.attempt,
                    kind=r.kind,
                    status=r.status,
                    started_at=as_utc(r.started_at),
                    finished_at=as_utc_or_none(r.finished_at),
                    error_code=r.error_code,
                    error_message=r.error_message,
                )
                for r in rows
            ]

    # -- audit ---------------------------------------------------------------------------

    async def audit_trail(self, saga_id: str) -> list[AuditRecord]:
        """A saga's audit records in chain order (check them with ``verify_chain``)."""
        c = t.audit_log.c
        async with self._read("read audit trail") as conn:
            rows = await conn.execute(
                select(t.audit_log).where(c.saga_id == saga_id).order_by(c.seq, c.id)
            )
            return [AuditRecord.from_row(r) for r in rows]

    async def audit_records(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        after_id: int = 0,
        limit: int = 1000,
    ) -> list[AuditRecord]:
        """Audit records of every saga in id order (for export), one page after ``after_id``."""
        c = t.audit_log.c
        stmt = select(t.audit_log).where(c.id > after_id)
        if since is not None:
            stmt = stmt.where(c.recorded_at >= as_utc(since))
        if until is not None:
            stmt = stmt.where(c.recorded_at < as_utc(until))
        async with self._read("read audit records") as conn:
            rows = await conn.execute(stmt.order_by(c.id).limit(limit))
            return [AuditRecord.from_row(r) for r in rows]

    # -- timers --------------------------------------------------------------------------

    async def claim_due_timers(
        self, now: datetime, limit: int, to_message: Callable[[TimerRow], OutboxMessage]
    ) -> int:
        """Fire due timers: outbox rows in, timer rows out, in ONE transaction.

        On PostgreSQL the rows are claimed ``FOR UPDATE SKIP LOCKED``, so concurrent
        timer loops never fire the same timer; on SQLite the transaction holds the
        write lock.

        Args:
            now: Timers due at or before this time fire.
            limit: At most this many fire.
            to_message: Builds the outbox message of a timer (the store builds no
                envelopes); give it a deterministic message id.

        Returns:
            How many timers fired.
        """
        c = t.timers.c
        async with self.transaction() as tx:
            stmt = _DUE_TIMERS_SKIP_LOCKED if tx.postgres else _DUE_TIMERS
            params = {"now": as_utc(now), "limit": limit}
            with translate_errors("claim due timers"):
                rows = [
                    TimerRow(
                        id=r.id,
                        saga_id=r.saga_id,
                        kind=r.kind,
                        step=r.step,
                        attempt=r.attempt,
                        due_at=as_utc(r.due_at),
                    )
                    for r in await tx.conn.execute(stmt, params)
                ]
            if not rows:
                return 0
            await tx.enqueue([to_message(r) for r in rows])
            with translate_errors("claim due timers"):
                await tx.conn.execute(delete(t.timers).where(c.id.in_([r.id for r in rows])))
            return len(rows)

    async def next_timer_due(self) -> datetime | None:
        """When the earliest timer is due (``None``: no timers), in one statement."""
        with translate_errors("read next timer"):
            async with self._single.connect() as conn:
                due = (await conn.execute(_NEXT_TIMER_DUE)).scalar_one_or_none()
        return None if due is None else as_utc(due)

    # -- outbox and inbox ----------------------------------------------------------------

    async def outbox_backlog(self) -> int:
        """How many outbox rows are not published yet."""
        async with self._read("count outbox backlog") as conn:
            n: int = (
                await conn.execute(
                    select(func.count())
                    .select_from(t.outbox)
                    .where(t.outbox.c.published_at.is_(None))
                )
            ).scalar_one()
            return n

    async def prune_published_outbox(self, older_than: datetime, limit: int = 10_000) -> int:
        """Delete up to ``limit`` outbox rows published before ``older_than`` (oldest first).

        Returns:
            How many rows were deleted.
        """
        c = t.outbox.c
        oldest = (
            select(c.id)
            .where(c.published_at.is_not(None), c.published_at < as_utc(older_than))
            .order_by(c.id)
            .limit(limit)
        )
        async with self.transaction() as tx:
            with translate_errors("prune outbox"):
                result = await tx.conn.execute(delete(t.outbox).where(c.id.in_(oldest)))
        return int(result.rowcount or 0)

    async def prune_inbox(self, older_than: datetime, limit: int = 10_000) -> int:
        """Delete up to ``limit`` inbox ids received before ``older_than`` (oldest first).

        A message redelivered after its id was pruned is no longer recognised as a
        duplicate: keep ids as long as a duplicate can still arrive (see
        :mod:`saga.inbox` for the retention the coordinator uses).

        Returns:
            How many ids were deleted.
        """
        async with self.transaction() as tx:
            with translate_errors("prune inbox"):
                return await delete_inbox_ids(tx.conn, older_than, limit)


async def delete_inbox_ids(conn: AsyncConnection, older_than: datetime, limit: int) -> int:
    """Delete up to ``limit`` inbox ids received before ``older_than``, oldest first.

    The one pruning statement of ``saga_inbox``, for the store and for participants
    (whose inbox is the same table in their own database). It runs in the caller's
    transaction; deleting ids that are gone already deletes nothing, so several
    processes may prune one database at once.

    Returns:
        How many ids were deleted.
    """
    c = t.inbox.c
    oldest = (
        select(c.message_id)
        .where(c.received_at < as_utc(older_than))
        .order_by(c.received_at)
        .limit(limit)
    )
    result = await conn.execute(delete(t.inbox).where(c.message_id.in_(oldest)))
    return int(result.rowcount or 0)
