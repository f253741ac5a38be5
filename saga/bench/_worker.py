"""The bench's worker processes: ``python -m saga.bench ROLE CONFIG_JSON``.

The harness starts every part of the system under test as its own process and stops it
by PID (SIGTERM, then SIGKILL). Roles:

- ``coordinator``: a :class:`saga.coordinator.CoordinatorRuntime` (coordinator loop,
  timers and the relays of its partitions; with ``--relay-process`` the relays run in a
  ``saga relay`` process instead, as beside ``saga coordinator --no-relay``), built
  with the bench definition;
- ``participant``: one bench participant in transactional mode, with the relay of its
  own outbox running inside it (as a service would);
- ``echo-coordinator`` / ``echo-participant``: the baselines, the same message pattern
  with bare aiokafka: no database, no engine, no envelope validation. With
  ``"exactly_once": true`` in the config an echo process consumes read-committed and
  writes each polled batch, with the offsets it consumed, in one Kafka transaction (what
  a relay and a participant pay to Kafka for exactly-once; ``commit_interval_ms`` keeps
  each transaction open that long, adding the batches polled meanwhile); without, it
  commits offsets automatically and may repeat messages after a crash.

A worker prints ``READY`` on stdout once it is set up. The config is JSON on the command
line (the harness is the shell here; workers read no environment).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from saga.bench._definition import (
    PARTICIPANTS,
    bench_definition,
    create_rows_table,
    participant_of,
)
from saga.process import Register, run_until_signal
from saga.topics import Topics


def baseline_topics(prefix: str) -> dict[str, str]:
    """Topic names of the baseline (under the run's prefix)."""
    return {
        "replies": f"{prefix}bl.replies",
        "done": f"{prefix}bl.done",
        **{f"commands:{p}": f"{prefix}bl.{p}.commands" for p in PARTICIPANTS},
    }


def _ready() -> None:
    sys.stdout.write("READY\n")
    sys.stdout.flush()


async def coordinator(cfg: dict[str, Any], on_stop: Register) -> None:
    """Run the coordinator runtime until SIGTERM (with its relays unless ``relay_mode`` is None)."""
    from saga.coordinator import CoordinatorConfig, CoordinatorRuntime, RuntimeConfig
    from saga.relay import RelayConfig

    topics = Topics(prefix=cfg["prefix"])
    config = RuntimeConfig(
        database_url=cfg["database_url"],
        bootstrap_servers=cfg["bootstrap"],
        topics=topics,
        coordinator=CoordinatorConfig(max_batch=cfg["max_batch"]),
        relay=None
        if cfg["relay_mode"] is None
        else RelayConfig(mode=cfg["relay_mode"], producer_per=cfg["producer_per"]),
        partitions=cfg["partitions"],
    )
    runtime = CoordinatorRuntime(config, [bench_definition(cfg["steps"])])
    on_stop(runtime.stop)
    async with runtime:
        _ready()
        await runtime.run()


async def participant(cfg: dict[str, Any], on_stop: Register) -> None:
    """Run one bench participant (transactional, with its own relay) until SIGTERM."""
    from saga.bench._definition import register_handlers
    from saga.participant import Mode, Participant, ParticipantConfig
    from saga.relay import RelayConfig
    from saga.store import create_engine

    topics = Topics(prefix=cfg["prefix"])
    engine = create_engine(cfg["database_url"])
    name = cfg["name"]
    try:
        table = await create_rows_table(engine, name)
        part = Participant(
            ParticipantConfig(
                name=name,
                bootstrap_servers=cfg["bootstrap"],
                topics=topics,
                mode=Mode.TRANSACTIONAL,
                max_batch=cfg["max_batch"],
                relay=RelayConfig(mode=cfg["relay_mode"], producer_per=cfg["producer_per"]),
            ),
            engine,
        )
        register_handlers(part, table)
        on_stop(part.stop)
        async with part:
            _ready()
            await part.run()
    finally:
        await engine.dispose()


async def _echo(
    cfg: dict[str, Any],
    on_stop: Register,
    source: str,
    forward: Callable[[dict[str, Any], float], str],
) -> None:
    exactly_once = bool(cfg.get("exactly_once"))
    interval_s = int(cfg.get("commit_interval_ms", 0)) / 1000
    group_id = f"{source}.echo"
    max_batch = cfg.get("max_batch", 500)
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=cfg["bootstrap"],
        group_id=group_id,
        auto_offset_reset="earliest",
        max_poll_records=max_batch,
        enable_auto_commit=not exactly_once,
        isolation_level="read_committed" if exactly_once else "read_uncommitted",
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=cfg["bootstrap"],
        enable_idempotence=True,
        acks="all",
        transactional_id=f"{group_id}.tx" if exactly_once else None,
    )
    stop = asyncio.Event()
    on_stop(stop.set)
    await consumer.start()
    await producer.start()

    async def send_all(batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        futures = []
        for records in batch.values():
            for record in records:
                assert record.value is not None
                msg = json.loads(record.value)
                topic = forward(msg, time.time())
                futures.append(await producer.send(topic, json.dumps(msg).encode(), key=record.key))
        if futures:
            await asyncio.gather(*futures)

    try:
        _ready()
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=max_batch)
            if not batch:
                continue
            if not exactly_once:
                await send_all(batch)
                continue
            async with producer.transaction():
                offsets: dict[TopicPartition, int] = {}
                deadline = time.monotonic() + interval_s
                while True:
                    await send_all(batch)
                    offsets.update({tp: rs[-1].offset + 1 for tp, rs in batch.items()})
                    remaining_ms = int((deadline - time.monotonic()) * 1000)
                    if remaining_ms <= 0 or stop.is_set():
                        break
                    batch = await consumer.getmany(timeout_ms=remaining_ms, max_records=max_batch)
                await producer.send_offsets_to_transaction(offsets, group_id)
    finally:
        await consumer.stop()
        await producer.stop()


