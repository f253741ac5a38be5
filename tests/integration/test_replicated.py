"""Several coordinators, participant replicas and participants on one database.

Each test runs on SQLite and PostgreSQL, through real Kafka, with the default settings
(nothing configured per replica): what a user gets by starting the same process twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from _participant_helpers import command, create_topics, envelopes, read, send
from _scripted import ScriptedParticipants, fast_runtime_config, looping
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from test_coordinator_e2e import PARTICIPANTS, trip

from contracts import Frozen
from saga.coordinator import CoordinatorRuntime, RuntimeConfig, start_saga
from saga.engine import SagaStatus
from saga.errors import ConfigError, PartitionFenced
from saga.participant import CommandContext, Participant, ParticipantConfig
from saga.relay import RelayConfig
from saga.store import (
    OutboxMessage,
    SqlStore,
    claim_partitions,
    commit_offsets,
    create_engine,
    load_offsets,
    upgrade,
)
from saga.store.tables import consumer_offsets, outbox
from saga.topics import Topics

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]

NOW = datetime(2026, 12, 1, tzinfo=UTC)


async def eventually(condition: Callable[[], object], timeout_s: float = 60) -> None:
    """Wait until ``condition()`` is true (polled every 0.1 s)."""
    async with asyncio.timeout(timeout_s):
        while True:
            if condition():
                return
            await asyncio.sleep(0.1)


PRODUCERS = pytest.mark.parametrize("producer_per", ["lane", "process"])
"""The relays' producer kinds these tests run with."""


def runtime_config(
    database_url: str, bootstrap: str, topics: Topics, producer_per: str = "lane"
) -> RuntimeConfig:
    # The same config for every replica, as one environment would give.
    config = fast_runtime_config(database_url, bootstrap, topics, partitions=4)
    assert config.relay is not None
    return replace(config, relay=replace(config.relay, producer_per=producer_per))


@contextlib.asynccontextmanager
async def coordinator(config: RuntimeConfig) -> AsyncIterator[tuple[CoordinatorRuntime, Any]]:
    async with CoordinatorRuntime(config, [trip()]) as runtime, looping(runtime) as task:
        yield runtime, task


async def wait_statuses(
    store: SqlStore, saga_ids: list[Any], *, timeout_s: float = 90
) -> dict[str, str]:
    async with asyncio.timeout(timeout_s):
        while True:
            rows = {sid: await store.get_saga(str(sid)) for sid in saga_ids}
            statuses = {str(s): r.status for s, r in rows.items() if r is not None}
            if len(statuses) == len(saga_ids) and all(
                s == SagaStatus.COMPLETED for s in statuses.values()
            ):
                return statuses
            await asyncio.sleep(0.2)


def assert_each_command_once(parts: ScriptedParticipants, expected: int) -> None:
    """Every command the participants received arrived once, and all of them did."""
    counts = Counter(str(e.message_id) for e in parts.received)
    assert max(counts.values()) == 1, counts.most_common(3)
    assert len(parts.received) == expected


async def start_trips(store: SqlStore, runtime: CoordinatorRuntime, n: int, tag: str) -> list[Any]:
    ids = []
    for i in range(n):
        started = await start_saga(
            store,
            runtime.definitions,
            runtime.config.topics,
            "trip",
            {"city": f"c{i}"},
            now=datetime.now(UTC),
            idempotency_key=f"{tag}-{i}",
        )
        ids.append(started.saga_id)
    return ids


@PRODUCERS
async def test_two_coordinators_with_default_settings_share_the_work_and_finish_every_saga(
    database_url: str, kafka_bootstrap: str, topic_prefix: str, producer_per: str
) -> None:
    topics = Topics(prefix=topic_prefix)
    config = runtime_config(database_url, kafka_bootstrap, topics, producer_per)
    async with (
        ScriptedParticipants(kafka_bootstrap, topics, PARTICIPANTS, {}) as parts,
        coordinator(config) as (first, first_task),
        coordinator(config) as (second, second_task),
    ):
        # Both members hold partitions once the group has settled.
        await eventually(
            lambda: (
                first.coordinator
                and second.coordinator
                and first.coordinator.consumer.epochs
                and second.coordinator.consumer.epochs
            )
        )
        assert first.coordinator is not None
        assert second.coordinator is not None
        owned = set(first.coordinator.consumer.epochs) | set(second.coordinator.consumer.epochs)
        assert owned == {0, 1, 2, 3}
        assert not set(first.coordinator.consumer.epochs) & set(second.coordinator.consumer.epochs)
        ids = await start_trips(first.store, first, 20, "two")
        await wait_statuses(first.store, ids)
        # Neither crash-looped: both runtimes are still running.
        assert not first_task.done()
        assert not second_task.done()
        # Both relays published (each its own partitions), and no command went out twice.
        assert first.relays is not None
        assert second.relays is not None
        assert first.relays.published > 0
        assert second.relays.published > 0
    assert_each_command_once(parts, 20 * 4)


