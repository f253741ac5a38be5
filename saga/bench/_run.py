"""``run_bench``: set up a fresh deployment, run the phases, collect the figures.

Theory of operation
-------------------
Every run gets a fresh topic prefix and fresh databases: on PostgreSQL one schema per
role (``bench_<run>`` for the coordinator, ``bench_<run>_<participant>`` for each
participant: a service owns its database), on SQLite one file per role. The harness then
starts, each as its own process (stopped by PID at the end):

- the coordinator runtime (coordinator loop + timers, no relay; ``--coordinators N``
  starts N of them, sharing the replies partitions),
- ``saga relay`` for the coordinator's outbox (``--mode`` from the config; one per
  coordinator, sharing the partitions' relays through their group),
- three bench participants in transactional mode, each running the relay of its own
  outbox in the same process.

This process (the *driver*) starts sagas by writing them into the coordinator's
database — the same writes :func:`saga.coordinator.start_saga` makes, but many sagas per
transaction — and learns that a saga ended from the lifecycle events topic
(``saga.completed``, ``saga.compensated``, ``saga.stuck``, ``saga.aborted``).

Measurements
------------
- **Step latency**: reply consumed -> next command readable by the participant. Every
  command envelope's ``occurred_at`` is the coordinator's clock when it began applying
  the batch that consumed the reply (the engine stamps ``now``); the participant stores
  it next to its own clock when the handler started (``read_at``). The latency is
  ``read_at - occurred_at``: coordinator transaction, outbox relay, Kafka transaction
  commit, consumer fetch and the participant's batch up to that handler. The first
  command of a saga follows the start, not a reply, and is left out. All processes run
  on this machine, so they share one clock.
- **Saga duration**: driver clock at the start -> ``occurred_at`` of the terminal event.
- **Throughput**: finished sagas (and handled commands) / wall time from the first start
  to the last terminal event seen.
- **CPU seconds per saga** of each process: ``utime + stime`` from ``/proc/<pid>/stat``
  over the phase / sagas; **peak RSS**: ``VmHWM`` from ``/proc/<pid>/status``.
- **Outbox backlog**: unpublished outbox rows, sampled every ``sample_interval_s``.

Each phase is preceded by ``warmup`` unmeasured sagas (connections, group joins, JIT of
caches). The baseline runs the same message pattern through bare aiokafka processes
(:mod:`saga.bench._worker`), and the scale phase reruns after preloading finished sagas
(:mod:`saga.bench._scale`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.progress import Progress
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import new_message_id
from saga.bench._config import BenchConfig
from saga.bench._definition import (
    PARTICIPANTS,
    bench_definition,
    participant_of,
    rows_table,
    step_name,
)
from saga.bench._phase import PhaseTimes, Tracker, run_phase
from saga.bench._procs import (
    Worker,
    Workers,
    infrastructure_cpu,
    machine_cpu,
    peak_rss_mb,
)
from saga.bench._report import phase_figures, process_figures
from saga.bench._worker import baseline_topics
from saga.coordinator import Writes, decision_writes
from saga.definition import SagaDefinition
from saga.engine import StartSaga, transition
from saga.kafka import (
    TopicSpec,
    committed_consumer,
    delete_topics_with_prefix,
    ensure_topics,
)
from saga.store import Durability, SqlStore, create_engine, durability
from saga.store import tables as t
from saga.topics import Topics

log = logging.getLogger("saga.bench")

TERMINAL_EVENTS: dict[bytes, str] = {
    b'"type":"saga.completed"': "completed",
    b'"type":"saga.compensated"': "compensated",
    b'"type":"saga.stuck"': "stuck",
    b'"type":"saga.aborted"': "aborted",
}
"""Substrings of a terminal lifecycle event (compact JSON) -> saga outcome."""


class _Deployment:
    """Names and databases of one run."""

    def __init__(self, config: BenchConfig, workdir: Path) -> None:
        run = uuid.uuid4().hex[:8]
        self.config = config
        self.run = run
        self.workdir = workdir
        self.topics = Topics(prefix=f"bench-{run}.")
        self.schemas: dict[str, str] = {}
        self.urls: dict[str, str] = {}
        for role in ("coordinator", *PARTICIPANTS):
            if config.database == "postgres":
                schema = f"bench_{run}" if role == "coordinator" else f"bench_{run}_{role}"
                self.schemas[role] = schema
                sep = "&" if "?" in config.postgres_url else "?"
                self.urls[role] = f"{config.postgres_url}{sep}search_path={schema}"
            else:
                self.urls[role] = f"sqlite+aiosqlite:///{workdir / f'{role}.db'}"

    async def create_schemas(self) -> None:
        await self._each_schema('CREATE SCHEMA "{}"')

    async def drop_schemas(self) -> None:
        await self._each_schema('DROP SCHEMA IF EXISTS "{}" CASCADE')

    async def _each_schema(self, statement: str) -> None:
        """Run ``statement`` (``{}`` = the schema name) for every role's schema."""
        if not self.schemas:
            return
        engine = create_engine(self.config.postgres_url)
        try:
            async with engine.begin() as conn:
                for schema in self.schemas.values():
                    await conn.execute(text(statement.format(schema)))
        finally:
            await engine.dispose()

    async def delete_topics(self) -> None:
        await delete_topics_with_prefix(self.config.bootstrap_servers, self.topics.prefix)


