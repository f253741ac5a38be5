"""Export audit records as JSON Lines, streaming in pages."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from saga.store import AuditRecord, SqlStore


def record_to_json(record: AuditRecord) -> dict[str, Any]:
    """One audit record as a JSON object (every stored field, times in ISO 8601 UTC).

    The fields are exactly those the hash covers plus ``id``, ``prev_hash`` and ``hash``,
    so an exported file can be re-verified without the database.
    """
    return {
        "id": record.id,
        "saga_id": record.saga_id,
        "seq": record.seq,
        "recorded_at": record.recorded_at.isoformat(timespec="microseconds"),
        "kind": record.kind,
        "step": record.step,
        "attempt": record.attempt,
        "actor": record.actor,
        "detail": record.detail,
        "prev_hash": record.prev_hash,
        "hash": record.hash,
    }


async def export_jsonl(
    store: SqlStore,
    write: Callable[[str], object],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    page_size: int = 1000,
    on_page: Callable[[int], None] | None = None,
) -> int:
    """Write the audit records recorded in ``[since, until)`` as JSON Lines.

    Records come in insertion (``id``) order, one page at a time, so memory use does not
    grow with the size of the log.

    Args:
        store: The saga store.
        write: Called with each line (newline included), e.g. ``file.write``.
        since: Only records recorded at or after this time.
        until: Only records recorded before this time.
        page_size: Records read per query.
        on_page: Called with the number of records written so far after each page.

    Returns:
        How many records were written.

    Raises:
        ValueError: ``until`` is not after ``since``, or ``page_size`` is below 1.
        saga.errors.StoreUnavailable: The database cannot be reached.
    """
    if page_size < 1:
        raise ValueError("page_size must be at least 1")
    if since is not None and until is not None and until <= since:
        raise ValueError("until must be after since")
    written = 0
    after_id = 0
    while True:
        page = await store.audit_records(
            since=since, until=until, after_id=after_id, limit=page_size
        )
        for record in page:
            write(json.dumps(record_to_json(record), ensure_ascii=False, sort_keys=True) + "\n")
        written += len(page)
        if on_page is not None and page:
            on_page(written)
        if len(page) < page_size:
            return written
        after_id = page[-1].id
