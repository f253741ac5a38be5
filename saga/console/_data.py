"""What the console reads beyond :class:`saga.operations.SagaOperations`.

Richer saga filters, counts, sagas that need attention, and the overview's figures.

Read-only queries in SQLAlchemy Core over the store's tables, the same on SQLite and
PostgreSQL (the one dialect-specific piece is bucketing times for the charts).
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Integer, and_, cast, func, literal_column, or_, select
from sqlalchemy.sql import Select

from saga.coordinator import DefinitionCache
from saga.engine import SagaState
from saga.ids import find_saga_ids
from saga.operations import decode_cursor, encode_cursor
from saga.store import SAGA_COLUMNS, SagaRow, SqlStore, as_utc, saga_row, translate_errors
from saga.store import tables as t

STATUSES = ("running", "compensating", "stuck", "completed", "compensated", "aborted")
"""Every saga status, in the order the console shows them."""


@dataclass(frozen=True, kw_only=True)
class SagaFilter:
    """What the saga list is narrowed to (every field optional)."""

    status: str | None = None
    saga_type: str | None = None
    version: int | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    correlation_id: str | None = None
    key_field: str | None = None
    """A field of the saga input (``order_id``, ``customer.id``) ..."""
    key_value: str | None = None
    """... and the value it must have."""
    id_fragment: str | None = None
    """A piece of the saga id (prefix or suffix)."""


@dataclass(frozen=True, kw_only=True)
class SagaListing:
    """One page of the console's saga list."""

    rows: list[SagaRow]
    next_cursor: str | None
    counts: dict[str, int]
    """Sagas per status matching every filter but the status."""


def _where(stmt: Select[Any], f: SagaFilter, ids: list[str] | None) -> Select[Any]:
    c = t.sagas.c
    if f.saga_type:
        stmt = stmt.where(c.saga_type == f.saga_type)
    if f.version is not None:
        stmt = stmt.where(c.saga_version == f.version)
    if f.created_from is not None:
        stmt = stmt.where(c.created_at >= as_utc(f.created_from))
    if f.created_to is not None:
        stmt = stmt.where(c.created_at < as_utc(f.created_to))
    if f.correlation_id:
        stmt = stmt.where(c.correlation_id == f.correlation_id)
    if f.key_field and f.key_value is not None:
        path = tuple(p for p in f.key_field.split(".") if p)
        stmt = stmt.where(c.context[path].as_string() == f.key_value)
    if ids is not None:
        stmt = stmt.where(c.id.in_(ids) if ids else literal_column("1") == 0)
    return stmt


async def list_sagas(
    store: SqlStore, f: SagaFilter, *, limit: int = 25, cursor: str | None = None
) -> SagaListing:
    """Sagas matching ``f``, newest first, with counts per status.

    Raises:
        ValueError: ``cursor`` is not one this function handed out.
    """
    c = t.sagas.c
    ids = await find_saga_ids(store, f.id_fragment, limit=200) if f.id_fragment else None
    stmt = _where(select(*SAGA_COLUMNS), f, ids)
    if f.status:
        stmt = stmt.where(c.status == f.status)
    if cursor:
        at, sid = decode_cursor(cursor)
        stmt = stmt.where(
            or_(c.created_at < as_utc(at), and_(c.created_at == as_utc(at), c.id < sid))
        )
    stmt = stmt.order_by(c.created_at.desc(), c.id.desc()).limit(limit + 1)
    counts_stmt = _where(select(c.status, func.count()).group_by(c.status), f, ids)
    async with store.engine.connect() as conn:
        with translate_errors("list sagas"):
            rows = [saga_row(r) for r in await conn.execute(stmt)]
            counts = {r[0]: int(r[1]) for r in await conn.execute(counts_stmt)}
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor((rows[-1].created_at, rows[-1].saga_id))
    return SagaListing(rows=rows, next_cursor=next_cursor, counts=counts)


# -- needs attention ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Attention:
    """A saga an operator should look at, and why."""

    row: SagaRow
    state: SagaState
    why: str
    """``stuck`` or ``paused participant``."""
    participants: tuple[str, ...] = ()
    """The paused participants it waits on."""