async def run_bench(
    config: BenchConfig,
    *,
    progress: Progress | None = None,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark described by ``config`` and return its report (JSON-able).

    At the start it reads the database's durability settings
    (:func:`saga.store.durability`) and passes ``say`` the line
    ``database: <settings> (durable)`` (or ``NOT durable: ...``): figures measured on a
    database that may forget commits are not those of a durable deployment.

    Report keys: ``config``; ``database`` (``backend``, ``settings``, ``durable``,
    ``description``); ``empty`` (the phase on an empty database), ``scale`` (after
    the preload) and ``baseline`` (bare aiokafka), each with ``sagas_per_s``,
    ``steps_per_s``, ``p50_step_ms``, ``p95_step_ms``, ``p99_step_ms``, the same for
    ``saga`` durations, ``outcomes``, ``processes`` (``{role: {cpu_s, cpu_s_per_saga,
    cpu_util, peak_rss_mb}}``) and ``outbox_backlog``; top-level copies of the ``empty``
    phase's main figures (``sagas_per_s``, ``p50_step_ms``, ``processes`` ...), and
    ``scale_ratio`` with the scale mode.

    Raises:
        saga.errors.ConfigError: A process failed or a phase timed out (logs are kept).
    """
    temporary = config.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="saga-bench-")) if temporary else config.workdir
    assert workdir is not None
    workdir.mkdir(parents=True, exist_ok=True)
    dep = _Deployment(config, workdir)
    workers = Workers(workdir)
    report: dict[str, Any] = {"config": _config_dict(config), "run": dep.run}
    ok = False
    try:
        await dep.create_schemas()
        database = await _durability(dep)
        report["database"] = database.as_dict()
        if say is not None:
            say(f"database: {database.describe()}")
        await _saga_phases(dep, workers, report, progress)
        if config.baseline:
            await _baseline_phase(dep, workers, report, progress)
        ok = True
    except ExceptionGroup as group:
        raise _first_error(group) from group
    finally:
        await workers.close()
        if not config.keep:
            with contextlib.suppress(Exception):
                await dep.drop_schemas()
            with contextlib.suppress(Exception):
                await dep.delete_topics()
        if temporary and ok and not config.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        elif not ok:
            log.error("bench failed; process logs are in %s", workdir)
    empty = report.get("empty", {})
    for key in (
        "sagas_per_s",
        "steps_per_s",
        "p50_step_ms",
        "p95_step_ms",
        "p99_step_ms",
        "p50_saga_ms",
        "p95_saga_ms",
        "p99_saga_ms",
        "processes",
    ):
        if key in empty:
            report[key] = empty[key]
    return report


async def _durability(dep: _Deployment) -> Durability:
    """The durability settings the coordinator's database runs with."""
    engine = create_engine(dep.urls["coordinator"])
    try:
        return await durability(engine)
    finally:
        await engine.dispose()


def _first_error(group: ExceptionGroup[Exception]) -> Exception:
    """The first real failure inside (nested) task groups."""
    first = group.exceptions[0]
    return _first_error(first) if isinstance(first, ExceptionGroup) else first


def _config_dict(config: BenchConfig) -> dict[str, Any]:
    data = asdict(config)
    result: dict[str, Any] = json.loads(json.dumps(data, default=str))
    return result


# -- the saga phases ---------------------------------------------------------------------


async def _saga_phases(
    dep: _Deployment, workers: Workers, report: dict[str, Any], progress: Progress | None
) -> None:
    cfg = dep.config
    definition = bench_definition(cfg.steps)
    common = {"bootstrap": cfg.bootstrap_servers, "prefix": dep.topics.prefix}
    # One coordinator (and one `saga relay`) per --coordinators; they share the replies
    # partitions through their consumer groups, with the same configuration each.
    names = [
        "coordinator" if cfg.coordinators == 1 else f"coordinator-{i}"
        for i in range(1, cfg.coordinators + 1)
    ]
    coordinators = [
        workers.spawn_role(
            name,
            "coordinator",
            {
                **common,
                "database_url": dep.urls["coordinator"],
                "steps": cfg.steps,
                "partitions": cfg.partitions,
                "max_batch": cfg.coordinator_max_batch,
            },
        )
        for name in names
    ]
    await workers.wait_ready(coordinators)  # they migrated the schema and created topics
    relays = [
        workers.spawn(
            name.replace("coordinator", "relay"),
            [sys.executable, "-m", "saga.cli", "relay", "--mode", cfg.relay_mode],
            env={
                "SAGA_DATABASE_URL": dep.urls["coordinator"],
                "SAGA_KAFKA_BOOTSTRAP_SERVERS": cfg.bootstrap_servers,
                "SAGA_TOPIC_PREFIX": dep.topics.prefix,
                "SAGA_LOG_LEVEL": "WARNING",
            },
        )
        for name in names
    ]
    participants = [
        workers.spawn_role(
            name,
            "participant",
            {
                **common,
                "name": name,
                "database_url": dep.urls[name],
                "relay_mode": cfg.relay_mode,
                "max_batch": cfg.participant_max_batch,
            },
        )
        for name in PARTICIPANTS
    ]
    await workers.wait_ready(participants)
    saga_workers = [*coordinators, *relays, *participants]

    engine = create_engine(dep.urls["coordinator"])
    part_engines = {name: create_engine(dep.urls[name]) for name in PARTICIPANTS}
    tracker = Tracker()
    stop = asyncio.Event()
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_follow_events(cfg.bootstrap_servers, dep.topics, tracker, stop))
            store = SqlStore(engine)
            seq = _Sequence(cfg)

            async def starter(k: int) -> list[str]:
                return await _start_sagas(
                    store, definition, dep.topics, seq.inputs(k), cfg.partitions
                )

            async def measure(phase: str) -> None:
                await _warmup(tracker, starter, cfg, workers, progress, phase)
                report[phase] = await _measured(
                    phase,
                    tracker,
                    starter,
                    cfg,
                    workers,
                    saga_workers,
                    engine,
                    part_engines,
                    progress,
                )

            try:
                await measure("empty")
                if cfg.scale_preload:
                    from saga.bench._scale import preload

                    t_pre = time.monotonic()
                    template = next(
                        (s for s, f in tracker.finished.items() if f.status == "completed"), None
                    )
                    if template is None:
                        raise RuntimeError("scale mode needs a completed saga as template")
                    await preload(engine, template, cfg.scale_preload, cfg.steps, progress)
                    report["scale_preload_s"] = round(time.monotonic() - t_pre, 1)
                    await measure("scale")
                    e, s = report["empty"], report["scale"]
                    report["scale_ratio"] = {
                        key: round(s[f"{key}_ms"] / e[f"{key}_ms"], 3) if e[f"{key}_ms"] else None
                        for key in ("p50_step", "p95_step", "p99_step", "p50_saga")
                    }
            finally:
                stop.set()
    finally:
        await engine.dispose()
        for e in part_engines.values():
            await e.dispose()
    await workers.stop(saga_workers)


