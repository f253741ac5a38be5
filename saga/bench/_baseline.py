"""The baseline phase: the saga's message pattern through bare aiokafka processes.

No database and no engine: the echo processes of :mod:`saga.bench._worker`.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.progress import Progress

from saga.bench._definition import PARTICIPANTS, participant_of
from saga.bench._deployment import Deployment
from saga.bench._driver import consume
from saga.bench._measure import timed_phase, warmup
from saga.bench._phase import Tracker
from saga.bench._procs import Workers
from saga.bench._report import phase_figures, process_figures
from saga.bench._worker import baseline_topics
from saga.kafka import TopicSpec, ensure_topics


async def baseline_phase(
    dep: Deployment, workers: Workers, report: dict[str, Any], progress: Progress | None
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
            tg.create_task(follow_done(cfg.bootstrap_servers, names["done"], tracker, stop))
            try:
                await warmup(tracker, starter, cfg, workers, progress, "baseline")
                times, machine = await timed_phase(
                    "baseline",
                    "baseline: round trips",
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
    processes = process_figures(echo, "baseline", cfg.sagas)
    report["baseline"] = phase_figures(tracker, times, latencies, cfg.sagas * cfg.steps, processes)
    report["baseline"]["machine"] = machine
    await workers.stop(echo)


async def follow_done(bootstrap: str, topic: str, tracker: Tracker, stop: asyncio.Event) -> None:
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
    await consume(consumer, stop, on_done)
