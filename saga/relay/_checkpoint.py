"""The relay's checkpoint records on the compacted checkpoint topic.

Every Kafka transaction of a relay carries one checkpoint record: key = relay id, value =
``{"ids": [...], "max_id": n, "shard": s}``, the outbox ids the transaction publishes.
Because the record commits or aborts together with the messages, the last *committed*
checkpoint names exactly the rows of the relay's last committed transaction.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Collection, Sequence

from aiokafka import TopicPartition

from saga.errors import TransportError
from saga.kafka import close_quietly, committed_consumer, translate_kafka_errors

log = logging.getLogger("saga.relay")


def encode_checkpoint(ids: Sequence[int], shard: int) -> bytes:
    """The value of a checkpoint record for a batch of outbox ids."""
    return json.dumps(
        {"ids": list(ids), "max_id": max(ids), "shard": shard}, separators=(",", ":")
    ).encode()


def decode_checkpoint(value: bytes | None) -> list[int]:
    """The outbox ids of a checkpoint record (empty for a tombstone or garbage)."""
    if not value:
        return []
    try:
        data = json.loads(value)
        return [int(i) for i in data["ids"]]
    except (ValueError, TypeError, KeyError):
        log.warning("ignoring a malformed checkpoint record: %r", value[:200])
        return []


async def read_last_checkpoint(
    bootstrap: str,
    topic: str,
    partitions: Collection[int],
    relay_id: str,
    *,
    timeout_s: float = 90.0,
) -> list[int]:
    """Read the checkpoint topic to its end and return the last committed ids of a relay.

    The consumer is ``read_committed``, so checkpoints of aborted (fenced) transactions
    are never returned. It reads up to the *high watermark* seen on its first fetch, not
    just to the last stable offset: relays of other shards share the topic, and an open
    transaction of theirs would otherwise hide our own, later, committed checkpoint.
    Waiting for those transactions ends when they commit or, for a dead relay, when
    the broker aborts them after their transaction timeout.

    Args:
        bootstrap: Kafka bootstrap servers.
        topic: The checkpoint topic.
        partitions: Its partitions (e.g. from ``producer.partitions_for(topic)``).
        relay_id: Key of the relay's checkpoint records.
        timeout_s: Give up after this long.

    Raises:
        saga.errors.TransportError: Kafka is unreachable, or the end was not reached
            within ``timeout_s``.
    """
    key = relay_id.encode()
    consumer = committed_consumer(bootstrap)
    last: bytes | None = None
    found = False
    with translate_kafka_errors("read relay checkpoint"):
        try:
            await consumer.start()
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            if not tps:
                raise TransportError(f"checkpoint topic {topic} has no partitions (missing?)")
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            targets: dict[TopicPartition, int] = {}
            async with asyncio.timeout(timeout_s):
                while True:
                    batches = await consumer.getmany(*tps, timeout_ms=200)
                    for records in batches.values():
                        for record in records:
                            if record.key == key:
                                last, found = record.value, True
                    for tp in tps:
                        if tp not in targets and (hw := consumer.highwater(tp)) is not None:
                            targets[tp] = hw
                    if len(targets) == len(tps) and all(
                        [await consumer.position(tp) >= targets[tp] for tp in tps]
                    ):
                        break
        except TimeoutError as exc:
            raise TransportError(
                f"read relay checkpoint: end of {topic} not reached in {timeout_s}s"
                " (an open transaction of another relay?)"
            ) from exc
        finally:
            await close_quietly(consumer)
    return decode_checkpoint(last) if found else []
