"""Reconcile the database with an auditor's view, streaming the database in pages."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from saga.audit._reader import saga_pages
from saga.audit._reconcile import Discrepancy, SagaOutcome, reconcile
from saga.engine import SagaState


@dataclass(kw_only=True)
class ReconcileReport:
    """What a reconciliation found."""

    database_sagas: int = 0
    """Sagas read from the database."""
    auditor_sagas: int = 0
    """Sagas in the auditor's view."""
    discrepancies: list[Discrepancy] = field(default_factory=list)
    """Every discrepancy, by saga id."""


async def database_outcome_pages(
    engine: AsyncEngine, *, page_size: int = 500
) -> AsyncIterator[dict[str, SagaOutcome]]:
    """The database's view of every saga, one page (saga id -> outcome) at a time."""
    async for page in saga_pages(engine, page_size=page_size, with_state=True):
        yield {
            h.saga_id: SagaOutcome.from_state(SagaState.model_validate(h.state))
            for h in page
            if h.state is not None
        }


async def reconcile_database(
    engine: AsyncEngine,
    auditor: Mapping[str, SagaOutcome],
    *,
    settled_only: bool = False,
    page_size: int = 500,
    on_page: Callable[[int], None] | None = None,
) -> ReconcileReport:
    """Compare every saga of the database with the auditor's view.

    The database is read page by page and each page is compared with the auditor's
    outcomes of the same sagas; what the auditor has beyond that is compared last (it
    is missing from the database).

    Args:
        engine: The store's engine.
        auditor: The auditor's view (see :func:`saga.audit.auditor_view`).
        settled_only: Skip sagas that neither side says have settled.
        page_size: Sagas read per query.
        on_page: Called with the number of database sagas read so far after each page.
    """
    report = ReconcileReport(auditor_sagas=len(auditor))
    unseen = set(auditor)
    async for db_page in database_outcome_pages(engine, page_size=page_size):
        theirs = {sid: auditor[sid] for sid in db_page if sid in auditor}
        unseen.difference_update(db_page)
        report.database_sagas += len(db_page)
        report.discrepancies.extend(reconcile(db_page, theirs, settled_only=settled_only))
        if on_page is not None:
            on_page(report.database_sagas)
    rest = {sid: auditor[sid] for sid in sorted(unseen)}
    report.discrepancies.extend(reconcile({}, rest, settled_only=settled_only))
    return report
