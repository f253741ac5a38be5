"""``saga dlq list|show|replay|discard`` against a real Kafka broker and a real database."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from _api_helpers import DEFINITIONS
from _participant_helpers import send_dead_letters
from aiokafka import TopicPartition
from click.testing import CliRunner, Result

from contracts import Envelope, MessageKind, new_message_id
from saga.cli import cli
from saga.coordinator import DefinitionCache
from saga.deadletter import dead_letter_record
from saga.kafka import TopicSpec, committed_consumer, ensure_topics
from saga.operations import SagaOperations
from saga.store import SqlStore, create_engine, upgrade
from saga.topics import Topics

pytestmark = [pytest.mark.kafka]


class World:
    def __init__(self, url: str, topics: Topics, bootstrap: str, saga_id: str) -> None:
        self.url = url
        self.topics = topics
        self.bootstrap = bootstrap
        self.saga_id = saga_id


@pytest.fixture
def world(tmp_path: Path, kafka_bootstrap: str, topic_prefix: str) -> World:
    url = f"sqlite+aiosqlite:///{tmp_path / 'dlq.db'}"
    topics = Topics(prefix=topic_prefix)

    async def prepare() -> str:
        await ensure_topics(
            kafka_bootstrap,
            [
                TopicSpec(name=topics.dlq, partitions=1, replication_factor=1),
                TopicSpec(name=topics.replies, partitions=1, replication_factor=1),
            ],
        )
        engine = create_engine(url)
        try:
            await upgrade(engine)
            store = SqlStore(engine)
            await store.register_partitions(topics.coordinator_group, topics.replies, 1)
            cache = DefinitionCache(store)
            await cache.register(DEFINITIONS)
            started = await SagaOperations(store, cache, topics).start(
                "booking", {"order_id": "o-9"}
            )
        finally:
            await engine.dispose()
        saga_id = str(started.saga_id)
        envelope = Envelope(
            message_id=new_message_id(),
            saga_id=started.saga_id,
            saga_type="booking",
            saga_version=1,
            kind=MessageKind.REPLY,
            type="step.succeeded",
            step="no_such_step",
            attempt=1,
            payload={},
        )
        poison = dead_letter_record(
            topics.replies, 0, 7, b"k-1", b"not json at all", "not JSON", "coordinator:test"
        )
        unknown_step = dead_letter_record(
            topics.replies,
            0,
            8,
            saga_id.encode(),
            envelope.to_bytes(),
            "unknown step no_such_step",
            "coordinator:test",
            original_headers=[("traceparent", b"00-abc-def-01")],
        )
        await send_dead_letters(kafka_bootstrap, topics.dlq, [poison, unknown_step])
        return saga_id

    saga_id = asyncio.run(prepare())
    return World(url, topics, kafka_bootstrap, saga_id)


@pytest.fixture
def run(world: World, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("SAGA_DATABASE_URL", world.url)
    monkeypatch.setenv("SAGA_TOPIC_PREFIX", world.topics.prefix)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", world.bootstrap)
    monkeypatch.delenv("SAGA_DEFINITIONS", raising=False)
    monkeypatch.setenv("COLUMNS", "80")

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)

    return invoke


def _listed(run: Any) -> list[str]:
    """The refs `saga dlq list` shows (the first column: a time such as 20:05 holds "0:0")."""
    lines = run("dlq", "list").output.splitlines()
    return [line.split()[0] for line in lines if line[:1].isdigit() and ":" in line.split()[0]]


def _replies(world: World) -> list[Any]:
    async def read() -> list[Any]:
        consumer = committed_consumer(world.bootstrap)
        tp = TopicPartition(world.topics.replies, 0)
        await consumer.start()
        try:
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]
            found: list[Any] = []
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                found.extend(batch.get(tp, []))
            return found
        finally:
            await consumer.stop()

    return asyncio.run(read())


def test_list_and_show_a_dead_letter(run: Any, world: World) -> None:
    listed = run("dlq", "list")
    assert listed.exit_code == 0, listed.output
    assert sorted(_listed(run)) == ["0:0", "0:1"]
    assert "not JSON" in listed.output
    assert f"{world.topics.replies}[0]@8" in listed.output
    assert all(len(line) <= 80 for line in listed.output.splitlines()[:-1])

    shown = run("dlq", "show", "0:1")
    assert shown.exit_code == 0, shown.output
    assert "unknown step no_such_step" in shown.output
    assert world.saga_id in shown.output
    assert "header       traceparent=00-abc-def-01" in shown.output
    as_json = json.loads(run("dlq", "show", "0:1", "--json").output)
    assert as_json["original_offset"] == 8
    assert as_json["payload"]["step"] == "no_such_step"

    missing = run("dlq", "show", "0:99")
    assert missing.exit_code == 1
    assert "no dead letter at 0:99" in missing.output
    assert run("dlq", "show", "nonsense").exit_code == 2


def test_replay_sends_the_record_back_once_and_lists_hide_it(run: Any, world: World) -> None:
    replayed = run("dlq", "replay", "0:0", "--reason", "parser fixed")
    assert replayed.exit_code == 0, replayed.output
    assert f"replayed 0:0 to {world.topics.replies}" in replayed.output

    [record] = _replies(world)
    assert record.value == b"not json at all"
    assert record.key == b"k-1"
    assert not [k for k, _ in record.headers if k.startswith("saga.dlq.")]

    assert "0:0" not in _listed(run)
    everything = json.loads(run("dlq", "list", "--all", "--json").output)
    [handled] = [r for r in everything if r["ref"] == "0:0"]
    assert handled["handled"]["action"] == "replayed"
    assert handled["handled"]["reason"] == "parser fixed"
    assert handled["handled"]["actor"].startswith("cli")

    again = run("dlq", "replay", "0:0", "--reason", "once more")
    assert again.exit_code == 1
    assert "was replayed by" in again.output
    assert len(_replies(world)) == 1
    assert run("dlq", "replay", "0:0", "--reason", "once more", "--again").exit_code == 0
    assert len(_replies(world)) == 2


def test_discard_is_remembered_and_audited_in_the_saga(run: Any, world: World) -> None:
    assert run("dlq", "discard", "0:1", "--reason", "").exit_code == 2
    done = run("dlq", "discard", "0:1", "--reason", "stale reply, saga moved on")
    assert done.exit_code == 0, done.output
    assert "discarded 0:1" in done.output
    assert "0:1" not in _listed(run)
    assert run("dlq", "discard", "0:1", "--reason", "again").exit_code == 1

    timeline = json.loads(run("status", world.saga_id, "--json").output)["timeline"]
    [audited] = [r for r in timeline if r["detail"].get("verb") == "dlq_discard"]
    assert audited["kind"] == "operator.requested"
    assert audited["detail"]["reason"] == "stale reply, saga moved on"
    assert audited["actor"].startswith("cli")
    assert json.loads(run("status", world.saga_id, "--json").output)["timeline_intact"]
    assert _replies(world) == []