class _Sequence:
    """Saga inputs: the padding, and which sagas fail (an exact share, spread evenly)."""

    def __init__(self, cfg: BenchConfig) -> None:
        self.cfg = cfg
        self.n = 0
        self.pad = "x" * cfg.payload_bytes
        self.fail_step = step_name(cfg.steps - 1)

    def inputs(self, k: int) -> list[dict[str, Any]]:
        out = []
        ratio = self.cfg.failure_ratio
        for _ in range(k):
            i = self.n
            self.n += 1
            fails = ratio > 0 and int((i + 1) * ratio) > int(i * ratio)
            out.append({"pad": self.pad, "fail": self.fail_step if fails else ""})
        return out


async def _start_sagas(
    store: SqlStore,
    definition: SagaDefinition,
    topics: Topics,
    inputs: list[dict[str, Any]],
    partitions: int,
) -> list[str]:
    """Start sagas in ONE transaction: the writes of ``start_saga``, batched."""
    now = datetime.now(UTC)
    writes = Writes()
    ids: list[str] = []
    for saga_input in inputs:
        sid = new_message_id()
        decision = transition(
            None, StartSaga(saga_id=sid, input=saga_input, correlation_id=sid), definition, now
        )
        writes.extend(
            decision_writes(decision, before=None, topics=topics, now=now, partitions=partitions)
        )
        ids.append(str(sid))
    async with store.transaction() as tx:
        await writes.write(tx)
    return ids


