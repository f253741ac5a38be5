"""The contract every saga store implementation must honour.

:class:`StoreContract` is abstract: a subclass per backend provides the ``store_url``
and ``unreachable_url`` fixtures (``test_store_sqlite.py``, ``test_store_postgres.py``).
Tests go through the store's public API; only the tamper tests of the audit chain edit
the database directly with SQL, as an attacker would.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import NAMESPACE_URL, uuid4, uuid5

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from saga.errors import (
    ConcurrencyConflict,
    ConfigError,
    DefinitionConflict,
    DuplicateMessage,
    PartitionFenced,
    SagaNotFound,
    StoreUnavailable,
)
from saga.store import (
    GENESIS,
    AuditWrite,
    BreakReason,
    JsonText,
    OffsetCommit,
    OutboxMessage,
    SagaStart,
    SagaStore,
    SagaWrite,
    SqlStore,
    StepExecutionWrite,
    TimerKey,
    TimerRow,
    TimerWrite,
    claim_partitions,
    create_engine,
    load_offsets,
    record_hash,
    upgrade,
    verify_chain,
)

NOW = datetime(2025, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)
Sql = Callable[..., Awaitable[list[Any]]]


async def start(store: SagaStore, saga: SagaWrite, **first: Any) -> tuple[str, bool]:
    """``store.start_saga`` of ``saga`` with the first writes given by keyword."""
    return await store.start_saga(SagaStart(saga=saga, **first))


def new_id() -> str:
    return str(uuid4())


def saga_write(
    saga_id: str | None = None,
    *,
    revision: int = 1,
    expected: int | None = None,
    status: str = "running",
    saga_type: str = "order",
    key: str | None = None,
    created_at: datetime = NOW,
) -> SagaWrite:
    sid = saga_id or new_id()
    return SagaWrite(
        saga_id=sid,
        saga_type=saga_type,
        saga_version=1,
        status=status,
        context={"order": 7},
        state={"saga_id": sid, "revision": revision, "steps": {}},
        revision=revision,
        expected_revision=expected,
        idempotency_key=key,
        correlation_id=sid,
        deadline_at=created_at + timedelta(hours=1),
        created_at=created_at,
        updated_at=created_at + timedelta(seconds=revision),
    )


def message(
    mid: str | None = None, *, topic: str = "orders.commands", key: bytes = b"k", shard: int = 0
) -> OutboxMessage:
    return OutboxMessage(
        message_id=mid or new_id(),
        topic=topic,
        key=key,
        headers=[("traceparent", "00-abc-def-01")],
        payload=b'{"hello": "world"}',
        shard=shard,
    )


def audit(saga_id: str, kind: str, n: int = 0) -> AuditWrite:
    return AuditWrite(
        saga_id=saga_id,
        kind=kind,
        step="reserve",
        attempt=1,
        actor="coordinator",
        detail={"n": n, "id": uuid5(NAMESPACE_URL, str(n))},  # a UUID is stored as text
        recorded_at=NOW + timedelta(milliseconds=n),
    )


def timer_message(row: TimerRow) -> OutboxMessage:
    return OutboxMessage(
        message_id=str(uuid5(NAMESPACE_URL, f"timer:{row.saga_id}:{row.kind}:{row.step}")),
        topic="saga.replies",
        key=row.saga_id.encode(),
        headers=[],
        payload=json.dumps({"timer": row.kind, "step": row.step}).encode(),
        shard=0,
    )


class StoreContract:
    """What every store must do, through the :class:`saga.store.SagaStore` protocol only.

    Abstract test class: subclass it and provide a ``store`` fixture (a fresh, empty
    store). Another adapter (an in-memory one, say) passes by passing these tests.
    """

    @pytest.fixture
    def store(self) -> SagaStore:
        raise NotImplementedError("subclasses provide a fresh, empty store")

    # -- starting sagas ------------------------------------------------------------------

    async def test_start_with_an_existing_saga_id_is_refused(self, store: SagaStore) -> None:
        w = saga_write()
        await start(store, w)
        with pytest.raises(DuplicateMessage) as info:
            await start(store, saga_write(w.saga_id))
        assert info.value.saga_id == w.saga_id

    async def test_concurrent_starts_with_one_key_create_one_saga(self, store: SagaStore) -> None:
        writes = [saga_write(key="client-race") for _ in range(5)]
        results = await asyncio.gather(*(start(store, w, outbox=[message()]) for w in writes))
        assert sum(created for _, created in results) == 1
        winner = next(sid for sid, created in results if created)
        assert {sid for sid, _ in results} == {winner}
        assert await store.outbox_backlog() == 1

    # -- loading, locking and optimistic concurrency -------------------------------------

    async def test_load_for_update_returns_existing_sagas_by_id(self, store: SagaStore) -> None:
        a, b = saga_write(), saga_write()
        await start(store, a)
        await start(store, b)
        async with store.transaction() as tx:
            rows = await tx.load_sagas_for_update([b.saga_id, new_id(), a.saga_id, a.saga_id])
        assert list(rows) == sorted([a.saga_id, b.saga_id])
        assert rows[a.saga_id].revision == 1

    async def test_save_with_the_expected_revision_updates_the_saga(self, store: SagaStore) -> None:
        w = saga_write()
        await start(store, w)
        async with store.transaction() as tx:
            rows = await tx.load_sagas_for_update([w.saga_id])
            nxt = saga_write(w.saga_id, revision=2, expected=rows[w.saga_id].revision)
            await tx.save_sagas([nxt])
        row = await store.get_saga(w.saga_id)
        assert row is not None
        assert (row.revision, row.updated_at) == (2, nxt.updated_at)
        assert row.created_at == w.created_at

    async def test_state_given_as_json_text_is_stored_as_that_json(self, store: SagaStore) -> None:
        w = saga_write()
        expected = {"saga_id": w.saga_id, "steps": {"a": {"n": [1, 2.5, None]}}}
        async with store.transaction() as tx:
            # Encoded once by the caller; a second encoding would store a JSON string.
            await tx.save_sagas([replace(w, state=JsonText(json.dumps(expected)))])
        row = await store.get_saga(w.saga_id)
        assert row is not None
        assert json.loads(row.state_json) == row.state == expected
        async with store.transaction() as tx:
            locked = await tx.load_sagas_for_update([w.saga_id])
        assert locked[w.saga_id].state == expected

    async def test_updating_a_missing_saga_raises_saga_not_found(self, store: SagaStore) -> None:
        with pytest.raises(SagaNotFound):
            async with store.transaction() as tx:
                await tx.save_sagas([saga_write(revision=2, expected=1)])

    async def test_a_second_writer_waits_for_the_first_and_sees_its_revision(
        self, store: SagaStore
    ) -> None:
        w = saga_write()
        await start(store, w)
        locked = asyncio.Event()

        async def first() -> None:
            async with store.transaction() as tx:
                await tx.load_sagas_for_update([w.saga_id])
                locked.set()
                await asyncio.sleep(0.3)
                await tx.save_sagas([saga_write(w.saga_id, revision=2, expected=1)])

        async def second() -> int:
            await locked.wait()
            async with store.transaction() as tx:
                rows = await tx.load_sagas_for_update([w.saga_id])
                return rows[w.saga_id].revision

        _, seen = await asyncio.gather(first(), second())
        assert seen == 2

    async def test_sagas_with_deferred_work_are_found_per_participant(
        self, store: SagaStore
    ) -> None:
        def deferred(status: str) -> SagaWrite:
            w = saga_write(status=status)
            state = {**w.state, "steps": {"charge": {"deferred": True}, "ship": {}}}
            return replace(w, state=state)

        held, done, other = deferred("running"), deferred("completed"), deferred("running")
        for w, participant in ((held, "payments"), (done, "payments"), (other, "shipping")):
            record = AuditWrite(
                saga_id=w.saga_id,
                kind="command.deferred",
                step="charge",
                attempt=1,
                detail={"participant": participant},
                recorded_at=NOW,
            )
            await start(store, w, audit=[record])
        assert await store.sagas_with_deferred("payments", limit=10) == [held.saga_id]
        assert await store.sagas_with_deferred("shipping", limit=10) == [other.saga_id]
        assert await store.sagas_with_deferred("inventory", limit=10) == []

    # -- inbox and offsets ---------------------------------------------------------------

    async def test_inbox_claims_each_id_once(self, store: SagaStore) -> None:
        a, b, c = new_id(), new_id(), new_id()
        async with store.transaction() as tx:
            assert await tx.claim_message_ids([a, b, a]) == [a, b]
            assert await tx.claim_message_ids([b]) == []  # in the same transaction, too
        async with store.transaction() as tx:
            assert await tx.claim_message_ids([c, b, a]) == [c]
        async with store.transaction() as tx:
            assert await tx.claim_message_ids([a, b, c]) == []

    async def test_registered_partitions_give_the_partition_count(self, store: SagaStore) -> None:
        assert await store.partition_count("saga.replies") is None
        await store.register_partitions("g", "saga.replies", 6)
        await store.register_partitions("g", "saga.replies", 6)
        assert await store.partition_count("saga.replies") == 6
        with pytest.raises(ConfigError, match="twice"):
            await store.register_partitions("another-group", "saga.replies", 6)

    # -- outbox --------------------------------------------------------------------------

    async def test_enqueue_skips_real_duplicates_and_refuses_id_clashes(
        self, store: SagaStore
    ) -> None:
        m = message()
        async with store.transaction() as tx:
            await tx.enqueue([m, m])
        async with store.transaction() as tx:
            await tx.enqueue([m])  # a replayed timer or dead letter: skipped
        assert await store.outbox_backlog() == 1
        with pytest.raises(DuplicateMessage) as info:
            async with store.transaction() as tx:
                await tx.enqueue([message(m.message_id, topic="elsewhere")])
        assert info.value.message_id == m.message_id

    # -- step executions -----------------------------------------------------------------

    async def test_step_executions_upsert_on_their_natural_key(self, store: SagaStore) -> None:
        w = saga_write()
        await start(store, w)

        def step(status: str, at: datetime, attempt: int = 1) -> StepExecutionWrite:
            return StepExecutionWrite(
                saga_id=w.saga_id,
                step="charge",
                attempt=attempt,
                kind="command",
                status=status,
                started_at=at,
                finished_at=None if status == "sent" else at,
                error_code="declined" if status == "failed" else None,
            )

        later = NOW + timedelta(seconds=5)
        async with store.transaction() as tx:
            await tx.record_steps([step("sent", NOW), step("failed", later)])
        async with store.transaction() as tx:
            await tx.record_steps([step("sent", later, attempt=2)])
        async with store.transaction() as tx:
            await tx.record_steps([step("succeeded", later + timedelta(seconds=1), attempt=2)])
        rows = await store.step_executions(w.saga_id)
        assert [(r.attempt, r.status, r.error_code) for r in rows] == [
            (1, "failed", "declined"),
            (2, "succeeded", None),
        ]
        assert rows[0].started_at == NOW  # the first write's start is kept
        assert rows[1].started_at == later
        assert rows[1].finished_at == later + timedelta(seconds=1)

    # -- timers --------------------------------------------------------------------------

    async def test_next_timer_due_is_the_earliest_timer_left(self, store: SagaStore) -> None:
        assert await store.next_timer_due() is None
        sid = new_id()
        soon, later = NOW + timedelta(minutes=5), NOW + timedelta(hours=1)
        async with store.transaction() as tx:
            await tx.set_timers(
                [
                    TimerWrite(saga_id=sid, kind="k", step="a", attempt=1, due_at=later),
                    TimerWrite(saga_id=sid, kind="k", step="b", attempt=1, due_at=soon),
                ]
            )
        assert await store.next_timer_due() == soon
        assert await store.claim_due_timers(soon, 10, timer_message) == 1
        assert await store.next_timer_due() == later
        async with store.transaction() as tx:
            await tx.cancel_timers([TimerKey(saga_id=sid, kind="k", step="a", attempt=1)])
        assert await store.next_timer_due() is None

    async def test_concurrent_claimers_never_fire_a_timer_twice(self, store: SagaStore) -> None:
        n = 120
        async with store.transaction() as tx:
            await tx.set_timers(
                [
                    TimerWrite(saga_id=new_id(), kind="k", step=f"s{i}", attempt=1, due_at=NOW)
                    for i in range(n)
                ]
            )
        built: list[int] = []

        def to_message(row: TimerRow) -> OutboxMessage:
            built.append(row.id)
            return timer_message(row)

        async def claimer() -> int:
            fired = 0
            while (k := await store.claim_due_timers(NOW, 7, to_message)) > 0:
                fired += k
                await asyncio.sleep(0)
            return fired

        results = await asyncio.gather(claimer(), claimer(), claimer())
        assert sum(results) == n
        assert len(built) == len(set(built)) == n
        assert await store.outbox_backlog() == n

    # -- audit chain ---------------------------------------------------------------------

    async def _chain(self, store: SagaStore, saga_id: str, n: int) -> None:
        async with store.transaction() as tx:
            await tx.append_audit([audit(saga_id, f"k{i}", i) for i in range(1, 3)])
        async with store.transaction() as tx:
            await tx.append_audit([audit(saga_id, f"k{i}", i) for i in range(3, n + 1)])

    async def test_audit_chain_appends_per_saga_and_verifies(self, store: SagaStore) -> None:
        a, b = new_id(), new_id()
        await self._chain(store, a, 5)
        async with store.transaction() as tx:
            await tx.append_audit([audit(b, "x", 1), audit(a, "k6", 6), audit(b, "y", 2)])
        trail = await store.audit_trail(a)
        assert [r.seq for r in trail] == [1, 2, 3, 4, 5, 6]
        assert trail[0].prev_hash == GENESIS
        assert all(r.prev_hash == p.hash for p, r in itertools.pairwise(trail))
        assert trail[0].detail == {"n": 1, "id": str(uuid5(NAMESPACE_URL, "1"))}
        assert trail[0].recorded_at == NOW + timedelta(milliseconds=1)
        assert [r.kind for r in await store.audit_trail(b)] == ["x", "y"]
        assert verify_chain(trail + await store.audit_trail(b)) == []

    # -- definitions ---------------------------------------------------------------------

    async def test_definition_registry_refuses_a_changed_definition(self, store: SagaStore) -> None:
        body = {"name": "order", "steps": [{"name": "reserve"}]}
        await store.register_definition("order", 1, "a" * 64, body)
        await store.register_definition("order", 1, "a" * 64, body)  # same hash: no-op
        await store.register_definition("order", 2, "b" * 64, body)
        await store.register_definition("billing", 1, "c" * 64, {"name": "billing"})
        with pytest.raises(DefinitionConflict) as info:
            await store.register_definition("order", 1, "d" * 64, body)
        assert "a" * 64 in str(info.value)
        assert "d" * 64 in str(info.value)
        assert await store.load_definition("order", 1) == ("a" * 64, body)
        assert await store.load_definition("order", 3) is None
        assert await store.list_definitions() == [("billing", 1), ("order", 1), ("order", 2)]

    # -- listing -------------------------------------------------------------------------

    async def test_list_sagas_filters_and_pages_newest_first(self, store: SagaStore) -> None:
        made: list[SagaWrite] = []
        for i in range(9):
            # Two pairs share a creation time: the id breaks the tie.
            at = NOW + timedelta(minutes=i // 2 * 2 if i < 4 else i)
            w = saga_write(
                saga_type="order" if i % 3 else "refund",
                status="completed" if i % 2 else "running",
                created_at=at,
            )
            made.append(w)
            await start(store, w)
        expected = [
            w.saga_id for w in sorted(made, key=lambda w: (w.created_at, w.saga_id), reverse=True)
        ]
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            rows, cursor = await store.list_sagas(limit=4, cursor=cursor)
            seen.extend(r.saga_id for r in rows)
            pages += 1
            if cursor is None:
                break
        assert seen == expected
        assert pages == 3
        rows, _ = await store.list_sagas(saga_type="refund", limit=50)
        assert {r.saga_id for r in rows} == {w.saga_id for w in made if w.saga_type == "refund"}
        rows, _ = await store.list_sagas(status="completed")
        assert {r.status for r in rows} == {"completed"}
        assert len(rows) == 4
        rows, _ = await store.list_sagas(status=["completed", "running"])
        assert len(rows) == 9
        lo, hi = NOW + timedelta(minutes=4), NOW + timedelta(minutes=7)
        rows, _ = await store.list_sagas(created_from=lo, created_to=hi)
        assert {r.saga_id for r in rows} == {w.saga_id for w in made if lo <= w.created_at < hi}


class SqlStoreContract(StoreContract):
    """The contract on an SQL database, plus what only SQL shows: the rows themselves.

    Abstract: subclass it and provide ``store_url`` and ``unreachable_url``.
    """

    @pytest.fixture
    def store_url(self) -> str:
        raise NotImplementedError("subclasses provide a fresh database URL")

    @pytest.fixture
    def unreachable_url(self) -> str:
        raise NotImplementedError("subclasses provide a URL whose database cannot be reached")

    @pytest.fixture
    async def engine(self, store_url: str) -> AsyncIterator[AsyncEngine]:
        engine = create_engine(store_url)
        try:
            await upgrade(engine)
            yield engine
        finally:
            await engine.dispose()

    @pytest.fixture
    def store(self, engine: AsyncEngine) -> SagaStore:
        return SqlStore(engine)

    @pytest.fixture
    def sql(self, engine: AsyncEngine) -> Sql:
        async def run(statement: str, **params: Any) -> list[Any]:
            async with engine.begin() as conn:
                result = await conn.execute(text(statement), params)
                return list(result) if result.returns_rows else []

        return run

    async def test_commits_that_set_timers_tell_the_listeners_the_earliest(
        self, engine: AsyncEngine
    ) -> None:
        store = SqlStore(engine)
        heard: list[datetime] = []
        remove = store.on_timers_set(heard.append)
        sid = new_id()

        def timer(step: str, due: datetime) -> TimerWrite:
            return TimerWrite(saga_id=sid, kind="k", step=step, attempt=1, due_at=due)

        async with store.transaction() as tx:
            await tx.set_timers([timer("a", NOW + timedelta(hours=1))])
            await tx.set_timers([timer("b", NOW), timer("c", NOW + timedelta(minutes=1))])
            assert heard == [], "nobody hears of a timer before its commit"
        assert heard == [NOW]
        async with store.transaction() as tx:
            await tx.cancel_timers([TimerKey(saga_id=sid, kind="k", step="a", attempt=1)])
        assert heard == [NOW], "a commit that set no timer tells nobody"

        async def rolled_back() -> None:
            async with store.transaction() as tx:
                await tx.set_timers([timer("d", NOW)])
                raise RuntimeError("rolled back")

        with pytest.raises(RuntimeError):
            await rolled_back()
        assert heard == [NOW], "a rolled-back timer is not heard of"
        remove()
        async with store.transaction() as tx:
            await tx.set_timers([timer("e", NOW)])
        assert heard == [NOW]

    async def test_start_saga_writes_everything_in_one_transaction(
        self, store: SagaStore, sql: Sql
    ) -> None:
        w = saga_write(key="client-1")
        saga_id, created = await start(
            store,
            w,
            outbox=[message(), message()],
            timers=[TimerWrite(saga_id=w.saga_id, kind="deadline", step="", attempt=1, due_at=NOW)],
            audit=[audit(w.saga_id, "saga.started")],
            steps=[
                StepExecutionWrite(
                    saga_id=w.saga_id,
                    step="reserve",
                    attempt=1,
                    kind="command",
                    status="sent",
                    started_at=NOW,
                )
            ],
        )
        assert (saga_id, created) == (w.saga_id, True)
        row = await store.get_saga(saga_id)
        assert row is not None
        assert (row.status, row.revision, row.idempotency_key) == ("running", 1, "client-1")
        assert row.context == {"order": 7}
        assert row.state == w.state
        assert row.created_at == NOW  # aware UTC, microseconds kept
        assert row.deadline_at == NOW + timedelta(hours=1)
        assert await store.outbox_backlog() == 2
        assert [s.status for s in await store.step_executions(saga_id)] == ["sent"]
        assert [a.kind for a in await store.audit_trail(saga_id)] == ["saga.started"]
        assert len(await sql("SELECT id FROM saga_timers")) == 1

    async def test_start_with_a_known_idempotency_key_returns_the_saga_and_writes_nothing(
        self, store: SagaStore, sql: Sql
    ) -> None:
        first = saga_write(key="client-2")
        await start(store, first, outbox=[message()], audit=[audit(first.saga_id, "a")])
        retry = saga_write(key="client-2")
        result = await start(
            store,
            retry,
            outbox=[message()],
            audit=[audit(retry.saga_id, "a")],
            idempotency_key="client-2",
        )
        assert result == (first.saga_id, False)
        assert await store.get_saga(retry.saga_id) is None
        assert await store.outbox_backlog() == 1
        assert await store.audit_trail(retry.saga_id) == []

    async def test_stale_revision_conflicts_and_rolls_back_the_whole_batch(
        self, store: SagaStore
    ) -> None:
        w = saga_write()
        await start(store, w, audit=[audit(w.saga_id, "saga.started")])
        async with store.transaction() as tx:  # another writer moves it to revision 2
            await tx.save_sagas([saga_write(w.saga_id, revision=2, expected=1)])
        ids = [new_id(), new_id()]
        epochs = await claim(store, "group", "saga.replies", [0])

        async def stale_batch() -> None:
            async with store.transaction() as tx:
                assert await tx.claim_message_ids(ids) == ids
                await tx.enqueue([message(), message()])
                await tx.commit_offsets("group", "saga.replies", {0: 42}, epochs)
                await tx.append_audit([audit(w.saga_id, "step.succeeded")])
                await tx.set_timers(
                    [TimerWrite(saga_id=w.saga_id, kind="t", step="s", attempt=1, due_at=NOW)]
                )
                await tx.save_sagas([saga_write(w.saga_id, revision=2, expected=1)])

        with pytest.raises(ConcurrencyConflict) as info:
            await stale_batch()
        assert info.value.saga_id == w.saga_id
        # Nothing of the batch persisted (the inbox ids are new again).
        async with store.transaction() as tx:
            assert await tx.claim_message_ids(ids) == ids
        assert await store.outbox_backlog() == 0
        assert await stored_offsets(store, "group", "saga.replies") == {}
        assert [a.kind for a in await store.audit_trail(w.saga_id)] == ["saga.started"]
        assert await store.claim_due_timers(NOW, 10, timer_message) == 0
        row = await store.get_saga(w.saga_id)
        assert row is not None
        assert row.revision == 2

    async def test_offsets_round_trip_per_group_and_topic(self, store: SagaStore) -> None:
        replies = await claim(store, "g1", "replies", [0, 1])
        other = await claim(store, "g1", "other", [0])
        async with store.transaction() as tx:
            await tx.commit_offsets("g1", "replies", {0: 5, 1: 7}, replies)
            await tx.commit_offsets("g1", "other", {0: 1}, other)
        async with store.transaction() as tx:
            await tx.commit_offsets("g1", "replies", {1: 9}, replies)
        assert await stored_offsets(store, "g1", "replies") == {0: 5, 1: 9}
        assert await stored_offsets(store, "g1", "other") == {0: 1}
        assert await stored_offsets(store, "g2", "replies") == {}

    async def test_a_claim_fences_the_previous_owner_and_resumes_at_its_offsets(
        self, store: SagaStore
    ) -> None:
        old = await claim(store, "g", "replies", [0])
        async with store.transaction() as tx:
            await tx.commit_offsets("g", "replies", {0: 8}, old)
        new = await claim(store, "g", "replies", [0])
        assert new[0] == old[0] + 1
        with pytest.raises(PartitionFenced):
            async with store.transaction() as tx:
                await tx.commit_offsets("g", "replies", {0: 9}, old)
        assert await stored_offsets(store, "g", "replies") == {0: 8}
        assert await store.partition_count("replies") == 1

    async def test_outbox_ids_follow_enqueue_order_and_backlog_counts_unpublished(
        self, store: SagaStore, sql: Sql
    ) -> None:
        batch1 = [message(shard=i % 2) for i in range(5)]
        # Random message ids: a batch inserted out of order would show in the ids' order.
        batch2 = [message() for _ in range(300)]
        for batch in (batch1, batch2):
            async with store.transaction() as tx:
                await tx.enqueue(batch)
        rows = await sql("SELECT id, message_id, headers, key, shard FROM saga_outbox ORDER BY id")
        assert [r.message_id for r in rows] == [m.message_id for m in batch1 + batch2]
        assert [r.shard for r in rows[:5]] == [0, 1, 0, 1, 0]
        assert bytes(rows[0].key) == b"k"
        headers = (
            rows[0].headers if not isinstance(rows[0].headers, str) else json.loads(rows[0].headers)
        )
        assert headers == [["traceparent", "00-abc-def-01"]]
        assert await store.outbox_backlog() == 305
        await sql(
            "UPDATE saga_outbox SET published_at = :at WHERE id IN (:a, :b)",
            at=NOW,
            a=rows[0].id,
            b=rows[1].id,
        )
        assert await store.outbox_backlog() == 303

    async def test_timers_set_move_cancel_and_fire_once(self, store: SagaStore, sql: Sql) -> None:
        sid = new_id()

        def timer(kind: str, due: datetime) -> TimerWrite:
            return TimerWrite(saga_id=sid, kind=kind, step="s", attempt=1, due_at=due)

        async with store.transaction() as tx:
            await tx.set_timers(
                [timer("a", NOW), timer("b", NOW), timer("c", NOW), timer("later", NOW)]
            )
        async with store.transaction() as tx:
            await tx.set_timers([timer("later", NOW + timedelta(hours=1))])  # moved
            await tx.cancel_timers(
                [
                    TimerKey(saga_id=sid, kind="c", step="s", attempt=1),
                    TimerKey(saga_id=sid, kind="never-set", step="s", attempt=1),
                ]
            )
        assert await store.claim_due_timers(NOW, 10, timer_message) == 2
        assert await store.claim_due_timers(NOW, 10, timer_message) == 0
        rows = await sql("SELECT topic, key FROM saga_outbox ORDER BY id")
        assert [(r.topic, bytes(r.key)) for r in rows] == [("saga.replies", sid.encode())] * 2
        assert await store.claim_due_timers(NOW + timedelta(hours=2), 10, timer_message) == 1

    # -- a batch's writes at once ----------------------------------------------------------

    async def test_write_batch_writes_what_the_separate_calls_write(
        self, store: SagaStore, sql: Sql
    ) -> None:
        # One saga started, one moved on, in one call; timers set, moved and cancelled
        # (a timer cancelled and set again in one call is set), audit chains extended
        # twice in one transaction, outbox rows in order and a replayed one skipped.
        old, new = saga_write(), saga_write()
        await start(store, old, audit=[audit(old.saga_id, "saga.started")])
        replayed = message()
        async with store.transaction() as tx:
            await tx.enqueue([replayed])

        def timer(sid: str, kind: str, due: datetime) -> TimerWrite:
            return TimerWrite(saga_id=sid, kind=kind, step="s", attempt=1, due_at=due)

        def key(sid: str, kind: str) -> TimerKey:
            return TimerKey(saga_id=sid, kind=kind, step="s", attempt=1)

        def step(sid: str, status: str) -> StepExecutionWrite:
            return StepExecutionWrite(
                saga_id=sid,
                step="reserve",
                attempt=1,
                kind="command",
                status=status,
                started_at=NOW,
                finished_at=None if status == "running" else NOW + timedelta(seconds=1),
            )

        async with store.transaction() as tx:
            await tx.set_timers([timer(old.saga_id, "gone", NOW), timer(old.saga_id, "kept", NOW)])
        sent = [message(), message(), message()]
        async with store.transaction() as tx:
            await tx.load_sagas_for_update([old.saga_id])
            await tx.write_batch(
                sagas=[new, saga_write(old.saga_id, revision=2, expected=1, status="done")],
                steps=[step(old.saga_id, "running"), step(old.saga_id, "succeeded")],
                outbox=[sent[0], replayed, sent[1], sent[2]],
                timers_cancelled=[key(old.saga_id, "gone"), key(old.saga_id, "kept")],
                timers_set=[timer(old.saga_id, "kept", NOW + timedelta(hours=1))],
                audit=[audit(old.saga_id, "a", 1), audit(new.saga_id, "saga.started", 2)],
            )
            await tx.append_audit([audit(old.saga_id, "b", 3)])
        moved = await store.get_saga(old.saga_id)
        assert moved is not None
        assert (moved.revision, moved.status) == (2, "done")
        assert json.loads(moved.state_json) == {"saga_id": old.saga_id, "revision": 2, "steps": {}}
        assert moved.context == {"order": 7}
        assert await store.get_saga(new.saga_id) is not None
        (execution,) = await store.step_executions(old.saga_id)
        assert execution.status == "succeeded"
        rows = await sql("SELECT message_id FROM saga_outbox ORDER BY id")
        assert [r.message_id for r in rows] == [replayed.message_id, *(m.message_id for m in sent)]
        timers = await sql("SELECT kind, due_at FROM saga_timers ORDER BY kind")
        assert [r.kind for r in timers] == ["kept"]
        trail = await store.audit_trail(old.saga_id)
        assert [r.kind for r in trail] == ["saga.started", "a", "b"]
        assert verify_chain(trail + await store.audit_trail(new.saga_id)) == []

    async def test_write_batch_with_a_stale_revision_writes_nothing(self, store: SagaStore) -> None:
        w = saga_write()
        await start(store, w)
        async with store.transaction() as tx:  # another writer moves it to revision 2
            await tx.save_sagas([saga_write(w.saga_id, revision=2, expected=1)])
        with pytest.raises(ConcurrencyConflict):
            async with store.transaction() as tx:
                await tx.write_batch(
                    sagas=[saga_write(w.saga_id, revision=2, expected=1)],
                    outbox=[message()],
                    audit=[audit(w.saga_id, "step.succeeded")],
                )
        assert await store.outbox_backlog() == 0
        assert await store.audit_trail(w.saga_id) == []

    async def test_write_batch_refuses_an_outbox_id_taken_by_another_message(
        self, store: SagaStore
    ) -> None:
        m = message()
        async with store.transaction() as tx:
            await tx.enqueue([m])
        with pytest.raises(DuplicateMessage) as info:
            async with store.transaction() as tx:
                await tx.write_batch(outbox=[message(), message(m.message_id, topic="elsewhere")])
        assert info.value.message_id == m.message_id
        assert await store.outbox_backlog() == 1

    async def test_write_batch_stores_offsets_fenced_by_their_epochs(
        self, store: SagaStore
    ) -> None:
        w = saga_write()
        await start(store, w)
        old = await claim(store, "g", "replies", [0, 1])
        async with store.transaction() as tx:
            await tx.write_batch(
                outbox=[message()], offsets=OffsetCommit("g", "replies", {0: 5, 1: 7}, old)
            )
        assert await stored_offsets(store, "g", "replies") == {0: 5, 1: 7}
        new = await claim(store, "g", "replies", [1])  # another member takes partition 1

        async def fenced_batch() -> None:
            async with store.transaction() as tx:
                await tx.load_sagas_for_update([w.saga_id])
                await tx.write_batch(
                    sagas=[saga_write(w.saga_id, revision=2, expected=1)],
                    outbox=[message()],
                    audit=[audit(w.saga_id, "step.succeeded")],
                    offsets=OffsetCommit("g", "replies", {0: 6, 1: 8}, old),
                )

        with pytest.raises(PartitionFenced) as info:
            await fenced_batch()
        assert info.value.partitions == [1]
        # Nothing of the fenced batch persisted.
        assert await stored_offsets(store, "g", "replies") == {0: 5, 1: 7}
        assert await store.outbox_backlog() == 1
        assert await store.audit_trail(w.saga_id) == []
        row = await store.get_saga(w.saga_id)
        assert row is not None
        assert row.revision == 1
        async with store.transaction() as tx:  # offsets alone, at the new epoch
            await tx.write_batch(offsets=OffsetCommit("g", "replies", {1: 9}, new))
        assert await stored_offsets(store, "g", "replies") == {0: 5, 1: 9}

    async def test_verify_chain_detects_an_altered_record(self, store: SagaStore, sql: Sql) -> None:
        sid = new_id()
        await self._chain(store, sid, 4)
        await sql(
            "UPDATE saga_audit_log SET actor = 'mallory' WHERE saga_id = :s AND seq = 2", s=sid
        )
        breaks = verify_chain(await store.audit_trail(sid))
        assert [(b.seq, b.reason) for b in breaks] == [(2, BreakReason.ALTERED)]

    async def test_verify_chain_detects_a_deleted_record(self, store: SagaStore, sql: Sql) -> None:
        sid = new_id()
        await self._chain(store, sid, 4)
        await sql("DELETE FROM saga_audit_log WHERE saga_id = :s AND seq = 2", s=sid)
        breaks = verify_chain(await store.audit_trail(sid))
        assert [(b.seq, b.reason) for b in breaks] == [(2, BreakReason.MISSING)]

    async def test_verify_chain_detects_an_inserted_record(
        self, store: SagaStore, sql: Sql
    ) -> None:
        sid = new_id()
        await self._chain(store, sid, 4)
        trail = await store.audit_trail(sid)
        # Make room at seq 3 and insert a well-formed record sealed onto record 2.
        await sql(
            "UPDATE saga_audit_log SET seq = seq + 100 WHERE saga_id = :s AND seq >= 3", s=sid
        )
        await sql(
            "UPDATE saga_audit_log SET seq = seq - 99 WHERE saga_id = :s AND seq > 100", s=sid
        )
        forged_at = NOW + timedelta(milliseconds=2, microseconds=500)
        forged_hash = record_hash(
            trail[1].hash,
            saga_id=sid,
            seq=3,
            recorded_at=forged_at,
            kind="step.succeeded",
            step="charge",
            attempt=1,
            actor="mallory",
            detail={},
        )
        await sql(
            "INSERT INTO saga_audit_log (saga_id, seq, recorded_at, kind, step, attempt, actor,"
            " detail, prev_hash, hash) VALUES (:s, 3, :at, 'step.succeeded', 'charge', 1,"
            " 'mallory', '{}', :prev, :hash)",
            s=sid,
            at=forged_at,
            prev=trail[1].hash,
            hash=forged_hash,
        )
        breaks = verify_chain(await store.audit_trail(sid))
        assert breaks, "an inserted record must break the chain"
        assert {b.seq for b in breaks} == {4, 5}  # the renumbered originals
        assert {b.reason for b in breaks} == {BreakReason.ALTERED}

    async def test_verify_chain_detects_a_relinked_record(self, store: SagaStore, sql: Sql) -> None:
        sid = new_id()
        await self._chain(store, sid, 3)
        trail = await store.audit_trail(sid)
        # Re-seal record 2 after changing it: its own hash verifies, record 3's link does not.
        r = trail[1]
        new_hash = record_hash(
            r.prev_hash,
            saga_id=sid,
            seq=2,
            recorded_at=r.recorded_at,
            kind=r.kind,
            step=r.step,
            attempt=r.attempt,
            actor="mallory",
            detail=r.detail,
        )
        await sql(
            "UPDATE saga_audit_log SET actor = 'mallory', hash = :h WHERE saga_id = :s AND seq = 2",
            h=new_hash,
            s=sid,
        )
        breaks = verify_chain(await store.audit_trail(sid))
        assert [(b.seq, b.reason) for b in breaks] == [(3, BreakReason.RELINKED)]

    async def test_prune_deletes_only_old_published_outbox_rows_and_old_inbox_ids(
        self, store: SagaStore, sql: Sql
    ) -> None:
        msgs = [message() for _ in range(5)]
        ids = [new_id() for _ in range(3)]
        async with store.transaction() as tx:
            await tx.enqueue(msgs)
            assert await tx.claim_message_ids(ids) == ids
        old = NOW - timedelta(days=2)
        await sql(
            "UPDATE saga_outbox SET published_at = :at WHERE message_id IN (:a, :b, :c)",
            at=old,
            a=msgs[0].message_id,
            b=msgs[1].message_id,
            c=msgs[2].message_id,
        )
        await sql(
            "UPDATE saga_outbox SET published_at = :at WHERE message_id = :m",
            at=NOW,
            m=msgs[3].message_id,
        )
        await sql(
            "UPDATE saga_inbox SET received_at = :at WHERE message_id IN (:a, :b)",
            at=old,
            a=ids[0],
            b=ids[1],
        )
        cutoff = NOW - timedelta(days=1)
        assert await store.prune_published_outbox(cutoff, 2) == 2
        assert await store.prune_published_outbox(cutoff, 10) == 1
        assert await store.prune_published_outbox(cutoff, 10) == 0
        left = await sql("SELECT message_id FROM saga_outbox ORDER BY id")
        assert [r.message_id for r in left] == [msgs[3].message_id, msgs[4].message_id]
        assert await store.prune_inbox(cutoff, 10) == 2
        async with store.transaction() as tx:
            assert await tx.claim_message_ids(ids) == ids[:2]

    async def test_an_unreachable_database_raises_store_unavailable(
        self, unreachable_url: str
    ) -> None:
        engine = create_engine(unreachable_url)
        try:
            store = SqlStore(engine)
            with pytest.raises(StoreUnavailable) as info:
                await store.get_saga(new_id())
            assert info.value.__cause__ is not None
            assert info.value.retriable
            with pytest.raises(StoreUnavailable):
                async with store.transaction() as tx:
                    await tx.enqueue([message()])
            with pytest.raises(StoreUnavailable):
                await upgrade(engine)
        finally:
            await engine.dispose()
            # aiosqlite stops the worker thread of a failed connect without awaiting it;
            # let it finish before the test's event loop closes.
            await asyncio.sleep(0.1)


async def claim(store: Any, group: str, topic: str, partitions: list[int]) -> dict[int, int]:
    """Claim partitions as a fresh member; ``partition -> epoch``."""
    async with store.engine.begin() as conn:
        claims = await claim_partitions(conn, group, topic, partitions, member="m", now=NOW)
    return {p: c.epoch for p, c in claims.items()}


async def stored_offsets(store: Any, group: str, topic: str) -> dict[int, int]:
    async with store.engine.connect() as conn:
        return await load_offsets(conn, group, topic)
