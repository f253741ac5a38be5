"""One Kafka transaction for every lane of a process, fenced by the group generation.

Real Kafka and a real database: the relays of several lanes share one transactional
producer (``RelayConfig.producer_per="process"``), and a zombie's batch, whose group has
moved on, is refused by the broker and published once by the lane's new owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterable

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy.ext.asyncio import AsyncEngine
from test_relay import (
    assert_exactly_once_in_order,
    create_tables,
    create_topic,
    insert_rows,
    read_committed,
    read_uncommitted,
    relay_config,
    unpublished_count,
)

from saga.errors import TransportError
from saga.kafka import (
    GroupMember,
    close_quietly,
    group_member_of,
    topic_partitions,
    transactional_producer,
)
from saga.relay import (
    OutboxRow,
    ProcessTransactions,
    Relay,
    RelayConfig,
    RelayPool,
    read_last_checkpoint,
    relay_id_for,
)
from saga.topics import Topics

pytestmark = pytest.mark.kafka

LANES = 4


@contextlib.asynccontextmanager
async def group_member(
    bootstrap: str, topic: str, group_id: str
) -> AsyncIterator[tuple[AIOKafkaConsumer, asyncio.Task[None]]]:
    """A real member of ``group_id`` on ``topic`` that keeps taking part (it polls)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False
    )
    await consumer.start()

    async def take_part() -> None:
        while True:
            await consumer.getmany(timeout_ms=100)

    task = asyncio.create_task(take_part())
    try:
        async with asyncio.timeout(30):
            while not consumer.assignment():  # noqa: ASYNC110 (the client has no event)
                await asyncio.sleep(0.05)
        yield consumer, task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await consumer.stop()


def shared_config(topic_prefix: str, owner_topic: str, shard: int) -> RelayConfig:
    return relay_config(
        topic_prefix, relay_id="", owner_topic=owner_topic, shard=shard, producer_per="process"
    )


def transactions_for(
    bootstrap: str, topics: Topics, owner_topic: str, **kwargs: object
) -> ProcessTransactions:
    config = RelayConfig(producer_per="process", backoff_initial_ms=50)
    return ProcessTransactions(
        bootstrap,
        topics,
        owner_topic,
        config,
        **kwargs,  # type: ignore[arg-type]
    )


@contextlib.asynccontextmanager
async def lane_relays(
    engine: AsyncEngine,
    bootstrap: str,
    topic_prefix: str,
    owner: str,
    shards: Iterable[int],
    shared: ProcessTransactions,
) -> AsyncIterator[list[Relay]]:
    """Open relays of ``shards`` that publish through ``shared``."""
    topics = Topics(prefix=topic_prefix)
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                Relay(
                    engine,
                    bootstrap,
                    topics,
                    shared_config(topic_prefix, owner, shard),
                    transactions=shared,
                )
            )
            for shard in shards
        ]


@dataclasses.dataclass(frozen=True)
class Lanes:
    """The topics of a test: the owner topic (its partitions own the lanes), one target."""

    topics: Topics
    owner: str
    target: str
    group: str


async def make_lanes(bootstrap: str, topic_prefix: str, partitions: int) -> Lanes:
    lanes = Lanes(
        Topics(prefix=topic_prefix),
        f"{topic_prefix}owner",
        f"{topic_prefix}inventory.commands",
        f"{topic_prefix}g",
    )
    await create_topic(bootstrap, lanes.owner, partitions=partitions)
    await create_topic(bootstrap, lanes.target)
    return lanes


@pytest.fixture
async def outbox_db(db_engine: AsyncEngine) -> AsyncEngine:
    await create_tables(db_engine)
    return db_engine