async def _follow_events(
    bootstrap: str, topics: Topics, tracker: Tracker, stop: asyncio.Event
) -> None:
    """Feed terminal lifecycle events into the tracker until ``stop``."""

    def on_event(value: bytes) -> None:
        for marker, status in TERMINAL_EVENTS.items():
            if marker in value:
                env = json.loads(value)
                ended = datetime.fromisoformat(env["occurred_at"]).timestamp()
                tracker.finish(env["saga_id"], status, ended)
                return

    group = f"{topics.prefix}bench-driver"
    await _consume(committed_consumer(bootstrap, [topics.events], group), stop, on_event)


async def _consume(
    consumer: AIOKafkaConsumer, stop: asyncio.Event, on_value: Callable[[bytes], None]
) -> None:
    """Start ``consumer`` and hand every record's value to ``on_value`` until ``stop``."""
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=5_000)
            for records in batch.values():
                for record in records:
                    on_value(record.value)
    finally:
        await consumer.stop()


async def _warmup(
    tracker: Tracker,
    starter: Any,
    cfg: BenchConfig,
    workers: Workers,
    progress: Progress | None,
    phase: str,
) -> None:
    await run_phase(
        tracker,
        starter,
        sagas=cfg.warmup,
        concurrency=min(cfg.concurrency, cfg.warmup),
        rate=None,
        timeout_s=max(cfg.timeout_s, 120.0),
        workers=workers,
        progress=progress,
        label=f"{phase}: warm-up",
    )


