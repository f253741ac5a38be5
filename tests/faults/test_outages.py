"""The database, then the broker, unavailable for a while: back off, resume, lose nothing.

The coordinator, its timers and its relay run in process (``CoordinatorRuntime``) with
scripted participants; sagas are started before and during the outage. Afterwards the
invariant checker of the chaos suite reads the database and every topic: nothing lost,
no command delivered twice, no outbox row left behind, audit chains intact.

* Database: the runtime talks to PostgreSQL through a TCP proxy (``saga.chaos.TcpProxy``)
  that drops every connection and refuses new ones for a few seconds.
* Broker: a dedicated single-node broker of this test (own ports and directory, never
  the shared one) is SIGKILLed and started again on the same data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest
from _scripted import ScriptedParticipants, fast_runtime_config
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import BaseModel
from sqlalchemy import text

from saga.chaos import (
    DedicatedBroker,
    TcpProxy,
    check_invariants,
    collect_evidence,
    free_port,
    saga_input,
)
from saga.coordinator import CoordinatorRuntime, RuntimeConfig, start_saga
from saga.definition.examples.order_placement import ORDER_PLACEMENT
from saga.errors import StoreUnavailable
from saga.kafka import close_quietly, topic_partitions
from saga.lifecycle import State
from saga.participant import CommandContext, Mode, Participant, ParticipantConfig
from saga.settings import Settings
from saga.store import create_engine
from saga.topics import Topics
from services import inventory
from services._runner import run_services

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]

PARTICIPANTS = ["inventory", "payments", "orders", "shipping"]
UNDOABLE = {
    ORDER_PLACEMENT.name: frozenset(s.name for s in ORDER_PLACEMENT.steps if s.compensation)
}


async def _sql(url: str, sql: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def fresh_schema(postgres_url: str) -> AsyncIterator[str]:
    schema = f"outage_{uuid.uuid4().hex[:10]}"
    await _sql(postgres_url, f'CREATE SCHEMA "{schema}"')
    try:
        yield schema
    finally:
        await _sql(postgres_url, f'DROP SCHEMA "{schema}" CASCADE')


def with_schema(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}search_path={schema}"


def via_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{port}"))


def runtime_config(database_url: str, bootstrap: str, topics: Topics) -> RuntimeConfig:
    return fast_runtime_config(database_url, bootstrap, topics, partitions=2)


async def start(runtime: CoordinatorRuntime, topics: Topics, n: int) -> str:
    started = await start_saga(
        runtime.store,
        runtime.definitions,
        topics,
        ORDER_PLACEMENT.name,
        saga_input(n, None, topics.prefix),
        now=datetime.now(UTC),
        idempotency_key=f"{topics.prefix}{n}",
    )
    return str(started.saga_id)


async def all_completed(
    url: str,
    ids: list[str],
    limit_s: float,
    explain: Callable[[], Awaitable[str]] | None = None,
) -> None:
    """Wait until every saga completed; on time-out say where the work stands."""
    engine = create_engine(url)
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + limit_s
        done = 0
        while loop.time() < end:
            async with engine.connect() as conn:
                done = (
                    await conn.execute(
                        text("SELECT count(*) FROM sagas WHERE status = 'completed'")
                    )
                ).scalar() or 0
            if done >= len(ids):
                return
            await asyncio.sleep(0.2)
        report = await explain() if explain is not None else ""
        raise AssertionError(f"only {done} of {len(ids)} sagas completed in {limit_s}s{report}")
    finally:
        await engine.dispose()


async def where_it_stands(
    url: str, bootstrap: str, topics: Topics, runtime: CoordinatorRuntime
) -> str:
    """Saga statuses, the outbox, the relay, the coordinator and every topic's ends.

    A topic partition whose last stable offset stays below its high watermark has a
    transaction nobody finishes: read_committed consumers see nothing past it.
    """
    lines: list[str] = []
    try:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                statuses = (
                    await conn.execute(text("SELECT status, count(*) FROM sagas GROUP BY status"))
                ).all()
                unpublished = (
                    await conn.execute(
                        text("SELECT count(*) FROM saga_outbox WHERE published_at IS NULL")
                    )
                ).scalar()
        finally:
            await engine.dispose()
        lines.append(f"sagas {dict(statuses)}; unpublished outbox rows {unpublished}")
        relays, coordinator = runtime.relays, runtime.coordinator
        if relays is not None:
            states = {p: r.state.value for p, r in sorted(relays.relays.items())}
            lines.append(f"relays {states}, published {relays.published}")
        if coordinator is not None:
            owned = coordinator.consumer.epochs if coordinator.state.value == "running" else {}
            lines.append(
                f"coordinator {coordinator.state.value}, batches {coordinator.batches},"
                f" owns {owned}"
            )
        names = [*(topics.commands(p) for p in PARTICIPANTS), topics.replies, topics.checkpoints]
        tps = await topic_partitions(bootstrap, names)
        ends: dict[str, dict[TopicPartition, int]] = {}
        for isolation in ("read_uncommitted", "read_committed"):
            consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level=isolation)
            await consumer.start()
            try:
                async with asyncio.timeout(20):
                    ends[isolation] = await consumer.end_offsets(tps)
            finally:
                await close_quietly(consumer)
        for tp, high in sorted(ends["read_uncommitted"].items()):
            stable = ends["read_committed"].get(tp)
            flag = "  <- open transaction" if stable is not None and stable < high else ""
            lines.append(f"{tp.topic}[{tp.partition}] high {high} stable {stable}{flag}")
    except Exception as exc:  # the report must not hide the failure it explains
        lines.append(f"(report incomplete: {exc!r})")
    # Where each of the product's tasks waits (a hang shows as the same frame every time).
    for task in asyncio.all_tasks():
        if task.get_name().startswith("saga"):
            frames = task.get_stack()[-10:]
            where = " -> ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in frames)
            lines.append(f"task {task.get_name()}: {where}")
    return "\n  " + "\n  ".join(lines)


async def completed_in(
    runtime: CoordinatorRuntime, url: str, bootstrap: str, topics: Topics, ids: list[str]
) -> None:
    """Wait up to 90 s until every saga completed; on time-out say where the work stands."""
    await all_completed(url, ids, 90, lambda: where_it_stands(url, bootstrap, topics, runtime))


async def assert_invariants(url: str, bootstrap: str, topics: Topics, ids: list[str]) -> None:
    evidence = await collect_evidence(
        coordinator_url=url,
        services_url=None,
        bootstrap_servers=bootstrap,
        topic_names=[*(topics.commands(p) for p in PARTICIPANTS), topics.replies, topics.events],
        timeout_s=60,
    )
    report = check_invariants(
        evidence,
        started=ids,
        compensatable=UNDOABLE,
        commands_topics={topics.commands(p) for p in PARTICIPANTS},
    )
    assert report.ok, f"{report.figures()} {report.examples}"
    assert report.outcomes == {"completed": len(ids)}


@pytest.mark.timeout(180)
async def test_database_unavailable_for_a_while(
    postgres_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    topics = Topics(prefix=topic_prefix)
    pg = urlsplit(postgres_url)
    async with (
        fresh_schema(postgres_url) as schema,
        TcpProxy(pg.hostname or "", pg.port or 5432) as proxy,
    ):
        direct = with_schema(postgres_url, schema)
        proxied = with_schema(via_port(postgres_url, proxy.port), schema)
        ids: list[str] = []
        async with (
            ScriptedParticipants(kafka_bootstrap, topics, PARTICIPANTS, {}),
            CoordinatorRuntime(
                runtime_config(proxied, kafka_bootstrap, topics), [ORDER_PLACEMENT]
            ) as runtime,
        ):
            task = asyncio.create_task(runtime.run())
            try:
                ids += [await start(runtime, topics, n) for n in range(10)]
                await asyncio.sleep(0.5)
                proxy.cut()  # the database is gone: connections dropped, new ones refused
                await asyncio.sleep(4)
                assert proxy.refused > 0, "the runtime did not even try to reconnect"
                proxy.restore()
                ids += [await start(runtime, topics, n) for n in range(10, 20)]
                await completed_in(runtime, direct, kafka_bootstrap, topics, ids)
            finally:
                runtime.stop()
                await asyncio.wait_for(task, 30)
                assert not task.cancelled()
                assert task.exception() is None, "the runtime crashed instead of backing off"
        await assert_invariants(direct, kafka_bootstrap, topics, ids)


@pytest.mark.timeout(180)
async def test_processes_started_during_a_database_outage_wait_for_it(
    postgres_url: str, kafka_bootstrap: str, topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A replica restarted while its database is down must wait for it, not exit (a
    # crash loop under a supervisor, a lost process without one). The coordinator
    # runtime and the four example services open against a database that refuses
    # every connection, stay waiting, and run sagas once it is back.
    topics = Topics(prefix=topic_prefix)
    pg = urlsplit(postgres_url)
    async with (
        fresh_schema(postgres_url) as schema,
        fresh_schema(postgres_url) as services_schema,
        TcpProxy(pg.hostname or "", pg.port or 5432) as proxy,
    ):
        direct = with_schema(postgres_url, schema)
        proxied = via_port(postgres_url, proxy.port)
        settings = Settings(
            database_url=with_schema(proxied, services_schema),
            SAGA_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
            topic_prefix=topic_prefix,
            partitions=2,
            health_host="127.0.0.1",
            health_port=free_port(),
        )
        health = f"http://127.0.0.1:{settings.health_port}"
        proxy.cut()
        stop_services, services_ready = asyncio.Event(), asyncio.Event()
        services = asyncio.create_task(
            run_services(settings, stop=stop_services, ready=services_ready)
        )
        runtime = CoordinatorRuntime(
            runtime_config(with_schema(proxied, schema), kafka_bootstrap, topics),
            [ORDER_PLACEMENT],
        )
        opening = asyncio.create_task(runtime.__aenter__())
        try:

            def waited(what: str) -> bool:
                return any(
                    f"{what}: database unavailable" in r.getMessage() for r in caplog.records
                )

            with caplog.at_level(logging.WARNING, logger="saga"):
                await until(
                    lambda: waited("coordinator start-up") and waited("services start-up"),
                    30,
                    "both logged that they wait for the database",
                )
                await asyncio.sleep(1)  # and they go on waiting
            assert proxy.refused > 0, "nobody tried to connect"
            assert not opening.done(), "the coordinator gave up on the database"
            assert not services.done(), "the services gave up on the database"
            # Alive, not ready, and saying why: a startup probe leaves them waiting.
            assert (runtime.readiness() or "").startswith("starting: database unavailable")
            assert await http_get(f"{health}/healthz") == (200, {"status": "ok"})
            status, body = await http_get(f"{health}/readyz")
            assert status == 503, body
            assert body["reason"].startswith("starting: database unavailable"), body
            proxy.restore()
            await asyncio.wait_for(opening, 60)
            await asyncio.wait_for(services_ready.wait(), 90)
            assert await http_get(f"{health}/readyz") == (200, {"status": "ready"})
            # Gone again just as run() opens the coordinator's parts: they wait too.
            proxy.cut()
            task = asyncio.create_task(runtime.run())
            await until(
                lambda: (runtime.readiness() or "").startswith("starting: database unavailable"),
                30,
                "the coordinator says it waits for the database",
            )
            await asyncio.sleep(1)
            assert not task.done(), "run() gave up on the database"
            assert runtime.coordinator is None, "it did not wait"
            proxy.restore()
            try:
                ids = [await start(runtime, topics, n) for n in range(5)]
                await completed_in(runtime, direct, kafka_bootstrap, topics, ids)
            finally:
                runtime.stop()
                await asyncio.wait_for(task, 30)
        finally:
            stop_services.set()
            await asyncio.wait_for(services, 60)
            await runtime.__aexit__(None, None, None)
        await assert_invariants(direct, kafka_bootstrap, topics, ids)


async def test_a_stop_ends_a_start_up_that_waits_for_the_database(
    postgres_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    # SIGTERM (stop()) while a participant or the coordinator waits for its database
    # ends the wait at once with the database error: nothing was started.
    topics = Topics(prefix=topic_prefix)
    pg = urlsplit(postgres_url)
    async with TcpProxy(pg.hostname or "", pg.port or 5432) as proxy:
        proxy.cut()
        url = via_port(postgres_url, proxy.port)
        engine = create_engine(url)
        participant = Participant(
            ParticipantConfig(name="inventory", bootstrap_servers=kafka_bootstrap, topics=topics),
            engine,
        )
        inventory.register(participant)
        runtime = CoordinatorRuntime(
            runtime_config(url, kafka_bootstrap, topics), [ORDER_PLACEMENT]
        )
        try:
            waiting = [
                asyncio.create_task(participant.__aenter__()),
                asyncio.create_task(runtime.__aenter__()),
            ]
            await asyncio.sleep(1.5)
            assert not any(w.done() for w in waiting), "gave up without being asked to"
            participant.stop()
            runtime.stop()
            for w in waiting:
                with pytest.raises(StoreUnavailable, match=r"failed: "):
                    await asyncio.wait_for(w, 3)
            assert participant.state is State.CLOSED
        finally:
            await runtime.__aexit__(None, None, None)
            await engine.dispose()


async def until(condition: Callable[[], bool], limit_s: float, what: str) -> None:
    """Wait until ``condition()`` holds; fail naming ``what`` after ``limit_s`` seconds."""
    end = asyncio.get_running_loop().time() + limit_s
    while not condition():
        if asyncio.get_running_loop().time() > end:
            raise AssertionError(f"not within {limit_s}s: {what}")
        await asyncio.sleep(0.1)


async def http_get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.json()


class Ping(BaseModel):
    n: int


async def pong(cmd: Ping, ctx: CommandContext) -> Ping:
    return cmd


def probe_participant(bootstrap: str, topics: Topics) -> Participant:
    """A participant (at-least-once, no database) that only needs the broker to start."""
    probe = Participant(
        ParticipantConfig(
            name="probe", bootstrap_servers=bootstrap, topics=topics, mode=Mode.SIMPLE
        )
    )
    probe.register("probe.ping", pong, model=Ping)
    return probe


@pytest.mark.timeout(240)
async def test_broker_unavailable_for_a_while(
    postgres_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    topics = Topics(prefix=topic_prefix)
    broker = DedicatedBroker.on_free_ports(tmp_path / "kafka")
    await broker.start()
    try:
        bootstrap = broker.bootstrap_servers
        async with fresh_schema(postgres_url) as schema:
            url = with_schema(postgres_url, schema)
            ids: list[str] = []
            async with CoordinatorRuntime(
                runtime_config(url, bootstrap, topics), [ORDER_PLACEMENT]
            ) as runtime:
                task = asyncio.create_task(runtime.run())
                try:
                    async with ScriptedParticipants(bootstrap, topics, PARTICIPANTS, {}):
                        ids += [await start(runtime, topics, n) for n in range(10)]
                        await asyncio.sleep(0.5)
                    await broker.kill()  # the broker is gone
                    # A participant started now waits for the broker instead of failing.
                    probe = probe_participant(bootstrap, topics)
                    opening = asyncio.create_task(probe.__aenter__())
                    ids += [await start(runtime, topics, n) for n in range(10, 20)]
                    await asyncio.sleep(5)
                    assert not opening.done(), "the participant gave up on the broker"
                    await broker.start()
                    await asyncio.wait_for(opening, 60)
                    await probe.__aexit__(None, None, None)
                    async with ScriptedParticipants(bootstrap, topics, PARTICIPANTS, {}):
                        await all_completed(
                            url,
                            ids,
                            120,
                            lambda: where_it_stands(url, bootstrap, topics, runtime),
                        )
                finally:
                    runtime.stop()
                    await asyncio.wait_for(task, 60)
                    assert task.exception() is None, "the runtime crashed instead of backing off"
            await assert_invariants(url, bootstrap, topics, ids)
    finally:
        await broker.stop()
