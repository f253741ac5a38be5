"""The relay's checkpoint records on the compacted checkpoint topic.

Every Kafka transaction of a relay carries one checkpoint record: key = relay id, value =
``{"message_ids": [...], "max_id": n, "shard": s}``, the message ids of the outbox rows
the transaction publishes. Because the record commits or aborts together with the
messages, the last *committed* checkpoint names exactly the rows of the relay's last
committed transaction.

The checkpoint names rows by message id, never by outbox id: outbox ids are reused
(SQLite hands out rowids again once pruning has emptied the table, and a database that
is recreated or restored from a backup starts again below ids that Kafka's checkpoint
still names), while a message id is unique to its message. Recovery marks only rows
whose message really was in the committed transaction.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from aiokafka import TopicPartition

from saga.errors import TransportError
from saga.kafka import close_quietly, committed_consumer, translate_kafka_errors

log = logging.getLogger("saga.relay")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What a checkpoint record says was committed in the relay's last transaction."""

    message_ids: list[str] = field(default_factory=list)
    """The message ids of the rows the transaction published."""
    legacy_ids: list[int] = field(default_factory=list)
    """Outbox ids, from a record written before checkpoints named message ids."""

    def __bool__(self) -> bool:
        return bool(self.message_ids or self.legacy_ids)


def encode_checkpoint(message_ids: Sequence[str], max_id: int, shard: int) -> bytes:
    """The value of a checkpoint record for one batch of outbox rows.

    Args:
        message_ids: The rows' message ids, in publish order.
        max_id: The highest outbox id of the batch (for people reading the topic).
        shard: The lane's partition.
    """
    return json.dumps(
        {"message_ids": list(message_ids), "max_id": max_id, "shard": shard},
        separators=(",", ":"),
    ).encode()


def decode_checkpoint(value: bytes | None) -> Checkpoint:
    """The rows a checkpoint record names (nothing for a tombstone or garbage)."""
    if not value:
        return Checkpoint()
    try:
        data = json.loads(value)
        if "message_ids" in data:
            return Checkpoint(message_ids=[str(i) for i in data["message_ids"]])
        return Checkpoint(legacy_ids=[int(i) for i in data["ids"]])
    except (ValueError, TypeError, KeyError):
        log.warning("ignoring a malformed checkpoint record: %r", value[:200])
        return Checkpoint()


async def read_last_checkpoint(
    bootstrap: str,
    topic: str,
    partitions: Collection[int],
    relay_id: str,
    *,
    timeout_s: float = 90.0,
) -> Checkpoint:
    """Read the checkpoint topic to its end and return a relay's last committed checkpoint.

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
    return decode_checkpoint(last) if found else Checkpoint()