async def needs_attention(
    store: SqlStore, definitions: DefinitionCache, *, limit: int = 200, scan: int = 5000
) -> list[Attention]:
    """Stuck sagas, and sagas whose next command waits for a paused participant.

    Deferred work is found in the state of running and compensating sagas (the first
    ``scan`` of them, in id order).
    """
    stuck, _ = await store.list_sagas(status="stuck", limit=limit)
    found = [
        Attention(row=row, state=SagaState.model_validate_json(row.state_json), why="stuck")
        for row in stuck
    ]
    after = ""
    seen = 0
    while seen < scan and len(found) < limit:
        page = await store.active_sagas(after=after, limit=500)
        if not page:
            break
        for row in page:
            state = SagaState.model_validate_json(row.state_json)
            waiting = [
                name for name, st in state.steps.items() if st.deferred or st.compensation_deferred
            ]
            if waiting:
                definition = await definitions.get(state.saga_type, state.saga_version)
                participants = tuple(
                    sorted(
                        {
                            definition.step(n).participant_name
                            for n in waiting
                            if definition and definition.has_step(n)
                        }
                    )
                )
                found.append(
                    Attention(
                        row=row, state=state, why="paused participant", participants=participants
                    )
                )
        seen += len(page)
        after = page[-1].saga_id
    return found[:limit]


# -- definitions ----------------------------------------------------------------------------


async def sagas_per_version(store: SqlStore) -> dict[tuple[str, int], dict[str, int]]:
    """``(name, version) -> {status: count}`` of every saga in the store."""
    c = t.sagas.c
    stmt = select(c.saga_type, c.saga_version, c.status, func.count()).group_by(
        c.saga_type, c.saga_version, c.status
    )
    out: dict[tuple[str, int], dict[str, int]] = defaultdict(dict)
    async with store.engine.connect() as conn:
        with translate_errors("count sagas per definition"):
            for name, version, status, n in await conn.execute(stmt):
                out[(name, int(version))][status] = int(n)
    return dict(out)


# -- overview -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Series:
    """Counts per time bucket for the overview chart."""

    starts: list[datetime]
    """Start of each bucket."""
    bucket: timedelta
    values: dict[str, list[int]]
    """``started``, ``completed``, ``compensated``, ``stuck`` -> count per bucket."""

    @property
    def peak(self) -> int:
        """The largest count in any series (at least 1)."""
        return max([1, *(v for vs in self.values.values() for v in vs)])


def _bucket_expr(store: SqlStore, column: Any, seconds: int) -> ColumnElement[Any]:
    if store.dialect == "postgresql":
        return func.floor(func.extract("epoch", column) / seconds)
    return cast(func.strftime("%s", column), Integer) / seconds