@PRODUCERS
async def test_sagas_finish_when_a_coordinator_leaves_and_another_joins(
    database_url: str, kafka_bootstrap: str, topic_prefix: str, producer_per: str
) -> None:
    topics = Topics(prefix=topic_prefix)
    config = runtime_config(database_url, kafka_bootstrap, topics, producer_per)
    async with (
        ScriptedParticipants(kafka_bootstrap, topics, PARTICIPANTS, {}) as parts,
        coordinator(config) as (stayer, stayer_task),
    ):
        async with coordinator(config):
            ids = await start_trips(stayer.store, stayer, 15, "before")
            await asyncio.sleep(0.5)  # some in flight when it leaves
        # The leaver stopped: its partitions move to the stayer, which finishes all.
        more = await start_trips(stayer.store, stayer, 10, "after")
        async with coordinator(config) as (joiner, _):
            # Joined: the group gave it partitions (the stayer may finish the earlier
            # sagas before that, so wait for it rather than for the sagas).
            await eventually(lambda: joiner.coordinator and joiner.coordinator.consumer.epochs)
            ids += more + await start_trips(stayer.store, stayer, 10, "joined")
            await wait_statuses(stayer.store, ids)
            assert joiner.coordinator is not None
            assert joiner.coordinator.consumer.epochs, "it still holds partitions"
        assert not stayer_task.done()
    assert_each_command_once(parts, 35 * 4)


