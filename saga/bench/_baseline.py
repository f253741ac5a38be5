"""The baseline phases: the saga's message pattern through bare aiokafka processes.

No database and no engine: the echo processes of :mod:`saga.bench._worker`. Two
phases, one after the other on fresh topics:

- ``baseline``: at-least-once (offsets committed automatically, idempotent producers),
  the cheapest way the same messages can move through Kafka;
- ``baseline_exactly_once``: read-committed consumers, and each polled batch written
  with its consumed offsets in one Kafka transaction. That is the Kafka share of what
  the saga phase pays for exactly-once (its relays and participants run one Kafka
  transaction per batch too), so the saga phase's distance to it is what the database,
  the engine and the outbox cost.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaProducer
from rich.progress import Progress

from saga.bench._definition import PARTICIPANTS, participant_of
from saga.bench._deployment import Deployment
from saga.bench._driver import consume
from saga.bench._measure import timed_phase, warmup
from saga.bench._phase import Tracker
from saga.bench._procs import Workers
from saga.bench._report import phase_figures, process_figures
from saga.bench._worker import baseline_topics
from saga.kafka import TopicSpec, committed_consumer, ensure_topics

BASELINES = {"baseline": False, "baseline_exactly_once": True}
"""The baseline phases by report key: whether the echo processes use Kafka transactions."""


async def baseline_phases(
    dep: Deployment, workers: Workers, report: dict[str, Any], progress: Progress | None
) -> None:
    """Run every baseline phase (``BASELINES``) into ``report``."""
    for phase, exactly_once in BASELINES.items():
        await baseline_phase(dep, workers, report, progress, phase, exactly_once)


async def baseline_phase(
    dep: Deployment,
    workers: Workers,
    report: dict[str, Any],
    progress: Progress | None,
    phase: str,
    exactly_once: bool,
) -> None:
    """Run one baseline phase into ``report[phase]``."""
    cfg = dep.config
    prefix = dep.topics.prefix + ("eo." if exactly_once else "")
    names = baseline_topics(prefix)
    await ensure_topics(
        cfg.bootstrap_servers,
        [TopicSpec(name=n, partitions=cfg.partitions) for n in names.values()],
    )
    common = {
        "bootstrap": cfg.bootstrap_servers,
        "prefix": prefix,
        "exactly_once": exactly_once,
        "commit_interval_ms": cfg.baseline_commit_interval_ms,
    }
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
            tg.create_task(follow_done(cfg.bootstrap_servers, names["done"], tracker, stop))
            try:
                await warmup(tracker, starter, cfg, workers, progress, phase)
                times, machine = await timed_phase(
                    phase,
                    f"{phase}: round trips",
                    tracker,
                    starter,
                    cfg,
                    workers,
                    echo,
                    progress,
                )
            finally:
                stop.set()
    finally:
        await producer.stop()
    latencies = [x for f in tracker.finished.values() for x in f.step_latencies_s]
    processes = process_figures(echo, phase, cfg.sagas)
    report[phase] = phase_figures(tracker, times, latencies, cfg.sagas * cfg.steps, processes)
    report[phase]["machine"] = machine
    await workers.stop(echo)


async def follow_done(bootstrap: str, topic: str, tracker: Tracker, stop: asyncio.Event) -> None:
    """Feed the baseline's finished round trips into the tracker until ``stop``."""

    def on_done(value: bytes) -> None:
        msg = json.loads(value)
        # "t" is the echo coordinator's clock when it consumed the last reply.
        tracker.finish(msg["i"], "completed", msg["t"], msg["lat"][1:])

    # Read-committed for both baselines: on a topic written without transactions it
    # reads what read-uncommitted would.
    await consume(committed_consumer(bootstrap, [topic], f"{topic}.driver"), stop, on_done)