async def echo_participant(cfg: dict[str, Any], on_stop: Register) -> None:
    """Baseline participant: read a command, note its latency, reply."""
    names = baseline_topics(cfg["prefix"])

    def forward(msg: dict[str, Any], now: float) -> str:
        msg["lat"].append(now - msg["t"])
        return names["replies"]

    await _echo(cfg, on_stop, names[f"commands:{cfg['name']}"], forward)


async def echo_coordinator(cfg: dict[str, Any], on_stop: Register) -> None:
    """Baseline coordinator: read a reply, send the next command (or 'done')."""
    names = baseline_topics(cfg["prefix"])
    steps = int(cfg["steps"])

    def forward(msg: dict[str, Any], now: float) -> str:
        msg["t"] = now  # reply consumed: the clock of the next step's latency starts
        msg["k"] += 1
        if msg["k"] >= steps:
            return names["done"]
        return names[f"commands:{participant_of(msg['k'])}"]

    await _echo(cfg, on_stop, names["replies"], forward)


ROLES: dict[str, Callable[[dict[str, Any], Register], Awaitable[None]]] = {
    "coordinator": coordinator,
    "participant": participant,
    "echo-coordinator": echo_coordinator,
    "echo-participant": echo_participant,
}
"""Worker roles by name."""


def main(argv: list[str]) -> None:
    """Entry point: ``python -m saga.bench ROLE CONFIG_JSON``."""
    if len(argv) != 2 or argv[0] not in ROLES:
        sys.exit(f"usage: python -m saga.bench {{{','.join(ROLES)}}} CONFIG_JSON")
    role, cfg = ROLES[argv[0]], json.loads(argv[1])
    logging.basicConfig(
        level=cfg.get("log_level", "WARNING"),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    run_until_signal(lambda on_stop: role(cfg, on_stop))
