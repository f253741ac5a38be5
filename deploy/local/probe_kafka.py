"""Readiness probe: exit 0 when a producer can send to the cluster and a consumer can read.

Usage: probe_kafka.py BOOTSTRAP [BROKERS]
"""

from __future__ import annotations

import asyncio
import sys
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic


async def probe(bootstrap: str, brokers: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        info = await admin.describe_cluster()
        if len(info["brokers"]) < brokers:
            raise SystemExit(f"only {len(info['brokers'])} of {brokers} brokers up")
        topic = "saga.local.readiness"
        if topic not in await admin.list_topics():
            await admin.create_topics([NewTopic(topic, 1, min(brokers, 3))])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", request_timeout_ms=5000)
    await producer.start()
    token = uuid.uuid4().hex.encode()
    try:
        meta = await producer.send_and_wait(topic, token)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        msg = await asyncio.wait_for(consumer.getone(), 10)
        if msg.value != token:
            raise SystemExit("read back a different message")
    finally:
        await consumer.stop()


if __name__ == "__main__":
    asyncio.run(
        asyncio.wait_for(probe(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1), 30)
    )
