"""The scale mode: preload finished sagas (and their history) with ``generate_series``.

Copies of one finished saga of the first phase (its saga row, audit records and step
executions), plus one inbox entry per step, are inserted in chunks with
``INSERT ... SELECT ... FROM generate_series`` into the coordinator's schema (a
dedicated bench schema), then the tables are analysed. The copies' hash chains name the
template's saga id, so ``verify_chain`` would reject them: they exist to make the
tables and indexes as large as a long-running deployment's, nothing else.
"""

from __future__ import annotations

from rich.progress import Progress
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from saga.store import tables as t

CHUNK = 100_000
"""Sagas preloaded per statement group (one transaction each)."""

_NEW_ID = "md5('bench-preload-' || g)::uuid::text"
_SERIES = "generate_series(CAST(:lo AS integer), CAST(:hi AS integer))"


def _statements(steps: int) -> list[str]:
    s, a, x, i = t.sagas.name, t.audit_log.name, t.step_executions.name, t.inbox.name
    return [
        f"""INSERT INTO {s} (id, saga_type, saga_version, status, context, state, revision,
                idempotency_key, correlation_id, deadline_at, created_at, updated_at)
            SELECT {_NEW_ID}, saga_type, saga_version, status, context, state, revision,
                NULL, NULL, NULL, created_at - interval '30 days', updated_at - interval '30 days'
            FROM {s}, {_SERIES} g WHERE id = :template""",
        f"""INSERT INTO {a} (saga_id, seq, recorded_at, kind, step, attempt, actor, detail,
                prev_hash, hash)
            SELECT {_NEW_ID}, seq, recorded_at - interval '30 days', kind, step, attempt, actor,
                detail, prev_hash, hash
            FROM {a}, {_SERIES} g WHERE saga_id = :template""",
        f"""INSERT INTO {x} (saga_id, step, attempt, kind, status, started_at, finished_at,
                error_code, error_message)
            SELECT {_NEW_ID}, step, attempt, kind, status, started_at - interval '30 days',
                finished_at - interval '30 days', error_code, error_message
            FROM {x}, {_SERIES} g WHERE saga_id = :template""",
        f"""INSERT INTO {i} (message_id, received_at)
            SELECT md5('bench-preload-' || g || '-' || k)::uuid::text, now() - interval '30 days'
            FROM {_SERIES} g,
                generate_series(1, {int(steps)}) k""",
    ]


async def preload(
    engine: AsyncEngine, template: str, count: int, steps: int, progress: Progress | None = None
) -> None:
    """Insert ``count`` finished copies of saga ``template`` with their history (PostgreSQL)."""
    task = progress.add_task("preload finished sagas", total=count) if progress else None
    statements = _statements(steps)
    for lo in range(1, count + 1, CHUNK):
        hi = min(lo + CHUNK - 1, count)
        async with engine.begin() as conn:
            for sql in statements:
                await conn.execute(text(sql), {"lo": lo, "hi": hi, "template": template})
        if progress is not None and task is not None:
            progress.update(task, completed=hi)
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        for table in (t.sagas, t.audit_log, t.step_executions, t.inbox):
            await conn.execute(text(f"ANALYZE {table.name}"))