async def test_the_batches_of_every_lane_share_one_transaction_each_with_its_checkpoint(
    outbox_db: AsyncEngine, kafka_bootstrap: str, topic_prefix: str
) -> None:
    lanes = await make_lanes(kafka_bootstrap, topic_prefix, LANES)
    topics, owner, target = lanes.topics, lanes.owner, lanes.target
    first_in_transaction = asyncio.Event()
    release = asyncio.Event()

    async def hold_the_first() -> None:
        first_in_transaction.set()
        await release.wait()

    async with group_member(kafka_bootstrap, owner, f"{topic_prefix}g") as (consumer, _):
        member = group_member_of(consumer, f"{topic_prefix}g")
        shared = transactions_for(kafka_bootstrap, topics, owner, before_commit=hold_the_first)
        shared.start()
        shared.follow(frozenset(range(LANES)), member)
        async with lane_relays(
            outbox_db, kafka_bootstrap, topic_prefix, owner, range(LANES), shared
        ) as relays:
            # Connected first (each reads its checkpoint, which waits for open
            # transactions, the held one included).
            assert [await r.publish_once() for r in relays] == [0] * LANES
            ids = {
                lane: await insert_rows(
                    outbox_db, target, 5, shard=lane, owner_topic=owner, start=lane * 10
                )
                for lane in range(LANES)
            }
            batches = [asyncio.create_task(r.publish_once()) for r in relays]
            await first_in_transaction.wait()
            # While the first transaction is open (with the batches that were there
            # when it began), the other lanes' batches queue up...
            async with asyncio.timeout(30):
                while shared.waiting + shared.in_transaction < LANES:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            first = shared.in_transaction
            release.set()
            assert await asyncio.gather(*batches) == [5] * LANES
            # ... and go out together: two transactions for four lanes' batches (one,
            # if all four were there when the first began).
            assert shared.transactions == (1 if first == LANES else 2)
        await shared.close()
    assert await unpublished_count(outbox_db) == 0
    seen = await read_committed(kafka_bootstrap, target, 5 * LANES)
    # Exactly once (in order per lane; these lanes share keys, so no order across them).
    got = [s.message_id for s in seen]
    assert sorted(got) == sorted(m for lane in range(LANES) for m in ids[lane])
    for lane in range(LANES):
        assert [m for m in got if m in set(ids[lane])] == ids[lane]
    # Every lane's checkpoint names its own rows, under the lane's key.
    partitions = [
        tp.partition for tp in await topic_partitions(kafka_bootstrap, [topics.checkpoints])
    ]
    for lane in range(LANES):
        checkpoint = await read_last_checkpoint(
            kafka_bootstrap, topics.checkpoints, partitions, relays[lane].relay_id
        )
        assert checkpoint.message_ids == ids[lane]
    # The fencing offset is 0 on the empty fence topic, and nothing else: the group
    # shows no lag that the relays' checkpoints of other processes would make grow.
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(f"{topic_prefix}g")
    finally:
        await admin.close()
    assert {tp: m.offset for tp, m in committed.items()} == {TopicPartition(topics.fences, 0): 0}


async def test_a_pool_sharing_one_producer_refuses_lanes_without_a_group_member(
    outbox_db: AsyncEngine, kafka_bootstrap: str, topic_prefix: str
) -> None:
    topics = Topics(prefix=topic_prefix)
    config = RelayConfig(producer_per="process")
    async with RelayPool(
        outbox_db, kafka_bootstrap, topics, topics.replies, config, on_failure=lambda exc: None
    ) as pool:
        pool.follow(frozenset())  # before the first assignment: nothing to fence yet
        with pytest.raises(ValueError, match=r"consumer group generation.*producer_per='lane'"):
            pool.follow(frozenset({0}))
        assert pool.shards == frozenset()


async def test_a_zombie_batch_is_refused_once_the_group_moved_on_and_the_new_owner_publishes_it(
    outbox_db: AsyncEngine, kafka_bootstrap: str, topic_prefix: str
) -> None:
    lanes = await make_lanes(kafka_bootstrap, topic_prefix, 2)
    topics, owner, target = lanes.topics, lanes.owner, lanes.target
    group = lanes.group
    in_transaction = asyncio.Event()
    release = asyncio.Event()

    async def pause() -> None:
        in_transaction.set()
        await release.wait()

    # Lane 1, published by a process whose lowest partition was 0: its producer's id
    # (the lane id of partition 0) is not the new owner's, so only the generation fences.
    ids = await insert_rows(outbox_db, target, 10, shard=1, owner_topic=owner)
    config = shared_config(topic_prefix, owner, 1)
    zombie_tx = transactions_for(kafka_bootstrap, topics, owner, before_commit=pause)
    zombie_tx.start()
    async with group_member(kafka_bootstrap, owner, group) as (old, _):
        old_member: GroupMember = group_member_of(old, group)
        zombie_tx.follow(frozenset({0, 1}), old_member)
        zombie = Relay(outbox_db, kafka_bootstrap, topics, config, transactions=zombie_tx)
        await zombie.__aenter__()
        zombie_batch = asyncio.create_task(zombie.publish_once())
        await in_transaction.wait()  # its records are in the log, uncommitted
    # The old member left; the lane's new owner joins in a new generation.
    async with group_member(kafka_bootstrap, owner, group) as (new, _):
        new_member = group_member_of(new, group)
        assert new_member.generation > old_member.generation
        owner_tx = transactions_for(kafka_bootstrap, topics, owner)
        owner_tx.start()
        owner_tx.follow(frozenset({1}), new_member)  # its relays run lane 1 only
        async with Relay(
            outbox_db, kafka_bootstrap, topics, config, transactions=owner_tx
        ) as successor:
            # Its checkpoint read waits for the zombie's open transaction...
            successor_batch = asyncio.create_task(successor.publish_once())
            await asyncio.sleep(1.0)
            assert not successor_batch.done()
            # ... which the broker refuses once it goes on: the zombie aborts, at once
            # (not after its 60 s transaction timeout), so the successor goes on.
            loop = asyncio.get_running_loop()
            released = loop.time()
            release.set()
            with pytest.raises(TransportError, match="moved on"):
                await zombie_batch
            assert await successor_batch == 10
            assert loop.time() - released < 20
        await owner_tx.close()
    await zombie.__aexit__(None, None, None)
    await zombie_tx.close()
    seen = await read_committed(kafka_bootstrap, target, 10)
    assert_exactly_once_in_order(seen, ids)
    everything = await read_uncommitted(kafka_bootstrap, target, 20)
    assert len(everything) == 20, "the zombie's refused batch reached the log, unseen"


