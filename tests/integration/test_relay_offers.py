"""Rows handed over to the relay by the writer of its lane, instead of read back.

Real Kafka and a real database (SQLite and PostgreSQL): the rows are committed by the
participant's own outbox write, unannounced, then offered as a participant does.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from test_relay import (
    KEYS,
    assert_exactly_once_in_order,
    create_tables,
    create_topic,
    read_committed,
    relay_config,
    unpublished_count,
    wait_until_published,
)

from saga.participant._db import write_outbox
from saga.participant._records import OutgoingRecord
from saga.relay import OutboxRow, Relay, RelayPool
from saga.topics import Topics

pytestmark = pytest.mark.postgres

QUIET = {"fallback_poll_ms": 600_000, "poll_interval_ms": 600_000}
"""No poll: only a notification, an offer or a due mark make the relay look."""


@pytest.fixture
async def lane_db(db_engine: AsyncEngine) -> AsyncEngine:
    await create_tables(db_engine)
    return db_engine


@pytest.fixture
async def replies(kafka_bootstrap: str, topic_prefix: str) -> str:
    await create_topic(kafka_bootstrap, name := f"{topic_prefix}inventory.replies")
    return name


async def commit_unannounced(
    engine: AsyncEngine, topic: str, count: int, *, start: int = 0, shard: int = 0
) -> list[OutboxRow]:
    """Commit ``count`` rows of lane ``("", shard)`` as a participant batch that hands
    them over: without a notification. Returns them as the relay would read them."""
    records = []
    for seq in range(start, start + count):
        message_id = str(uuid.uuid4())
        records.append(
            OutgoingRecord(
                topic=topic,
                key=KEYS[seq % len(KEYS)],
                value=json.dumps({"message_id": message_id, "seq": seq}).encode(),
                headers=(("seq", str(seq).encode()),),
                row_id=message_id,
                shard=shard,
            )
        )
    async with engine.begin() as conn:
        lanes = await write_outbox(conn, records, owner_topic="", announce=False)
    return lanes[shard]


async def until(condition: Callable[[], bool], within_s: float = 20) -> None:
    async with asyncio.timeout(within_s):
        # The relay's own counters: nothing to wait on but time.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_rows_handed_over_after_their_commit_go_out_without_a_read(
    lane_db: AsyncEngine, kafka_bootstrap: str, topic_prefix: str, replies: str
) -> None:
    config = relay_config(topic_prefix, mark_after_ms=200, **QUIET)
    relay = Relay(lane_db, kafka_bootstrap, Topics(prefix=topic_prefix), config)
    assert not relay.takes_offers, "a relay that is not open takes no offers"
    async with relay:
        relay.start()
        await asyncio.sleep(1.0)  # connected; its first read found nothing
        assert relay.takes_offers
        sent: list[OutboxRow] = []
        for batch in range(3):
            rows = await commit_unannounced(lane_db, replies, 4, start=batch * 4)
            relay.offer(rows)
            sent += rows
            expected = len(sent)
            await until(lambda: relay.published == expected)  # noqa: B023 (awaited here)
        assert relay.handed_over == 12, "every row went out as it was offered"
        await wait_until_published(lane_db, within_s=10)  # and each was marked
    seen = await read_committed(kafka_bootstrap, replies, 12)
    assert_exactly_once_in_order(seen, [r.message_id for r in sent])
    assert [s.seq for s in seen if s.key == KEYS[0]] == [0, 3, 6, 9]
    assert seen[0].headers["seq"] == str(seen[0].seq).encode(), "headers as read back"


async def test_a_row_offered_after_a_read_returned_it_is_sent_once(
    lane_db: AsyncEngine, kafka_bootstrap: str, topic_prefix: str, replies: str
) -> None:
    # The race an offer can lose: a read that started after the commit returns the rows
    # before their writer offers them.
    config = relay_config(topic_prefix, **QUIET)
    async with Relay(lane_db, kafka_bootstrap, Topics(prefix=topic_prefix), config) as relay:
        relay.start()
        await asyncio.sleep(1.0)
        first = await commit_unannounced(lane_db, replies, 5)
        relay.wake()  # a notification of another writer: the relay reads
        await until(lambda: relay.published == 5)
        relay.offer(first)  # late
        later = await commit_unannounced(lane_db, replies, 3, start=5)
        relay.offer(later)
        await until(lambda: relay.published >= 8)
        await asyncio.sleep(0.5)
        assert relay.published == 8
    seen = await read_committed(kafka_bootstrap, replies, 8)
    assert_exactly_once_in_order(seen, [r.message_id for r in first + later])
    assert relay.handed_over <= 3, "the late copies of the first rows never went out"


async def test_an_offer_that_comes_while_a_read_is_under_way_is_sent_once(
    lane_db: AsyncEngine, kafka_bootstrap: str, topic_prefix: str, replies: str
) -> None:
    config = relay_config(topic_prefix, batch_size=100, **QUIET)
    async with Relay(lane_db, kafka_bootstrap, Topics(prefix=topic_prefix), config) as relay:
        relay.start()
        await asyncio.sleep(1.0)
        rows = await commit_unannounced(lane_db, replies, 50)
        relay.wake()
        await asyncio.sleep(0)  # let the read start
        relay.offer(rows)  # while it runs: the copies must not go out again
        await until(lambda: relay.published >= 50)
        await asyncio.sleep(0.5)
        assert relay.published == 50
    seen = await read_committed(kafka_bootstrap, replies, 50)
    assert_exactly_once_in_order(seen, [r.message_id for r in rows])


async def test_rows_nobody_offered_go_out_with_the_next_read(
    lane_db: AsyncEngine, kafka_bootstrap: str, topic_prefix: str, replies: str
) -> None:
    # A commit whose answer was lost: the writer offers nothing and asks for a read.
    # No consumer group drives this pool, so its lanes keep producers of their own.
    config = relay_config(topic_prefix, producer_per="lane", **QUIET)
    topics = Topics(prefix=topic_prefix)
    async with RelayPool(
        lane_db, kafka_bootstrap, topics, "", config, on_failure=lambda exc: None
    ) as pool:
        pool.follow(frozenset({0}))
        await until(lambda: pool.takes_offers({0}))
        await asyncio.sleep(1.0)
        lost = await commit_unannounced(lane_db, replies, 3)
        await asyncio.sleep(0.5)
        assert await unpublished_count(lane_db) == 3, "unannounced and not offered"
        pool.read({0})
        await until(lambda: pool.published == 3)
        offered = await commit_unannounced(lane_db, replies, 2, start=3)
        pool.offer({0: offered})
        await until(lambda: pool.published == 5)
        assert pool.relays[0].handed_over == 2
        assert not pool.takes_offers({0, 1}), "no relay runs for partition 1 here"
    seen = await read_committed(kafka_bootstrap, replies, 5)
    assert_exactly_once_in_order(seen, [r.message_id for r in lost + offered])


async def test_unannounced_rows_go_out_on_the_fallback_poll(
    lane_db: AsyncEngine, kafka_bootstrap: str, topic_prefix: str, replies: str
) -> None:
    config = relay_config(topic_prefix, fallback_poll_ms=300, poll_interval_ms=300)
    async with Relay(lane_db, kafka_bootstrap, Topics(prefix=topic_prefix), config) as relay:
        relay.start()
        await asyncio.sleep(1.0)
        rows = await commit_unannounced(lane_db, replies, 3)
        await wait_until_published(lane_db, within_s=10)
    seen = await read_committed(kafka_bootstrap, replies, 3)
    assert_exactly_once_in_order(seen, [r.message_id for r in rows])
    assert relay.handed_over == 0
