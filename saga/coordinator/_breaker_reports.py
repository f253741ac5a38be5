"""Circuit breaker states in the database, for readers outside the coordinator process.

A breaker lives in the memory of the coordinator that feeds it (:mod:`._breaker`).
:class:`BreakerReporter` writes one coordinator's breakers to ``saga_breaker_reports``
when one changes state and every ``interval`` besides, and deletes them when the
coordinator leaves; :func:`breaker_reports` reads what every coordinator reported.
Each row carries ``stale_after``, three of its coordinator's intervals after the
report: a row not refreshed by then belongs to a coordinator that died without leaving
(or is cut off from the database). Rows older than :data:`FORGET_AFTER` are deleted by
the next report of any coordinator.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select

from saga.coordinator._breaker import BreakerReport, BreakerState, CircuitBreakers
from saga.errors import StoreError
from saga.store import SqlStore, as_utc, as_utc_or_none, translate_errors
from saga.store.tables import breaker_reports as table

log = logging.getLogger("saga.coordinator")

REPORT_INTERVAL = timedelta(seconds=10)
"""How often a coordinator refreshes its reports when no breaker changed state."""

STALE_AFTER_INTERVALS = 3
"""A report not refreshed for this many of its coordinator's intervals is stale."""

FORGET_AFTER = timedelta(days=1)
"""Reports not refreshed for this long are deleted."""


@dataclass(frozen=True, kw_only=True)
class ReportedBreaker:
    """One participant's breaker as one coordinator last reported it."""

    member: str
    """The coordinator (``host:pid:id``)."""
    report: BreakerReport
    reported_at: datetime
    stale_after: datetime
    """Not refreshed by then: its coordinator stopped reporting."""

    def current(self, now: datetime) -> bool:
        """Whether its coordinator still refreshes it."""
        return now <= self.stale_after


class BreakerReporter:
    """Writes one coordinator's breakers to the database: on a change, and every interval."""

    def __init__(
        self, store: SqlStore, member: str, *, interval: timedelta = REPORT_INTERVAL
    ) -> None:
        self.store = store
        self.member = member
        self.interval = interval
        self._written: list[tuple[str, BreakerState, datetime | None]] | None = None
        self._written_at: datetime | None = None

    async def report(self, breakers: CircuitBreakers, now: datetime) -> bool:
        """Write the breakers if one changed state or the last write is an interval old.

        A database that cannot be written is logged and tried again at the next call:
        reports are for people, and must never hold up the coordinator.

        Returns:
            Whether it wrote.
        """
        reports = breakers.reports(now)
        shape = [(r.participant, r.state, r.opened_at) for r in reports]
        due = self._written_at is None or now - self._written_at >= self.interval
        if shape == self._written and not due:
            return False
        try:
            await self._write(reports, now)
        except StoreError as exc:
            log.debug("could not report the circuit breakers: %s", exc)
            return False
        self._written, self._written_at = shape, now
        return True

    async def forget(self) -> None:
        """Delete this coordinator's reports (it leaves); errors are logged, not raised."""
        try:
            with translate_errors("forget breaker reports"):
                async with self.store.engine.begin() as conn:
                    await conn.execute(delete(table).where(table.c.member == self.member))
        except StoreError as exc:
            log.debug("could not delete the circuit breaker reports: %s", exc)

    async def _write(self, reports: list[BreakerReport], now: datetime) -> None:
        with translate_errors("report breakers"):
            async with self.store.engine.begin() as conn:
                await conn.execute(
                    delete(table).where(
                        (table.c.member == self.member) | (table.c.reported_at < now - FORGET_AFTER)
                    )
                )
                if reports:
                    await conn.execute(
                        insert(table),
                        [
                            {
                                "member": self.member,
                                "participant": r.participant,
                                "state": r.state.value,
                                "calls": r.calls,
                                "failures": r.failures,
                                "opened_at": r.opened_at,
                                "reported_at": now,
                                "stale_after": now + STALE_AFTER_INTERVALS * self.interval,
                            }
                            for r in reports
                        ],
                    )


async def breaker_reports(store: SqlStore) -> list[ReportedBreaker]:
    """What every coordinator last reported, by participant then coordinator.

    Raises:
        saga.errors.StoreError: The database cannot be read.
    """
    c = table.c
    with translate_errors("read breaker reports"):
        async with store.engine.connect() as conn:
            rows = (await conn.execute(select(table).order_by(c.participant, c.member))).all()
    return [
        ReportedBreaker(
            member=row.member,
            report=BreakerReport(
                participant=row.participant,
                state=BreakerState(row.state),
                calls=row.calls,
                failures=row.failures,
                opened_at=as_utc_or_none(row.opened_at),
            ),
            reported_at=as_utc(row.reported_at),
            stale_after=as_utc(row.stale_after),
        )
        for row in rows
    ]