async def throughput(store: SqlStore, now: datetime, *, window: timedelta, buckets: int) -> Series:
    """Sagas started, completed, compensated and stuck per bucket over ``window``.

    A finished or stuck saga counts in the bucket of its last update (when it got there).
    """
    size = max(int(window.total_seconds() // buckets), 1)
    first = (int(now.timestamp()) // size - buckets + 1) * size
    since = datetime.fromtimestamp(first, now.tzinfo)
    c = t.sagas.c
    started = select(_bucket_expr(store, c.created_at, size).label("b"), func.count()).where(
        c.created_at >= since
    )
    ended = (
        select(c.status, _bucket_expr(store, c.updated_at, size).label("b"), func.count())
        .where(c.updated_at >= since, c.status.in_(["completed", "compensated", "stuck"]))
        .group_by(c.status, literal_column("b"))
    )
    values: dict[str, list[int]] = {
        k: [0] * buckets for k in ("started", "completed", "compensated", "stuck")
    }
    base = first // size
    async with store.engine.connect() as conn:
        with translate_errors("read throughput"):
            for b, n in await conn.execute(started.group_by(literal_column("b"))):
                i = int(b) - base
                if 0 <= i < buckets:
                    values["started"][i] += int(n)
            for status, b, n in await conn.execute(ended):
                i = int(b) - base
                if 0 <= i < buckets:
                    values[status][i] += int(n)
    starts = [since + timedelta(seconds=size * i) for i in range(buckets)]
    return Series(starts=starts, bucket=timedelta(seconds=size), values=values)


@dataclass(frozen=True, kw_only=True)
class Latency:
    """Step latency (command sent to reply recorded) of one participant."""

    participant: str
    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    rank = max(math.ceil(q * len(sorted_values)) - 1, 0)
    return sorted_values[rank]


async def step_latencies(
    store: SqlStore, definitions: DefinitionCache, *, since: datetime, limit: int = 20_000
) -> list[Latency]:
    """Latency percentiles of finished commands per participant since ``since``.

    The newest ``limit`` finished executions are read.
    """
    e, s = t.step_executions.c, t.sagas.c
    stmt = (
        select(s.saga_type, s.saga_version, e.step, e.started_at, e.finished_at)
        .select_from(t.step_executions.join(t.sagas, t.sagas.c.id == e.saga_id))
        .where(e.finished_at.is_not(None), e.kind == "command", e.started_at >= as_utc(since))
        .order_by(e.id.desc())
        .limit(limit)
    )
    per: dict[str, list[float]] = defaultdict(list)
    async with store.engine.connect() as conn:
        with translate_errors("read step latencies"):
            rows = list(await conn.execute(stmt))
    for saga_type, version, step, started, finished in rows:
        definition = await definitions.get(saga_type, int(version))
        if definition is None or not definition.has_step(step):
            continue
        ms = (as_utc(finished) - as_utc(started)).total_seconds() * 1000
        per[definition.step(step).participant_name].append(max(ms, 0.0))
    out = []
    for participant, values in sorted(per.items()):
        values.sort()
        out.append(
            Latency(
                participant=participant,
                count=len(values),
                p50_ms=_percentile(values, 0.5),
                p90_ms=_percentile(values, 0.9),
                p99_ms=_percentile(values, 0.99),
                max_ms=values[-1],
            )
        )
    return out


@dataclass(frozen=True, kw_only=True)
class Lag:
    """How far a consumer group is behind on one partition."""

    group: str
    topic: str
    partition: int
    committed: int | None
    end: int | None

    @property
    def lag(self) -> int | None:
        """Records not consumed yet (``None`` when either offset is unknown)."""
        if self.end is None:
            return None
        return max(self.end - (self.committed or 0), 0)


@dataclass(frozen=True, kw_only=True)
class Backlog:
    """The outbox: rows waiting for the relay, and rows Kafka refused for good."""

    unpublished: int
    quarantined: int
    oldest_unpublished: datetime | None


async def outbox_backlog(store: SqlStore) -> Backlog:
    """How many outbox rows wait, since when, and how many are quarantined."""
    o = t.outbox.c
    async with store.engine.connect() as conn:
        with translate_errors("read outbox backlog"):
            waiting, oldest = (
                await conn.execute(
                    select(func.count(), func.min(o.created_at)).where(o.published_at.is_(None))
                )
            ).one()
            quarantined = (
                await conn.execute(select(func.count()).select_from(t.outbox_quarantine))
            ).scalar_one()
    return Backlog(
        unpublished=int(waiting),
        quarantined=int(quarantined),
        oldest_unpublished=as_utc(oldest) if oldest is not None else None,
    )


@dataclass(kw_only=True)
class LagReport:
    """Consumer lag of the coordinator group(s), or why it could not be read."""

    rows: list[Lag] = field(default_factory=list)
    error: str | None = None

    @property
    def total(self) -> int:
        """Records behind, over every partition whose end offset is known."""
        return sum(r.lag or 0 for r in self.rows)


async def consumer_lag(
    store: SqlStore, bootstrap: str | None, *, timeout_s: float = 3.0
) -> LagReport:
    """Offsets stored in ``saga_consumer_offsets`` against the topics' end offsets in Kafka."""
    c = t.consumer_offsets.c
    async with store.engine.connect() as conn:
        with translate_errors("read consumer offsets"):
            stored = list(
                await conn.execute(
                    select(c.group_id, c.topic, c.partition, c.next_offset).order_by(
                        c.group_id, c.topic, c.partition
                    )
                )
            )
    report = LagReport()
    ends: dict[tuple[str, int], int] = {}
    if stored and bootstrap:
        from saga.kafka import end_offsets  # Kafka only when the lag page asks for it

        try:
            ends = await asyncio.wait_for(
                end_offsets(bootstrap, {(r.topic, r.partition) for r in stored}), timeout_s
            )
        except Exception as exc:
            report.error = f"Kafka end offsets unavailable: {exc or type(exc).__name__}"
    elif stored:
        report.error = "no Kafka bootstrap servers configured: end offsets unknown"
    for r in stored:
        report.rows.append(
            Lag(
                group=r.group_id,
                topic=r.topic,
                partition=int(r.partition),
                committed=None if r.next_offset is None else int(r.next_offset),
                end=ends.get((r.topic, int(r.partition))),
            )
        )
    return report


def status_totals(counts: dict[str, int]) -> list[tuple[str, int]]:
    """Counts in :data:`STATUSES` order (every status, zero when absent)."""
    return [(s, counts.get(s, 0)) for s in STATUSES]


def paused_participants(items: list[Attention]) -> Counter[str]:
    """Participants that sagas wait on, with how many sagas wait on each."""
    return Counter(p for a in items for p in a.participants)
