"""Inbox retention: how long handled message ids are kept, and the loop that prunes them.

Theory of operation
-------------------
The coordinator (in its store) and every participant with a database (in its own) write
the id of each message they handle into ``saga_inbox`` and skip a message whose id is
there. An id must be kept at least as long as a duplicate of its message can still
arrive. Duplicates come from producers that send a message again (an at-least-once
participant after a crash, an operator replaying a dead letter), and a duplicate can
only be read while its record is still in the topic. So by default an id is kept as
long as the consumed topic keeps its records: the topic's ``retention.ms``, read from
the broker once at start (:func:`inbox_retention`). ``-1`` (records are kept forever)
means the inbox is never pruned; a retention that cannot be read is taken to be Kafka's
default, 7 days. An explicit retention overrides the topic's; when it is shorter, a
warning says that duplicates older than that will be processed again.

:class:`InboxPruner` deletes the ids older than the retention every ``interval`` (5
minutes by default), ``limit`` ids per transaction, until a transaction deletes fewer
than ``limit``. Pruning is housekeeping: a failure is logged as a warning and retried
with back-off, and never stops the process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from saga.errors import ConfigError, SagaError, TransportError
from saga.kafka import topic_retention
from saga.lifecycle import Clock, utc_now, wait_at_most
from saga.retry import Backoff

log = logging.getLogger("saga.inbox")

KAFKA_DEFAULT_RETENTION = timedelta(days=7)
"""Assumed when a topic's retention cannot be read (Kafka's ``log.retention.hours=168``)."""

DEFAULT_PRUNE_INTERVAL = timedelta(minutes=5)
"""How often the inbox is pruned by default."""

DEFAULT_PRUNE_LIMIT = 1_000
"""Most ids deleted in one transaction by default: short transactions (SQLite has one
writer at a time), and a backlog is still cleared at once, one batch after the other."""

RETENTION_READ_TIMEOUT_S = 10.0
"""Give up reading a topic's retention after this long (and assume the default)."""

Prune = Callable[[datetime, int], Awaitable[int]]
"""``prune(older_than, limit)``: delete up to ``limit`` ids received before ``older_than``
and return how many were deleted (:meth:`saga.store.SqlStore.prune_inbox`)."""


def check_prune_settings(retention: timedelta | None, interval: timedelta, limit: int) -> None:
    """Validate inbox pruning settings.

    Raises:
        ConfigError: ``retention`` is not positive, ``interval`` is not positive or
            ``limit`` is below 1.
    """
    if retention is not None and retention <= timedelta(0):
        raise ConfigError(f"inbox_retention must be > 0 (None: the topic's), not {retention}")
    if interval <= timedelta(0):
        raise ConfigError(f"inbox_prune_interval must be > 0, not {interval}")
    if limit < 1:
        raise ConfigError(f"inbox_prune_limit must be >= 1, not {limit}")


async def inbox_retention(
    bootstrap: str, topic: str, explicit: timedelta | None = None, *, owner: str
) -> timedelta | None:
    """How long the inbox of ``owner`` keeps the ids of messages consumed from ``topic``.

    Reads the topic's ``retention.ms`` from the broker (see the module docstring) and
    logs the decision when it is not the plain default: at INFO when the topic keeps
    records forever, at WARNING when the retention cannot be read or ``explicit`` is
    shorter than the topic's.

    Args:
        bootstrap: Kafka bootstrap servers.
        topic: The topic ``owner`` consumes.
        explicit: A retention set by the operator; overrides the topic's.
        owner: Who prunes, for the log lines (``coordinator``, a participant's name).

    Returns:
        ``explicit`` if given, else the topic's retention (7 days if it cannot be read);
        ``None``: ids are kept forever (never pruned).
    """
    kept: timedelta | None
    try:
        async with asyncio.timeout(RETENTION_READ_TIMEOUT_S):
            kept = await topic_retention(bootstrap, topic)
    except (TransportError, TimeoutError) as exc:
        kept = KAFKA_DEFAULT_RETENTION
        log.warning(
            "%s: cannot read retention.ms of %s (%s); assuming Kafka's default of %s",
            owner,
            topic,
            str(exc) or "timed out",
            describe(kept),
        )
    if explicit is None:
        if kept is None:
            log.info(
                "%s: %s keeps its records forever (retention.ms=-1): inbox ids are never pruned",
                owner,
                topic,
            )
        return kept
    if kept is None or explicit < kept:
        log.warning(
            "%s: inbox ids are kept for %s, less than %s keeps its records (%s): "
            "a duplicate of a message older than %s will be processed again",
            owner,
            describe(explicit),
            topic,
            "forever" if kept is None else describe(kept),
            describe(explicit),
        )
    return explicit