async def test_transactions_left_open_by_dead_owners_of_the_lanes_are_aborted_at_once(
    outbox_db: AsyncEngine, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """A process killed mid-transaction published under the lane id of its lowest
    partition; the new owner's producer (lowest lane) and its fences (other lanes) abort
    such transactions at once instead of after their timeout."""
    lanes = await make_lanes(kafka_bootstrap, topic_prefix, 2)
    topics, owner, target = lanes.topics, lanes.owner, lanes.target
    group = lanes.group
    ids = [
        await insert_rows(outbox_db, target, 5, shard=s, owner_topic=owner, start=10 * s)
        for s in (0, 1)
    ]
    # Two dead processes: each left a transaction open under the id of one lane, with
    # a record on every checkpoint partition (so every checkpoint read must wait).
    checkpoint_partitions = await topic_partitions(kafka_bootstrap, [topics.checkpoints])
    dead = []
    for shard in (0, 1):
        producer = transactional_producer(
            kafka_bootstrap, relay_id_for(owner, shard), transaction_timeout_ms=120_000
        )
        await producer.start()
        await producer.begin_transaction()
        for tp in checkpoint_partitions:
            await (await producer.send(tp.topic, b"{}", key=b"dead", partition=tp.partition))
        dead.append(producer)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with group_member(kafka_bootstrap, owner, group) as (consumer, _):
        shared = transactions_for(kafka_bootstrap, topics, owner)
        shared.start()
        shared.follow(frozenset({0, 1}), group_member_of(consumer, group))
        assert shared.transactional_id == relay_id_for(owner, 0)
        async with lane_relays(
            outbox_db, kafka_bootstrap, topic_prefix, owner, (0, 1), shared
        ) as relays:
            async with asyncio.timeout(60):
                assert await asyncio.gather(*(r.publish_once() for r in relays)) == [5, 5]
        await shared.close()
    assert loop.time() - started < 40, "the dead transactions were aborted, not timed out"
    seen = await read_committed(kafka_bootstrap, target, 10)
    assert sorted(s.message_id for s in seen) == sorted(ids[0] + ids[1])
    for producer in dead:
        await close_quietly(producer)


async def test_a_lane_is_gained_again_after_a_missed_generation_and_stale_batches_are_refused(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    """Held in generations 5 and 6, a lane was ours throughout; held in 6 and then 8,
    someone else may have published it in 7: its relay must read its checkpoint again,
    and a batch it prepared before is refused unsent."""
    topics = Topics(prefix=topic_prefix)
    owner = f"{topic_prefix}owner"
    group = f"{topic_prefix}g"
    await create_topic(kafka_bootstrap, owner, partitions=2)
    shared = transactions_for(kafka_bootstrap, topics, owner)
    shared.start()
    try:
        shared.follow(frozenset({0, 1}), GroupMember(group, 5, "m"))
        first = await shared.recover_lane(1)
        shared.follow(frozenset({0, 1}), GroupMember(group, 6, "m"))
        assert await shared.recover_lane(1) == first, "kept: no new recovery needed"
        shared.follow(frozenset({0, 1}), GroupMember(group, 8, "m"))
        again = await shared.recover_lane(1)
        assert again != first
        row = OutboxRow(1, "m-1", f"{topic_prefix}x", None, [], b"{}")
        with pytest.raises(TransportError, match="reads it again"):
            await shared.publish(1, first, "lane-1", [row], ["m-1"])
        shared.follow(frozenset({0}), GroupMember(group, 9, "m"))
        with pytest.raises(TransportError, match="not assigned here"):
            await shared.recover_lane(1)
        assert shared.transactions == 0
    finally:
        await shared.close()


class _GatedFences(ProcessTransactions):
    """Fences that wait for a gate first, so that a rebalance can come meanwhile."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.gate = asyncio.Event()

    async def _fence_lane(self, shard: int) -> None:
        await self.gate.wait()
        await super()._fence_lane(shard)


async def test_a_relay_waiting_for_its_lanes_fence_waits_for_the_next_one_after_a_rebalance(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    """A rebalance that gains the lane again replaces its fence; the relay that waited
    for the old one gets the new epoch, not the old fence's cancellation."""
    topics = Topics(prefix=topic_prefix)
    owner = f"{topic_prefix}owner"
    group = f"{topic_prefix}g"
    await create_topic(kafka_bootstrap, owner, partitions=2)
    config = RelayConfig(producer_per="process", backoff_initial_ms=50)
    shared = _GatedFences(kafka_bootstrap, topics, owner, config)
    shared.start()
    try:
        shared.follow(frozenset({0, 1}), GroupMember(group, 5, "m"))
        recovering = asyncio.create_task(shared.recover_lane(1))
        async with asyncio.timeout(30):
            while shared.transactional_id is None or shared._producer is None:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        assert not recovering.done(), "it waits for the lane's fence"
        shared.follow(frozenset({0, 1}), GroupMember(group, 1, "another-member"))
        await asyncio.sleep(0.1)
        assert not recovering.done(), "it waits for the new fence"
        shared.gate.set()
        async with asyncio.timeout(30):
            epoch = await recovering
        assert epoch == shared._lane_epochs[1], "the epoch of the latest assignment"
    finally:
        await shared.close()


async def test_a_cancellation_let_out_by_the_kafka_client_fails_one_transaction_only(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    """aiokafka can let a CancelledError out of its operations when a connection dies.
    Only that transaction fails; the next one commits (the lanes do not wait forever)."""
    lanes = await make_lanes(kafka_bootstrap, topic_prefix, 1)
    topics, owner, target = lanes.topics, lanes.owner, lanes.target
    group = lanes.group
    strays = [asyncio.CancelledError()]

    async def stray_cancellation() -> None:
        if strays:
            raise strays.pop()

    async with group_member(kafka_bootstrap, owner, group) as (consumer, _):
        shared = transactions_for(kafka_bootstrap, topics, owner, before_commit=stray_cancellation)
        shared.start()
        try:
            shared.follow(frozenset({0}), group_member_of(consumer, group))
            epoch = await shared.recover_lane(0)
            first = OutboxRow(1, "m-1", target, None, [], b'{"message_id": "m-1", "seq": 1}')
            with pytest.raises(TransportError, match="cancelled"):
                await shared.publish(0, epoch, "lane-0", [first], ["m-1"])
            second = OutboxRow(2, "m-2", target, None, [], b'{"message_id": "m-2", "seq": 2}')
            async with asyncio.timeout(30):
                await shared.publish(0, await shared.recover_lane(0), "lane-0", [second], ["m-2"])
            assert shared.transactions == 1
        finally:
            await shared.close()
    seen = await read_committed(kafka_bootstrap, target, 1)
    assert [s.message_id for s in seen] == ["m-2"]


async def test_a_relay_asks_for_the_current_shared_producer_after_it_was_replaced(
    outbox_db: AsyncEngine, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """The shared producer is replaced when the lowest lane changes; a lane whose relay
    kept the old one (closed) waited for ever on it for a new topic's metadata."""
    topics = Topics(prefix=topic_prefix)
    owner = f"{topic_prefix}owner"
    first_topic = f"{topic_prefix}inventory.commands"
    new_topic = f"{topic_prefix}payments.commands"
    group = f"{topic_prefix}g"
    await create_topic(kafka_bootstrap, owner, partitions=2)
    await create_topic(kafka_bootstrap, first_topic)
    await create_topic(kafka_bootstrap, new_topic)
    async with group_member(kafka_bootstrap, owner, group) as (consumer, _):
        member = group_member_of(consumer, group)
        shared = transactions_for(kafka_bootstrap, topics, owner)
        shared.start()
        shared.follow(frozenset({1}), member)
        async with lane_relays(outbox_db, kafka_bootstrap, topic_prefix, owner, (1,), shared) as (
            relay,
        ):
            first = await insert_rows(outbox_db, first_topic, 3, shard=1, owner_topic=owner)
            assert await relay.publish_once() == 3
            old_producer = await shared.producer()
            # Lane 0 comes: the process now publishes under lane 0's id, on a new producer.
            shared.follow(frozenset({0, 1}), member)
            await shared.recover_lane(0)
            assert await shared.producer() is not old_producer
            later = await insert_rows(outbox_db, new_topic, 3, shard=1, owner_topic=owner, start=3)
            async with asyncio.timeout(20):
                while True:
                    try:
                        if await relay.publish_once():
                            break
                    except TransportError:  # lane 1 was gained again: it recovers first
                        continue
        await shared.close()
    assert_exactly_once_in_order(await read_committed(kafka_bootstrap, first_topic, 3), first)
    assert_exactly_once_in_order(await read_committed(kafka_bootstrap, new_topic, 3), later)
