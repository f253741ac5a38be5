"""Waking the relays: PostgreSQL ``NOTIFY`` of the outbox lanes a transaction wrote.

A transaction that enqueues outbox rows notifies the lanes it wrote; the notification
is delivered when it commits (and never if it rolls back), so a relay that LISTENs
wakes as soon as there is something to publish instead of at its next poll.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from sqlalchemy import ColumnElement, Text, bindparam, func, literal, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from saga.store import tables as t
from saga.store._errors import translate_errors

NOTIFY_CHANNEL: Final = "saga_outbox"
"""Prefix of the PostgreSQL channels the relays LISTEN on, one per schema and owner topic:
``saga_outbox.<md5(current_schema() || '/' || owner_topic)>``.

A channel per owner topic, not one per schema: every notification wakes every process
that listens on its channel (and a PostgreSQL backend for each), so with one channel
the commit of any outbox row woke the coordinator and every participant, three of four
of them for nothing. The md5 keeps the name within PostgreSQL's 63 bytes for any schema
and topic. The payload names the lane written, ``<owner_topic>:<shard>`` (``:`` never
occurs in a topic name), so only that lane's relay wakes; an empty payload wakes every
relay of the channel."""


def lane_payload(owner_topic: str, shard: int) -> str:
    """The NOTIFY payload that wakes the relay of one outbox lane."""
    return f"{owner_topic}:{shard}"


def notify_channel(owner_topic: ColumnElement[str]) -> ColumnElement[str]:
    """The channel of an owner topic in the current schema, in SQL (see ``NOTIFY_CHANNEL``)."""
    return func.concat(
        NOTIFY_CHANNEL + ".", func.md5(func.concat(func.current_schema(), "/", owner_topic))
    )


async def notify_outbox(conn: AsyncConnection, lanes: Iterable[tuple[str, int]]) -> None:
    """Wake the relays of the given ``(owner_topic, shard)`` lanes when ``conn`` commits.

    PostgreSQL only (a channel per schema and owner topic, so deployments and tests
    sharing a database in different schemas never wake each other's relays); a no-op
    elsewhere. One statement for all lanes (``pg_notify`` over arrays of channels and
    payloads): a batch that wrote to every shard pays one round trip, not one per shard.
    """
    if conn.dialect.name != "postgresql":
        return
    written = sorted(lanes)
    if not written:
        return
    owner_topics = [owner_topic for owner_topic, _ in written]
    payloads = [lane_payload(owner_topic, shard) for owner_topic, shard in written]
    lane = (
        func.unnest(
            bindparam(None, owner_topics, type_=ARRAY(Text)),
            bindparam(None, payloads, type_=ARRAY(Text)),
        )
        .table_valued("owner_topic", "payload")
        .render_derived(name="lanes")
    )
    channel = notify_channel(lane.c.owner_topic)
    await conn.execute(select(func.pg_notify(channel, lane.c.payload)).select_from(lane))


async def outbox_channel(engine: AsyncEngine, owner_topic: str) -> str:
    """The NOTIFY channel of ``owner_topic``'s lanes in the engine's schema.

    Worked out by the database with the SQL that the writers notify with (see
    ``NOTIFY_CHANNEL``); a relay LISTENs on this name.
    """
    with translate_errors("read the outbox notification channel"):
        async with engine.connect() as conn:
            channel = notify_channel(literal(owner_topic, Text))
            return str((await conn.execute(select(channel))).scalar_one())


def outbox_written_and_notified(insert: Any, name: str) -> tuple[Any, Any]:
    """PostgreSQL: ``insert`` (of outbox rows) as a CTE, and a scalar that notifies its lanes.

    Returns:
        The CTE (columns ``id``, ``message_id``, ``owner_topic``, ``shard`` of the rows
        written) and a scalar subquery that wakes the relay of each lane they belong to.
    """
    c = t.outbox.c
    written = insert.returning(c.id, c.message_id, c.owner_topic, c.shard).cte(name)
    lanes = (
        select(
            written.c.owner_topic,
            func.concat(written.c.owner_topic, ":", written.c.shard).label("payload"),
        )
        .distinct()
        .subquery(f"{name}_lanes")
    )
    # Evaluated once (an uncorrelated scalar subquery) whenever a row was written.
    # PostgreSQL delivers one notification per channel and payload per transaction.
    channel = notify_channel(lanes.c.owner_topic)
    notified = select(func.count(func.pg_notify(channel, lanes.c.payload)))
    return written, notified.scalar_subquery()
