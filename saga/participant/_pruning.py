"""Inbox pruning while a participant runs.

With a database, the participant deletes inbox ids older than its retention while
:meth:`~saga.participant.Participant.run` runs (:class:`saga.inbox.InboxPruner`). By
default that is the commands topic's ``retention.ms``, read from the broker when the
participant opens: a duplicate command can only arrive while a copy of it can still be
read. Every replica (and every participant sharing the database) prunes the one inbox:
that is harmless, a delete of ids deleted already deletes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from saga.inbox import InboxPruner
from saga.participant import _db
from saga.participant._config import ParticipantConfig


@contextlib.asynccontextmanager
async def inbox_pruning(
    engine: AsyncEngine | None, retention: timedelta | None, config: ParticipantConfig
) -> AsyncIterator[InboxPruner | None]:
    """Run an :class:`InboxPruner` of ``engine``'s inbox inside the block (none without one)."""
    if engine is None:
        yield None
        return

    async def prune(older_than: datetime, limit: int) -> int:
        return await _db.prune_inbox(engine, older_than, limit)

    pruner = InboxPruner(
        prune,
        retention,
        interval=config.inbox_prune_interval,
        limit=config.inbox_prune_limit,
        owner=config.name,
    )
    task = asyncio.create_task(pruner.run(), name=f"saga-{config.name}-inbox-pruner")
    try:
        yield pruner
    finally:
        pruner.stop()
        try:
            await task
        finally:
            task.cancel()  # only if this task was cancelled while waiting for it