def describe(span: timedelta | None) -> str:
    """A retention for people: ``7 d``, ``1 h``, ``90 s``; ``forever`` for ``None``."""
    if span is None:
        return "forever"
    seconds = span.total_seconds()
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} s"


class InboxPruner:
    """Deletes inbox ids older than ``retention`` every ``interval`` until :meth:`stop`.

    Args:
        prune: Deletes one batch (:meth:`saga.store.SqlStore.prune_inbox`, or the
            participant's ``prune_inbox`` on its engine).
        retention: How long ids are kept (:func:`inbox_retention`); ``None``: forever,
            :meth:`run` only waits for :meth:`stop`.
        interval: Pause between two rounds.
        limit: Most ids deleted per transaction.
        clock: Time source (tests pass their own).
        owner: Who prunes, for the log lines.
    """

    def __init__(
        self,
        prune: Prune,
        retention: timedelta | None,
        *,
        interval: timedelta = DEFAULT_PRUNE_INTERVAL,
        limit: int = DEFAULT_PRUNE_LIMIT,
        clock: Clock = utc_now,
        owner: str = "inbox",
    ) -> None:
        check_prune_settings(retention, interval, limit)
        self.retention = retention
        self.interval = interval
        self.limit = limit
        self.clock = clock
        self.owner = owner
        self.pruned = 0
        """Ids deleted so far."""
        self._prune = prune
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """Ask :meth:`run` to return (a round in progress ends after its batch)."""
        self._stop.set()

    async def prune_once(self) -> int:
        """Delete every id older than the retention, ``limit`` at a time.

        Returns:
            How many ids were deleted (0 when ids are kept forever).

        Raises:
            saga.errors.StoreError: The database failed (ids deleted before stay deleted).
        """
        if self.retention is None:
            return 0
        older_than = self.clock() - self.retention
        total = 0
        try:
            while not self._stop.is_set():
                deleted = await self._prune(older_than, self.limit)
                total += deleted
                if deleted < self.limit:
                    break
        finally:
            self.pruned += total
            if total:
                log.info(
                    "%s: pruned %d inbox ids received before %s",
                    self.owner,
                    total,
                    older_than.isoformat(timespec="seconds"),
                )
        return total

    async def run(self) -> None:
        """Prune every ``interval`` (the first round at once) until :meth:`stop`."""
        if self.retention is None:
            await self._stop.wait()
            return
        interval_s = self.interval.total_seconds()
        backoff = Backoff(min(1.0, interval_s), interval_s)
        while not self._stop.is_set():
            try:
                await self.prune_once()
            except Exception as exc:
                # Housekeeping: a failure must never stop the process; the ids wait.
                delay = backoff.next_delay()
                log.warning(
                    "%s: pruning the inbox failed, retrying in %.1fs: %s",
                    self.owner,
                    delay,
                    exc,
                    exc_info=not isinstance(exc, SagaError),
                )
                await self._sleep(delay)
                continue
            backoff.reset()
            await self._sleep(interval_s)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but return at once when asked to stop."""
        await wait_at_most(self._stop, seconds)
