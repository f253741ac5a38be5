"""The relay's Kafka transaction through aiokafka and through confluent-kafka (librdkafka).

Each client runs the same loop as an exactly-once relay: one transaction per batch,
the batch's records (with headers, keyed, spread over a 12-partition topic) followed by
one checkpoint record, then the commit. It reports transactions/s, the client's CPU per
transaction (all its threads: librdkafka does its I/O in threads of its own) and the
broker's CPU per transaction, for small batches at a fixed rate (a lightly loaded relay)
and for batches flat out. Clients alternate run by run, so both see the same machine.

Run it against the local broker (``deploy/local/up``)::

    .venv/bin/pip install confluent-kafka        # not a dependency of the product
    .venv/bin/python deploy/bench/kafka_clients.py --rounds 2

The broker's CPU is that of every ``java`` process on the machine (as in ``saga bench``):
run it on an otherwise quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from saga.bench._procs import cpu_seconds, infrastructure_cpu
from saga.kafka import transactional_producer

HEADERS = [("message-id", b"m" * 36), ("saga-id", b"s" * 36), ("kind", b"command")]
PAYLOAD = b"p" * 400
PARTITIONS = 12

Transaction = Callable[[int], Awaitable[None]]


async def create_topics(bootstrap: str) -> tuple[str, str]:
    """A fresh data topic and checkpoint topic for one run."""
    name = f"kafka-clients-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, PARTITIONS, 1), NewTopic(f"{name}-checkpoints", 1, 1)]
        )
    finally:
        await admin.close()
    await asyncio.sleep(1.0)  # let the leaders settle before measuring
    return name, f"{name}-checkpoints"


async def aiokafka_client(
    bootstrap: str, topic: str, checkpoints: str, records: int
) -> tuple[Transaction, Callable[[], Awaitable[None]]]:
    """The relay's own producer (``saga.kafka.transactional_producer``)."""
    producer = transactional_producer(bootstrap, f"kafka-clients-aio-{uuid.uuid4().hex[:6]}")
    await producer.start()

    async def transaction(_: int) -> None:
        async with producer.transaction():
            sent = [
                await producer.send(topic, PAYLOAD, key=_key(), headers=HEADERS)
                for _ in range(records)
            ]
            sent.append(await producer.send(checkpoints, b"c" * 60, key=b"relay"))
            await asyncio.gather(*sent)

    return transaction, producer.stop


async def confluent_client(
    bootstrap: str, topic: str, checkpoints: str, records: int
) -> tuple[Transaction, Callable[[], Awaitable[None]]]:
    """The relay's settings through librdkafka; its blocking calls run in a thread."""
    from confluent_kafka import Producer  # type: ignore[import-not-found]

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": f"kafka-clients-rd-{uuid.uuid4().hex[:6]}",
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 0,
            "retry.backoff.ms": 20,
        }
    )
    await asyncio.to_thread(producer.init_transactions, 30)

    async def transaction(_: int) -> None:
        producer.begin_transaction()  # local state only: no round trip
        for _ in range(records):
            producer.produce(topic, PAYLOAD, key=_key(), headers=HEADERS)
        producer.produce(checkpoints, b"c" * 60, key=b"relay")
        await asyncio.to_thread(producer.commit_transaction, 30)  # flushes, then EndTxn

    async def close() -> None:
        await asyncio.to_thread(producer.flush, 10)

    return transaction, close


def _key() -> bytes:
    return uuid.UUID(int=random.getrandbits(128)).bytes


CLIENTS = {"aiokafka": aiokafka_client, "confluent-kafka": confluent_client}


async def measure(client: str, bootstrap: str, count: int, records: int, rate: float) -> Any:
    """Run ``count`` transactions of ``records`` records (``rate`` per second, 0: flat out)."""
    topic, checkpoints = await create_topics(bootstrap)
    transaction, close = await CLIENTS[client](bootstrap, topic, checkpoints, records)
    try:
        await transaction(-1)  # connections and the first AddPartitionsToTxn
        broker0, cpu0, t0 = (
            infrastructure_cpu()["kafka"],
            cpu_seconds(os.getpid()),
            time.perf_counter(),
        )
        for i in range(count):
            if rate and (delay := t0 + i / rate - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            await transaction(i)
        elapsed = time.perf_counter() - t0
        broker, cpu = infrastructure_cpu()["kafka"] - broker0, cpu_seconds(os.getpid()) - cpu0
    finally:
        await close()
    return {
        "client": client,
        "records_per_transaction": records,
        "rate": rate or "flat out",
        "transactions_per_s": round(count / elapsed, 1),
        "client_cpu_ms_per_transaction": round(1000 * cpu / count, 3),
        "broker_cpu_ms_per_transaction": round(1000 * broker / count, 3),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    )
    parser.add_argument("--rounds", type=int, default=2, help="runs of each client per case")
    parser.add_argument("--transactions", type=int, default=1000)
    parser.add_argument("--json", action="store_true", help="one JSON object per run")
    args = parser.parse_args()
    cases = [(1, 50.0), (1, 0.0), (20, 0.0)]  # (records per transaction, rate)
    total = args.rounds * len(cases) * len(CLIENTS)
    done = 0
    for _ in range(args.rounds):
        for records, rate in cases:
            for client in CLIENTS:
                count = args.transactions if records == 1 else args.transactions // 3
                done += 1
                print(
                    f"[{done}/{total}] {client}: {count} transactions of {records} record(s)"
                    f" at {f'{rate:g}/s' if rate else 'flat out'} ...",
                    flush=True,
                )
                result = await measure(client, args.bootstrap, count, records, rate)
                print(
                    json.dumps(result)
                    if args.json
                    else "    "
                    + ", ".join(
                        f"{k.replace('_', ' ')} {v}"
                        for k, v in result.items()
                        if k not in ("client", "records_per_transaction", "rate")
                    ),
                    flush=True,
                )


if __name__ == "__main__":
    try:
        import confluent_kafka  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        raise SystemExit(
            "confluent-kafka is not installed: run `.venv/bin/pip install confluent-kafka`"
            " (it is not a dependency of the product), then run this again"
        ) from None
    asyncio.run(main())