async def _measured(
    phase: str,
    tracker: Tracker,
    starter: Any,
    cfg: BenchConfig,
    workers: Workers,
    measured: list[Worker],
    engine: AsyncEngine,
    part_engines: dict[str, AsyncEngine],
    progress: Progress | None,
) -> dict[str, Any]:
    sampler_stop = asyncio.Event()
    samples: list[dict[str, float]] = []
    profiling = cfg.profile_dir is not None and workers.start_profilers(cfg.profile_dir, phase)
    workers.mark(f"{phase}:start")
    machine_start, infra_start = machine_cpu(), infrastructure_cpu()
    driver_cpu = time.process_time()
    t0 = time.time()
    async with asyncio.TaskGroup() as tg:
        sampler = tg.create_task(
            _sample_backlog(engine, part_engines, samples, t0, cfg.sample_interval_s, sampler_stop)
        )
        try:
            times = await run_phase(
                tracker,
                starter,
                sagas=cfg.sagas,
                concurrency=cfg.concurrency,
                rate=cfg.rate,
                timeout_s=cfg.timeout_s,
                workers=workers,
                progress=progress,
                label=f"{phase}: sagas",
            )
        finally:
            sampler_stop.set()
        await sampler
    workers.mark(f"{phase}:end")
    machine = _machine_figures(machine_start, machine_cpu(), infra_start, times, cfg.sagas)
    for w in measured:
        w.cpu_marks[f"{phase}:rss"] = peak_rss_mb(w.pid)
    driver_cpu = time.process_time() - driver_cpu
    if profiling:
        await workers.stop_profilers()
    latencies, steps_done = await _step_latencies(part_engines, tracker, times, cfg)
    processes = process_figures(measured, phase, cfg.sagas)
    processes["driver"] = {
        "cpu_s": round(driver_cpu, 3),
        "cpu_s_per_saga": round(driver_cpu / cfg.sagas, 6),
        "cpu_util": 0.0,
        "peak_rss_mb": round(_own_peak_rss_mb(), 1),
    }
    figures = phase_figures(tracker, times, latencies, steps_done, processes)
    figures["outbox_backlog"] = _backlog_summary(samples)
    figures["machine"] = machine
    return figures


def _machine_figures(
    start: tuple[float, float],
    end: tuple[float, float],
    infra_start: dict[str, float],
    times: PhaseTimes,
    sagas: int,
) -> dict[str, Any]:
    """How busy the whole machine was (every process, the broker, PostgreSQL, others)."""
    busy, total = end[0] - start[0], end[1] - start[1]
    infra = {
        name: {
            "cpu_s_per_saga": round((seconds - infra_start.get(name, 0.0)) / sagas, 6),
            "cpu_util": round((seconds - infra_start.get(name, 0.0)) / times.elapsed_s, 3),
        }
        for name, seconds in infrastructure_cpu().items()
    }
    return {
        "cores": os.cpu_count() or 1,
        "busy_cores": round(busy / times.elapsed_s, 2),
        "busy_share": round(busy / total, 3) if total else 0.0,
        "shared_servers": infra,
    }


def _own_peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _step_latencies(
    part_engines: dict[str, AsyncEngine], tracker: Tracker, times: PhaseTimes, cfg: BenchConfig
) -> tuple[list[float], int]:
    """Latencies (s) of the commands that followed a reply, and commands handled."""
    ids = set(tracker.started_at)
    first = step_name(0)
    latencies: list[float] = []
    handled = 0
    for name, engine in part_engines.items():
        table = rows_table(name)
        query = select(
            table.c.saga_id,
            table.c.step,
            table.c.attempt,
            table.c.kind,
            table.c.command_at,
            table.c.read_at,
        ).where(table.c.read_at >= times.started_at - 1)
        async with engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        for r in rows:
            if r.saga_id not in ids:
                continue
            handled += 1
            if r.kind == "command" and r.step == first and r.attempt == 1:
                continue
            latencies.append(r.read_at - r.command_at)
    # A step that failed for good rolled its row back; it was handled all the same.
    handled += sum(1 for f in tracker.finished.values() if f.status == "compensated")
    return latencies, handled


async def _sample_backlog(
    engine: AsyncEngine,
    part_engines: dict[str, AsyncEngine],
    samples: list[dict[str, float]],
    t0: float,
    interval_s: float,
    stop: asyncio.Event,
) -> None:
    query = select(func.count()).select_from(t.outbox).where(t.outbox.c.published_at.is_(None))
    while not stop.is_set():
        try:
            async with engine.connect() as conn:
                coord = int((await conn.execute(query)).scalar_one())
            parts = 0
            for e in part_engines.values():
                async with e.connect() as conn:
                    parts += int((await conn.execute(query)).scalar_one())
            samples.append(
                {"t": round(time.time() - t0, 2), "coordinator": coord, "participants": parts}
            )
        except Exception:  # a failed sample is a gap in the series, not a failed run
            log.debug("backlog sample failed", exc_info=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval_s):
                await stop.wait()


