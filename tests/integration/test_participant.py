"""The participant SDK against real Kafka and both databases."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from _participant_helpers import (
    TRACEPARENT,
    command,
    create_topics,
    envelopes,
    read,
    running,
    send,
)
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    event,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import REPLY_FAILED, REPLY_SUCCEEDED, Frozen, MessageKind, StepFailed
from contracts.envelope import new_message_id
from saga.deadletter import REASON_HEADER, SOURCE_OFFSET_HEADER, SOURCE_TOPIC_HEADER
from saga.participant import (
    INVALID_COMMAND,
    CommandContext,
    Mode,
    Participant,
    ParticipantConfig,
    PermanentError,
    RetriableError,
    reply_message_id,
)
from saga.participant._mode import BatchMode
from saga.relay import RelayConfig
from saga.store.tables import inbox
from saga.topics import Topics

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]

meta = MetaData()
effects = Table(
    "test_effects",
    meta,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("label", String(100), nullable=False),
)


class Work(Frozen):
    label: str
    fail: str | None = None


class SimulatedCrash(Exception):
    pass


def make_participant(
    bootstrap: str, prefix: str, engine: AsyncEngine | None, mode: Mode
) -> tuple[Participant, list[str]]:
    calls: list[str] = []
    participant = Participant(
        ParticipantConfig(
            name="worker", bootstrap_servers=bootstrap, topics=Topics(prefix=prefix), mode=mode
        ),
        engine,
    )

    @participant.command("worker.do", model=Work)
    async def do(cmd: Work, ctx: CommandContext) -> dict[str, object]:
        calls.append(cmd.label)
        if ctx.connection is not None:
            await ctx.connection.execute(insert(effects).values(label=cmd.label))
        if cmd.fail == "permanent":
            raise PermanentError("work.refused", "no way", retry_after_ms=None)
        if cmd.fail == "retriable":
            raise RetriableError("work.busy", "later", retry_after_ms=250)
        if cmd.fail == "crash":
            raise ZeroDivisionError("boom")
        return {"done": cmd.label, "attempt": ctx.attempt}

    @participant.command("worker.undo", model=Work)
    async def undo(cmd: Work, ctx: CommandContext) -> None:
        calls.append(f"undo:{cmd.label}")

    return participant, calls


async def _setup(kafka_bootstrap: str, topic_prefix: str, db_engine: AsyncEngine) -> Topics:
    topics = Topics(prefix=topic_prefix)
    await create_topics(kafka_bootstrap, topics, "worker")
    async with db_engine.begin() as conn:
        await conn.run_sync(meta.create_all)
    return topics


async def _count_effects(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(effects.c.label, func.count()).group_by(effects.c.label))
        return {label: n for label, n in rows.all()}


@pytest.mark.parametrize("mode", [Mode.TRANSACTIONAL, Mode.SIMPLE])
async def test_a_command_gets_exactly_one_success_reply_with_the_right_fields(
    kafka_bootstrap: str, topic_prefix: str, db_engine: AsyncEngine, mode: Mode
) -> None:
    topics = await _setup(kafka_bootstrap, topic_prefix, db_engine)
    participant, calls = make_participant(kafka_bootstrap, topic_prefix, db_engine, mode)
    cmd = command("worker.do", {"label": "a"}, step="reserve", attempt=2)
    comp = command("worker.undo", {"label": "b"}, kind=MessageKind.COMPENSATION)
    async with running(participant):
        await send(kafka_bootstrap, topics.commands("worker"), [cmd, comp])
        records = await read(kafka_bootstrap, topics.replies, 2)

    assert sorted(calls) == ["a", "undo:b"]
    assert len(records) == 2
    by_cause = {e.causation_id: (e, r) for e, r in zip(envelopes(records), records, strict=True)}
    reply, record = by_cause[cmd.message_id]
    assert record.key == str(cmd.saga_id).encode()
    assert ("traceparent", TRACEPARENT) in list(record.headers)
    assert reply.kind is MessageKind.REPLY
    assert reply.type == REPLY_SUCCEEDED
    assert reply.payload == {"output": {"done": "a", "attempt": 2}}
    assert (reply.saga_id, reply.saga_type, reply.saga_version) == (cmd.saga_id, "test_saga", 3)
    assert (reply.step, reply.attempt) == ("reserve", 2)
    assert reply.correlation_id == cmd.correlation_id
    assert reply.message_id == reply_message_id(cmd.message_id)
    undo_reply, _ = by_cause[comp.message_id]
    assert undo_reply.type == REPLY_SUCCEEDED
    assert undo_reply.payload == {"output": {}}


async def test_a_batch_hands_its_replies_to_the_relays_instead_of_announcing_them(
    kafka_bootstrap: str, topic_prefix: str, db_engine: AsyncEngine
) -> None:
    topics = await _setup(kafka_bootstrap, topic_prefix, db_engine)
    participant = Participant(
        ParticipantConfig(
            name="worker",
            bootstrap_servers=kafka_bootstrap,
            topics=topics,
            # No poll: what the relays send without an offer, they found by a read.
            relay=RelayConfig(fallback_poll_ms=600_000, poll_interval_ms=600_000),
        ),
        db_engine,
    )
    participant.command("worker.do", model=Work)(lambda cmd, ctx: None)
    first = command("worker.do", {"label": "a"})
    async with running(participant):
        await send(kafka_bootstrap, topics.commands("worker"), [first])
        await read(kafka_bootstrap, topics.replies, 1, settle_s=0.1)
        # Its relay has marked the first reply by now (mark_after_ms), and reads no more.
        await asyncio.sleep(1.5)
        pool = participant.relays
        assert pool is not None
        before = {shard: relay.handed_over for shard, relay in pool.relays.items()}
        # The same saga: the same partition, whose relay has read its lane already.
        later = [first.model_copy(update={"message_id": new_message_id()}) for _ in range(3)]
        await send(kafka_bootstrap, topics.commands("worker"), later)
        replies = await read(kafka_bootstrap, topics.replies, 4)
        handed = {s: r.handed_over - before.get(s, 0) for s, r in pool.relays.items()}
    assert {e.causation_id for e in envelopes(replies)} == {c.message_id for c in [first, *later]}
    assert sum(handed.values()) == 3, f"sent without a read, per partition: {handed}"


async def test_handler_failures_become_failure_replies_and_roll_back_only_their_writes(
    kafka_bootstrap: str, topic_prefix: str, db_engine: AsyncEngine
) -> None:
    topics = await _setup(kafka_bootstrap, topic_prefix, db_engine)
    participant, _calls = make_participant(
        kafka_bootstrap, topic_prefix, db_engine, Mode.TRANSACTIONAL
    )
    cmds = {
        fail: command("worker.do", {"label": fail, "fail": fail if fail != "ok" else None})
        for fail in ("ok", "permanent", "retriable", "crash")
    }
    async with running(participant):
        await send(kafka_bootstrap, topics.commands("worker"), list(cmds.values()))
        replies = envelopes(await read(kafka_bootstrap, topics.replies, 4))

    by_cause = {r.causation_id: r for r in replies}
    assert len(replies) == 4
    assert by_cause[cmds["ok"].message_id].type == REPLY_SUCCEEDED
    failures = {
        fail: StepFailed.model_validate(by_cause[cmds[fail].message_id].payload)
        for fail in ("permanent", "retriable", "crash")
    }
    assert all(by_cause[cmds[f].message_id].type == REPLY_FAILED for f in failures)
    assert failures["permanent"] == StepFailed(
        code="work.refused", message="no way", retriable=False
    )
    assert failures["retriable"] == StepFailed(
        code="work.busy", message="later", retriable=True, retry_after_ms=250
    )
    assert failures["crash"].code == "handler.exception"
    assert failures["crash"].retriable is True
    assert "ZeroDivisionError" in failures["crash"].message
    # Each failing handler's own insert was rolled back (savepoint); the good one stays.
    assert await _count_effects(db_engine) == {"ok": 1}


async def test_savepoints_are_taken_only_when_a_batch_has_a_failing_handler(
    kafka_bootstrap: str, topic_prefix: str, db_engine: AsyncEngine
) -> None:
    topics = await _setup(kafka_bootstrap, topic_prefix, db_engine)
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        statements.append(sql)

    event.listen(db_engine.sync_engine, "before_cursor_execute", record)
    try:
        participant, _calls = make_participant(
            kafka_bootstrap, topic_prefix, db_engine, Mode.TRANSACTIONAL
        )
        good = [command("worker.do", {"label": f"good-{i}"}) for i in range(3)]
        async with running(participant):
            await send(kafka_bootstrap, topics.commands("worker"), good)
            await read(kafka_bootstrap, topics.replies, 3)
            fast_path = [s for s in statements if "SAVEPOINT" in s.upper()]
            bad = command("worker.do", {"label": "bad", "fail": "crash"})
            await send(kafka_bootstrap, topics.commands("worker"), [bad])
            await read(kafka_bootstrap, topics.replies, 4)
    finally:
        event.remove(db_engine.sync_engine, "before_cursor_execute", record)
    assert fast_path == []
    # The failing batch was redone with savepoints; every good handler wrote once.
    assert any("SAVEPOINT" in s.upper() for s in statements)
    assert await _count_effects(db_engine) == {"good-0": 1, "good-1": 1, "good-2": 1}


async def test_transactional_mode_commits_kafka_offsets_for_lag_monitoring_by_the_stop(
    kafka_bootstrap: str, topic_prefix: str, db_engine: AsyncEngine
) -> None:
    topics = await _setup(kafka_bootstrap, topic_prefix, db_engine)
    participant, _calls = make_participant(
        kafka_bootstrap, topic_prefix, db_engine, Mode.TRANSACTIONAL
    )
    cmds = [command("worker.do", {"label": f"lag-{i}"}) for i in range(5)]
    async with running(participant):
        # The first batch's offsets are committed at once; those of the next batch,
        # within lag_commit_interval_ms of it, wait: the stop commits them.
        await send(kafka_bootstrap, topics.commands("worker"), cmds[:1])
        await read(kafka_bootstrap, topics.replies, 1, settle_s=0)
        await send(kafka_bootstrap, topics.commands("worker"), cmds[1:])
        await read(kafka_bootstrap, topics.replies, 5, settle_s=0)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(participant.config.effective_group_id)
    finally:
        await admin.close()
    assert sum(m.offset for m in committed.values()) == len(cmds)
    # The shared relay transaction's fencing offset stays 0 on the empty fence topic: a
    # monitor of the group's lag sees none there (nor on the busy checkpoint topic).
    assert {tp.topic for tp in committed} <= {topics.commands("worker"), topics.fences}
    assert all(m.offset == 0 for tp, m in committed.items() if tp.topic == topics.fences)


@pytest.mark.parametrize("mode", [Mode.TRANSACTIONAL, Mode.SIMPLE])
async def test_a_duplicate_command_runs_the_handler_once_and_replies_once(
    kafka_bootstrap: str, topic_prefix: str, db_engine: AsyncEngine, mode: Mode
) -> None:
    topics = await _setup(kafka_bootstrap, topic_prefix, db_engine)
    participant, calls = make_participant(kafka_bootstrap, topic_prefix, db_engine, mode)
    cmd = command("worker.do", {"label": "once"})
    async with running(participant):
        await send(kafka_bootstrap, topics.commands("worker"), [cmd, cmd])
        await read(kafka_bootstrap, topics.replies, 1)
        # A redelivery in a later batch as well.
        await send(kafka_bootstrap, topics.commands("worker"), [cmd])
        replies = envelopes(await read(kafka_bootstrap, topics.replies, 1, settle_s=2.0))

    assert calls == ["once"]
    assert [r.causation_id for r in replies] == [cmd.message_id]


async def test_poison_commands_go_to_the_dlq_and_the_loop_goes_on(
    kafka_bootstrap: str, topic_prefix: str, db_engine: AsyncEngine
) -> None:
    topics = await _setup(kafka_bootstrap, topic_prefix, db_engine)
    participant, calls = make_participant(
        kafka_bootstrap, topic_prefix, db_engine, Mode.TRANSACTIONAL
    )
    # Everything on one key, so one partition and a known order.
    key = b"same-key"
    unknown = command("worker.fly", {"label": "x"})
    good = command("worker.do", {"label": "good"})
    poison = [
        (key, b"\xff not json"),
        (key, b'{"saga_id": "not-a-uuid"}'),
        (key, unknown.to_bytes()),
    ]
    async with running(participant):
        await send(kafka_bootstrap, topics.commands("worker"), [*poison, (key, good.to_bytes())])
        replies = envelopes(await read(kafka_bootstrap, topics.replies, 1))
        dead = await read(kafka_bootstrap, topics.dlq, 3)

    assert calls == ["good"]
    assert [r.causation_id for r in replies] == [good.message_id]
    assert [d.value for d in dead] == [value for _, value in poison]
    assert all(d.key == key for d in dead)
    headers = [dict(d.headers) for d in dead]
    reasons = [h[REASON_HEADER].decode() for h in headers]
    assert reasons[0].startswith("bad envelope")
    assert "saga_id" in reasons[1]
    assert "unknown command type 'worker.fly'" in reasons[2]
    assert {h[SOURCE_TOPIC_HEADER].decode() for h in headers} == {topics.commands("worker")}
    assert len({h[SOURCE_OFFSET_HEADER] for h in headers}) == 3


@pytest.mark.parametrize("mode", [Mode.TRANSACTIONAL, Mode.SIMPLE])
async def test_a_command_whose_payload_fails_its_model_gets_a_permanent_failure_reply(
    kafka_bootstrap: str, topic_prefix: str, db_engine: AsyncEngine, mode: Mode
) -> None:
    # A saga input without a field the mapping needs: the saga must compensate at once
    # and say why, not time out on a command that went to the DLQ.
    topics = await _setup(kafka_bootstrap, topic_prefix, db_engine)
    participant, calls = make_participant(kafka_bootstrap, topic_prefix, db_engine, mode)
    bad = command("worker.do", {"nope": 1})
    async with running(participant):
        await send(kafka_bootstrap, topics.commands("worker"), [bad, bad])  # and redelivered
        replies = envelopes(await read(kafka_bootstrap, topics.replies, 1))
        dead = await read(kafka_bootstrap, topics.dlq, 0, settle_s=0.5)

    assert calls == []  # the handler never sees it
    assert len(replies) == 1, "answered once, however often it arrives"
    (reply,) = replies
    assert reply.causation_id == bad.message_id
    assert reply.type == REPLY_FAILED
    failed = StepFailed.model_validate(reply.payload)
    assert failed.code == INVALID_COMMAND
    assert failed.retriable is False
    assert "label" in (failed.message or "")
    assert dead == []


@pytest.mark.parametrize("mode", [Mode.TRANSACTIONAL, Mode.SIMPLE])
async def test_a_crash_between_commit_and_offset_commit_does_not_rerun_the_handler(
    kafka_bootstrap: str,
    topic_prefix: str,
    db_engine: AsyncEngine,
    mode: Mode,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topics = await _setup(kafka_bootstrap, topic_prefix, db_engine)
    first = command("worker.do", {"label": "first"})

    async def crash(self: BatchMode, offsets: object) -> None:
        raise SimulatedCrash

    participant, calls = make_participant(kafka_bootstrap, topic_prefix, db_engine, mode)
    with monkeypatch.context() as patch:
        patch.setattr(BatchMode, "_commit_offsets", crash)
        async with participant:
            await send(kafka_bootstrap, topics.commands("worker"), [first])
            with pytest.raises(SimulatedCrash):
                await asyncio.wait_for(participant.run(), 30)
    assert calls == ["first"]

    if mode is Mode.TRANSACTIONAL:
        # Prove the offsets stored in the database are what counts: without the inbox
        # row, only the seek to the stored offset keeps the handler from running again.
        async with db_engine.begin() as conn:
            await conn.execute(delete(inbox))

    second = command("worker.do", {"label": "second"})
    restarted, calls_after = make_participant(kafka_bootstrap, topic_prefix, db_engine, mode)
    async with running(restarted):
        await send(kafka_bootstrap, topics.commands("worker"), [second])
        replies = envelopes(await read(kafka_bootstrap, topics.replies, 2, settle_s=1.5))

    assert calls_after == ["second"]
    assert sorted(str(r.causation_id) for r in replies) == sorted(
        [str(first.message_id), str(second.message_id)]
    )
    if mode is Mode.TRANSACTIONAL:
        assert await _count_effects(db_engine) == {"first": 1, "second": 1}


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_database_connection_lost_under_a_handler_is_retried_not_answered_as_a_failure(
    kafka_bootstrap: str, topic_prefix: str, db_engine: AsyncEngine
) -> None:
    """The handler's connection is killed twice (in the batch and in its redo with
    savepoints): that is the database failing, not the handler. The batch is retried,
    the participant keeps running, and the command gets one success reply."""
    topics = await _setup(kafka_bootstrap, topic_prefix, db_engine)
    participant = Participant(
        ParticipantConfig(
            name="worker",
            bootstrap_servers=kafka_bootstrap,
            topics=topics,
            mode=Mode.TRANSACTIONAL,
            retry_backoff_ms=50,
        ),
        db_engine,
    )
    calls: list[str] = []

    @participant.command("worker.do", model=Work)
    async def do(cmd: Work, ctx: CommandContext) -> dict[str, object]:
        calls.append(cmd.label)
        assert ctx.connection is not None
        if len(calls) <= 2:
            await ctx.connection.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        await ctx.connection.execute(insert(effects).values(label=cmd.label))
        return {"done": cmd.label}

    cmd = command("worker.do", {"label": "cut"})
    async with running(participant) as task:
        await send(kafka_bootstrap, topics.commands("worker"), [cmd])
        replies = envelopes(await read(kafka_bootstrap, topics.replies, 1, settle_s=1.0))
        assert not task.done(), "the participant rode the lost connection out"
    assert len(calls) == 3
    assert [r.type for r in replies] == [REPLY_SUCCEEDED]
    assert replies[0].causation_id == cmd.message_id
    assert await _count_effects(db_engine) == {"cut": 1}