async def test_a_zombie_coordinators_late_batch_is_rejected(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    topics = Topics(prefix=topic_prefix)
    config = replace(runtime_config(database_url, kafka_bootstrap, topics), partitions=1)
    async with (
        ScriptedParticipants(kafka_bootstrap, topics, PARTICIPANTS, {}) as parts,
        coordinator(config) as (zombie, task),
    ):
        await eventually(lambda: zombie.coordinator and zombie.coordinator.consumer.epochs)
        assert zombie.coordinator is not None
        group = zombie.coordinator.group_id
        # Another member claims the partition in the database (as after a rebalance
        # this coordinator slept through).
        async with zombie.engine.begin() as conn:
            await claim_partitions(conn, group, topics.replies, [0], member="newer", now=NOW)
        (saga_id,) = await start_trips(zombie.store, zombie, 1, "zombie")
        # The command goes out and is answered; the zombie's batch applying the reply
        # must not commit: the saga stays at its first step, the offsets stay put.
        await eventually(lambda: parts.received, 30)
        await eventually(lambda: not zombie.coordinator.consumer.epochs, 30)  # type: ignore[union-attr]
        await asyncio.sleep(1.0)
        row = await zombie.store.get_saga(str(saga_id))
        assert row is not None
        assert row.status == SagaStatus.RUNNING
        assert [e.type for e in parts.received] == ["hotel.book"]
        async with zombie.engine.connect() as conn:
            owner = (
                await conn.execute(
                    select(consumer_offsets.c.owner, consumer_offsets.c.next_offset).where(
                        consumer_offsets.c.topic == topics.replies
                    )
                )
            ).one()
        assert owner.owner == "newer"
        assert owner.next_offset is None
        assert not task.done()  # fenced is no crash: it waits for the next rebalance


async def test_a_stored_offset_never_moves_backwards_and_a_stale_epoch_commits_nothing(
    db_engine: AsyncEngine,
) -> None:
    await upgrade(db_engine)
    store = SqlStore(db_engine)
    async with db_engine.begin() as conn:
        old = await claim_partitions(conn, "g", "replies", [0, 1], member="old", now=NOW)
    async with db_engine.begin() as conn:
        await commit_offsets(
            conn, "g", "replies", {0: 10, 1: 3}, {0: old[0].epoch, 1: old[1].epoch}
        )
    # The same owner can never move an offset back.
    with pytest.raises(PartitionFenced) as back:
        async with db_engine.begin() as conn:
            await commit_offsets(conn, "g", "replies", {0: 5}, {0: old[0].epoch})
    assert back.value.partitions == [0]
    async with db_engine.begin() as conn:
        new = await claim_partitions(conn, "g", "replies", [0], member="new", now=NOW)
    assert new[0].epoch == old[0].epoch + 1
    assert new[0].next_offset == 10

    async def late_batch() -> None:
        async with store.transaction() as tx:
            await tx.enqueue(
                [OutboxMessage(message_id="m-late", topic="t", key=b"k", payload=b"v")]
            )
            await tx.commit_offsets("g", "replies", {0: 20}, {0: old[0].epoch})

    # The old owner's late batch (state, outbox rows, offsets) rolls back as a whole.
    with pytest.raises(PartitionFenced):
        await late_batch()
    async with db_engine.connect() as conn:
        assert (await conn.execute(select(outbox.c.message_id))).all() == []
        assert await load_offsets(conn, "g", "replies") == {0: 10, 1: 3}
    # Partition 1 was not claimed again: the old owner may still commit it, forwards.
    async with db_engine.begin() as conn:
        await commit_offsets(conn, "g", "replies", {1: 4}, {1: old[1].epoch})
        await commit_offsets(conn, "g", "replies", {0: 11}, {0: new[0].epoch})
    async with db_engine.connect() as conn:
        assert await load_offsets(conn, "g", "replies") == {0: 11, 1: 4}


async def test_a_second_consumer_group_on_one_topic_and_database_is_refused(
    db_engine: AsyncEngine,
) -> None:
    await upgrade(db_engine)
    async with db_engine.begin() as conn:
        await claim_partitions(
            conn, "inventory.participant", "inventory.commands", [0], member="a", now=NOW
        )
    with pytest.raises(ConfigError, match="publish each result twice"):
        async with db_engine.begin() as conn:
            await claim_partitions(conn, "other", "inventory.commands", [0], member="b", now=NOW)


class Job(Frozen):
    n: int


def job_participant(
    name: str, bootstrap: str, topics: Topics, engine: AsyncEngine, producer_per: str = "lane"
) -> Participant:
    participant = Participant(
        ParticipantConfig(
            name=name,
            bootstrap_servers=bootstrap,
            topics=topics,
            poll_timeout_ms=50,
            relay=RelayConfig(producer_per=producer_per),  # type: ignore[arg-type]
        ),
        engine,
    )

    @participant.command(f"{name}.do", model=Job)
    async def do(cmd: Job, ctx: CommandContext) -> dict[str, int]:
        return {"n": cmd.n}

    return participant


@PRODUCERS
async def test_participants_and_replicas_sharing_one_database_publish_each_reply_once(
    database_url: str, kafka_bootstrap: str, topic_prefix: str, producer_per: str
) -> None:
    topics = Topics(prefix=topic_prefix)
    await create_topics(kafka_bootstrap, topics, "alpha", "beta")
    engine = create_engine(database_url)
    # Two replicas of alpha and one beta, each with the default settings, one database.
    members = [
        job_participant("alpha", kafka_bootstrap, topics, engine, producer_per),
        job_participant("alpha", kafka_bootstrap, topics, engine, producer_per),
        job_participant("beta", kafka_bootstrap, topics, engine, producer_per),
    ]
    try:
        async with contextlib.AsyncExitStack() as stack:
            tasks = []
            for member in members:
                await stack.enter_async_context(member)
                tasks.append(asyncio.create_task(member.run()))
            # Both alpha replicas own a partition (the commands topics have two).
            await eventually(lambda: all(m.owned for m in members))
            alpha = [command("alpha.do", {"n": i}) for i in range(20)]
            beta = [command("beta.do", {"n": i}) for i in range(10)]
            await send(kafka_bootstrap, topics.commands("alpha"), alpha)
            await send(kafka_bootstrap, topics.commands("beta"), beta)
            replies = envelopes(await read(kafka_bootstrap, topics.replies, 30, settle_s=2.0))
            assert not any(t.done() for t in tasks)
            for member in members:
                member.stop()
            await asyncio.gather(*tasks)
    finally:
        await engine.dispose()
    counts = Counter(str(r.message_id) for r in replies)
    assert len(replies) == 30
    assert max(counts.values()) == 1, counts.most_common(3)
    assert {r.causation_id for r in replies} == {c.message_id for c in alpha + beta}


async def test_a_participant_whose_relay_fails_for_good_stops_loudly(
    database_url: str, kafka_bootstrap: str, topic_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A replica that consumes while nothing publishes its replies would time out every
    # saga it touches: run() ends with the relay's error instead, for a restart.
    from saga.relay import Relay

    async def broken(self: Relay) -> None:
        raise ConfigError("this relay cannot publish")

    monkeypatch.setattr(Relay, "run_until_stopped", broken)
    topics = Topics(prefix=topic_prefix)
    await create_topics(kafka_bootstrap, topics, "alpha")
    engine = create_engine(database_url)
    try:
        participant = job_participant("alpha", kafka_bootstrap, topics, engine)
        async with participant:
            with pytest.raises(ConfigError, match="this relay cannot publish"):
                await asyncio.wait_for(participant.run(), 60)
    finally:
        await engine.dispose()