def _backlog_summary(samples: list[dict[str, float]]) -> dict[str, Any]:
    coord = [s["coordinator"] for s in samples] or [0]
    parts = [s["participants"] for s in samples] or [0]
    return {
        "max_coordinator": max(coord),
        "mean_coordinator": round(sum(coord) / len(coord), 1),
        "max_participants": max(parts),
        "series": samples,
    }


# -- the baseline ------------------------------------------------------------------------


async def _baseline_phase(
    dep: _Deployment, workers: Workers, report: dict[str, Any], progress: Progress | None
) -> None:
    cfg = dep.config
    names = baseline_topics(dep.topics.prefix)
    await ensure_topics(
        cfg.bootstrap_servers,
        [TopicSpec(name=n, partitions=cfg.partitions) for n in names.values()],
    )
    common = {"bootstrap": cfg.bootstrap_servers, "prefix": dep.topics.prefix}
    echo = [
        workers.spawn_role("echo-coordinator", "echo-coordinator", {**common, "steps": cfg.steps})
    ]
    echo += [
        workers.spawn_role(f"echo-{p}", "echo-participant", {**common, "name": p})
        for p in PARTICIPANTS
    ]
    await workers.wait_ready(echo)
    tracker = Tracker()
    stop = asyncio.Event()
    producer = AIOKafkaProducer(
        bootstrap_servers=cfg.bootstrap_servers, enable_idempotence=True, acks="all"
    )
    await producer.start()
    pad = "x" * cfg.payload_bytes
    first_topic = names[f"commands:{participant_of(0)}"]

    async def starter(k: int) -> list[str]:
        ids = [uuid.uuid4().hex for _ in range(k)]
        now = time.time()
        futures = [
            await producer.send(
                first_topic,
                json.dumps({"i": i, "k": 0, "t": now, "lat": [], "pad": pad}).encode(),
                key=i.encode(),
            )
            for i in ids
        ]
        await asyncio.gather(*futures)
        return ids

    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_follow_done(cfg.bootstrap_servers, names["done"], tracker, stop))
            try:
                await _warmup(tracker, starter, cfg, workers, progress, "baseline")
                workers.mark("baseline:start")
                machine_start, infra_start = machine_cpu(), infrastructure_cpu()
                times = await run_phase(
                    tracker,
                    starter,
                    sagas=cfg.sagas,
                    concurrency=cfg.concurrency,
                    rate=cfg.rate,
                    timeout_s=cfg.timeout_s,
                    workers=workers,
                    progress=progress,
                    label="baseline: round trips",
                )
                workers.mark("baseline:end")
                machine = _machine_figures(
                    machine_start, machine_cpu(), infra_start, times, cfg.sagas
                )
                for w in echo:
                    w.cpu_marks["baseline:rss"] = peak_rss_mb(w.pid)
            finally:
                stop.set()
    finally:
        await producer.stop()
    latencies = [x for f in tracker.finished.values() for x in f.step_latencies_s]
    processes = process_figures(echo, "baseline", cfg.sagas)
    report["baseline"] = phase_figures(tracker, times, latencies, cfg.sagas * cfg.steps, processes)
    report["baseline"]["machine"] = machine
    await workers.stop(echo)


async def _follow_done(bootstrap: str, topic: str, tracker: Tracker, stop: asyncio.Event) -> None:
    """Feed the baseline's finished round trips into the tracker until ``stop``."""

    def on_done(value: bytes) -> None:
        msg = json.loads(value)
        # "t" is the echo coordinator's clock when it consumed the last reply.
        tracker.finish(msg["i"], "completed", msg["t"], msg["lat"][1:])

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"{topic}.driver",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await _consume(consumer, stop, on_done)
