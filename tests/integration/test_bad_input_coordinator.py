"""Poison on the replies topic: each lands in the DLQ with its reason, the loop goes on.

Against a running coordinator (in process, real Kafka, both databases): a record that
is not JSON, one with the wrong schema, a reply for an unknown saga, one for an unknown
step, and one with a future envelope version. Each must reach the DLQ topic unchanged
(original bytes) with a ``saga.dlq.reason`` header, and a valid reply sent after them
must still complete its saga.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest
from _participant_helpers import read_first
from _scripted import fast_runtime_config, saga_in
from aiokafka import AIOKafkaProducer

from contracts import REPLY_SUCCEEDED, Envelope, MessageKind, StepSucceeded
from saga.coordinator import CoordinatorRuntime, start_saga
from saga.deadletter import REASON_HEADER
from saga.definition import SagaBuilder, pivot
from saga.topics import Topics

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]

ONE_STEP = (
    SagaBuilder("bad_input", version=1)
    .add(pivot("only", participant="worker", command="worker.do", timeout_ms=60_000))
    .build()
)


def reply(saga_id: UUID, *, step: str = "only") -> Envelope:
    return Envelope(
        saga_id=saga_id,
        saga_type="bad_input",
        saga_version=1,
        step=step,
        kind=MessageKind.REPLY,
        type=REPLY_SUCCEEDED,
        payload=StepSucceeded(output={}).model_dump(mode="json"),
    )


def future_version(saga_id: UUID) -> bytes:
    data = json.loads(reply(saga_id).to_bytes())
    data["schema_version"] = 2
    return json.dumps(data).encode()


async def wait_for(check: object, limit_s: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + limit_s
    while loop.time() < end:
        if await check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def read_dlq(bootstrap: str, topic: str, count: int) -> list[tuple[bytes, dict[str, bytes]]]:
    return [
        (r.value or b"", dict(r.headers or ())) for r in await read_first(bootstrap, topic, count)
    ]


async def test_poison_replies_go_to_the_dlq_and_a_valid_reply_still_completes(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    topics = Topics(prefix=topic_prefix)
    config = fast_runtime_config(database_url, kafka_bootstrap, topics, partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    async with CoordinatorRuntime(config, [ONE_STEP]) as runtime:
        task = asyncio.create_task(runtime.run())
        await producer.start()
        try:
            started = await start_saga(
                runtime.store, runtime.definitions, topics, "bad_input", {}, now=datetime.now(UTC)
            )
            sid = started.saga_id

            async def command_sent() -> bool:
                row = await runtime.store.get_saga(str(sid))
                return row is not None and row.state["steps"]["only"]["sent"]

            await wait_for(command_sent)
            poison = {
                "not json": b"not json {",
                "wrong schema": b'{"hello": "world"}',
                "unknown saga": reply(uuid4()).to_bytes(),
                "unknown step": reply(sid, step="no_such_step").to_bytes(),
                "future version": future_version(sid),
            }
            for value in poison.values():
                await producer.send_and_wait(topics.replies, value, key=str(sid).encode())
            await producer.send_and_wait(
                topics.replies, reply(sid).to_bytes(), key=str(sid).encode()
            )
            await saga_in(runtime.store, sid, {"completed"}, within_s=30)
            dead = await read_dlq(kafka_bootstrap, topics.dlq, len(poison))
        finally:
            await producer.stop()
            runtime.stop()
            await asyncio.wait_for(task, 30)

    by_value = {value: headers for value, headers in dead}
    assert len(dead) == len(poison), "each poison record is dead-lettered exactly once"
    for what, value in poison.items():
        assert value in by_value, f"{what}: the original bytes are not on the DLQ"
        reason = by_value[value].get(REASON_HEADER, b"").decode()
        assert reason.strip(), f"{what}: no {REASON_HEADER} header"
    reasons = {what: by_value[v][REASON_HEADER].decode() for what, v in poison.items()}
    assert "schema_version" in reasons["future version"]
    assert "no_such_step" in reasons["unknown step"] or "step" in reasons["unknown step"]
    assert "saga" in reasons["unknown saga"]


async def test_a_dead_letter_replayed_after_its_cause_is_fixed_is_applied(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """The reply of a saga that does not exist yet is dead-lettered; once the saga exists,
    the same record (same message id) replayed is applied, not taken for a duplicate."""
    topics = Topics(prefix=topic_prefix)
    config = fast_runtime_config(database_url, kafka_bootstrap, topics, partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    sid = uuid4()
    early = reply(sid).to_bytes()
    async with CoordinatorRuntime(config, [ONE_STEP]) as runtime:
        task = asyncio.create_task(runtime.run())
        await producer.start()
        try:
            await producer.send_and_wait(topics.replies, early, key=str(sid).encode())
            [(value, _)] = await read_dlq(kafka_bootstrap, topics.dlq, 1)
            assert value == early
            await start_saga(
                runtime.store,
                runtime.definitions,
                topics,
                "bad_input",
                {},
                now=datetime.now(UTC),
                saga_id=sid,
            )

            async def command_sent() -> bool:
                row = await runtime.store.get_saga(str(sid))
                return row is not None and row.state["steps"]["only"]["sent"]

            await wait_for(command_sent)
            await producer.send_and_wait(topics.replies, value, key=str(sid).encode())
            await saga_in(runtime.store, sid, {"completed"}, within_s=30)
        finally:
            await producer.stop()
            runtime.stop()
            await asyncio.wait_for(task, 30)
