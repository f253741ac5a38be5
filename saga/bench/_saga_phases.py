"""The saga phases: on an empty database and (``scale_preload``) after the preload.

It starts the coordinator, relay and participant processes the phases measure.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from rich.progress import Progress

from saga.bench._definition import PARTICIPANTS, bench_definition
from saga.bench._deployment import Deployment
from saga.bench._driver import SagaInputs, follow_events, start_sagas
from saga.bench._measure import measured_phase, warmup
from saga.bench._phase import Tracker
from saga.bench._procs import Workers
from saga.store import SqlStore, create_engine


async def saga_phases(
    dep: Deployment, workers: Workers, report: dict[str, Any], progress: Progress | None
) -> None:
    cfg = dep.config
    definition = bench_definition(cfg.steps)
    common = {"bootstrap": cfg.bootstrap_servers, "prefix": dep.topics.prefix}
    # One coordinator (and with --relay-process one `saga relay`) per --coordinators; they
    # share the replies partitions through their consumer groups, configured alike.
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
                "relay_mode": None if cfg.relay_process else cfg.relay_mode,
                "producer_per": cfg.producer_per,
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
                "SAGA_RELAY_PRODUCER_PER": cfg.producer_per,
            },
        )
        for name in names
        if cfg.relay_process
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
                "producer_per": cfg.producer_per,
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
            tg.create_task(follow_events(cfg.bootstrap_servers, dep.topics, tracker, stop))
            store = SqlStore(engine)
            seq = SagaInputs(cfg)

            async def starter(k: int) -> list[str]:
                return await start_sagas(
                    store, definition, dep.topics, seq.inputs(k), cfg.partitions
                )

            async def measure(phase: str) -> None:
                await warmup(tracker, starter, cfg, workers, progress, phase)
                report[phase] = await measured_phase(
                    phase,
                    tracker,
                    starter,
                    cfg,
                    workers,
                    saga_workers,
                    engine,
                    part_engines,
                    progress,
                    dep.topics.checkpoints,
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
