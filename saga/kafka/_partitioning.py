"""Which partition a saga lives on: the same answer Kafka's default partitioner gives."""

from __future__ import annotations

from uuid import UUID

from aiokafka.partitioner import murmur2


def shard_of(saga_id: UUID, partitions: int) -> int:
    """The saga's *home* partition of the replies topic; also its outbox shard.

    Kafka's default partitioner (murmur2 of the key, as the Java client and aiokafka
    compute it) puts every message keyed by the saga id there, so the coordinator that
    owns the partition applies the saga's replies and its relay publishes the saga's
    commands: the publishing work follows the partition's ownership.
    """
    return partition_of_key(str(saga_id).encode(), partitions)


def partition_of_key(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a record with this key."""
    if partitions <= 1:
        return 0
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions
