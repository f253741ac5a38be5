"""Waking the relays: PostgreSQL ``NOTIFY`` of the outbox lanes a transaction wrote.

A transaction that enqueues outbox rows notifies the lanes it wrote; the notification
is delivered when it commits (and never if it rolls back), so a relay that LISTENs
wakes as soon as there is something to publish instead of at its next poll.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from sqlalchemy import ColumnElement, Text, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from saga.store import tables as t
from saga.store._errors import translate_errors

NOTIFY_CHANNEL: Final = "saga_outbox"
"""PostgreSQL channel the relays LISTEN on, per schema: ``saga_outbox.<current_schema()>``.

The payload names the outbox lane written, ``<owner_topic>:<shard>`` (``:`` never occurs
in a topic name), so only that lane's relay wakes; an empty payload wakes every relay."""


def lane_payload(owner_topic: str, shard: int) -> str:
    """The NOTIFY payload that wakes the relay of one outbox lane."""
    return f"{owner_topic}:{shard}"


def notify_channel() -> ColumnElement[str]:
    """The channel of the transaction's schema, in SQL: ``'saga_outbox.' || current_schema()``."""
    return func.concat(NOTIFY_CHANNEL + ".", func.current_schema())


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
    lane = (
        func.unnest(bindparam(None, payloads, type_=ARRAY(Text)))
        .table_valued("payload")
        .render_derived(name="lanes")
    )
    await conn.execute(select(func.pg_notify(notify_channel(), lane.c.payload)).select_from(lane))


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


def outbox_written_and_notified(insert: Any, name: str) -> tuple[Any, Any]:
    """PostgreSQL: ``insert`` (of outbox rows) as a CTE, and a scalar that notifies its lanes.

    Returns:
        The CTE (columns ``message_id``, ``owner_topic``, ``shard`` of the rows written)
        and a scalar subquery that wakes the relay of each lane they belong to.
    """
    c = t.outbox.c
    written = insert.returning(c.message_id, c.owner_topic, c.shard).cte(name)
    lanes = (
        select(func.concat(written.c.owner_topic, ":", written.c.shard).label("payload"))
        .distinct()
        .subquery(f"{name}_lanes")
    )
    # Evaluated once (an uncorrelated scalar subquery) whenever a row was written.
    # PostgreSQL delivers one notification per channel and payload per transaction.
    notified = select(func.count(func.pg_notify(notify_channel(), lanes.c.payload)))
    return written, notified.scalar_subquery()
