"""Paged reads of sagas and audit records for the audit tools (SQLAlchemy Core).

The store's public reads serve one saga at a time; verifying or reconciling a whole
database needs pages of many sagas, and the audit records of a page in ONE query. Like
the relay's outbox reader, this module reads the store's tables directly, inside
:func:`saga.store.translate_errors`, so nothing above it sees SQLAlchemy.

Every page is ordered by saga id and continues after the last id of the page before
(keyset pagination): memory use is bounded by the page size, whatever the database holds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from saga.store import AuditRecord, as_utc, translate_errors
from saga.store import tables as t


@dataclass(frozen=True, kw_only=True, slots=True)
class SagaHead:
    """What the audit tools need of a saga row."""

    saga_id: str
    """The saga's id."""
    saga_type: str
    """Name of its definition."""
    status: str
    """Its current status."""
    updated_at: datetime
    """When the last decision was applied (UTC)."""
    revision: int | None = None
    """The saga's revision: the number of decisions applied to it."""
    state: dict[str, Any] | None = None
    """The engine's full state as JSON (only when asked for)."""


async def count_sagas(engine: AsyncEngine) -> int:
    """How many sagas the database holds."""
    with translate_errors("count sagas"):
        async with engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(t.sagas))).scalar_one())


async def saga_pages(
    engine: AsyncEngine, *, page_size: int = 500, with_state: bool = False
) -> AsyncIterator[list[SagaHead]]:
    """Every saga, in pages of ``page_size`` in id order.

    Args:
        engine: The store's engine.
        page_size: Sagas per page (at least 1).
        with_state: Also read each saga's full state (needed to reconcile).
    """
    if page_size < 1:
        raise ValueError("page_size must be at least 1")
    c = t.sagas.c
    columns = [c.id, c.saga_type, c.status, c.updated_at, c.revision]
    if with_state:
        columns.append(c.state)
    after = ""
    while True:
        stmt = select(*columns).where(c.id > after).order_by(c.id).limit(page_size)
        with translate_errors("read sagas"):
            async with engine.connect() as conn:
                rows = list(await conn.execute(stmt))
        if not rows:
            return
        yield [
            SagaHead(
                saga_id=r.id,
                saga_type=r.saga_type,
                status=r.status,
                updated_at=as_utc(r.updated_at),
                revision=r.revision,
                state=r.state if with_state else None,
            )
            for r in rows
        ]
        if len(rows) < page_size:
            return
        after = rows[-1].id


async def get_saga_head(engine: AsyncEngine, saga_id: str) -> SagaHead | None:
    """One saga's head, or ``None`` when there is no such saga."""
    c = t.sagas.c
    stmt = select(c.id, c.saga_type, c.status, c.updated_at, c.revision).where(c.id == saga_id)
    with translate_errors("read saga"):
        async with engine.connect() as conn:
            r = (await conn.execute(stmt)).first()
    if r is None:
        return None
    return SagaHead(
        saga_id=r.id,
        saga_type=r.saga_type,
        status=r.status,
        updated_at=as_utc(r.updated_at),
        revision=r.revision,
    )


async def audit_records_of(
    engine: AsyncEngine, saga_ids: Sequence[str]
) -> dict[str, list[AuditRecord]]:
    """The audit records of some sagas (one query), each saga's in chain order.

    A saga without records is absent from the result.
    """
    if not saga_ids:
        return {}
    c = t.audit_log.c
    stmt = select(t.audit_log).where(c.saga_id.in_(list(saga_ids))).order_by(c.saga_id, c.seq, c.id)
    found: dict[str, list[AuditRecord]] = {}
    with translate_errors("read audit records"):
        async with engine.connect() as conn:
            for r in await conn.execute(stmt):
                found.setdefault(r.saga_id, []).append(AuditRecord.from_row(r))
    return found
