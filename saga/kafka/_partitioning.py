"""Which partition a saga lives on: the same answer Kafka's default partitioner gives.

The hash is murmur2, which aiokafka computes in pure Python: per record produced it was
a visible share of a relay's CPU. A saga's dozen messages all carry its id as their key,
so the hash of a key is remembered (a bounded cache; the answer never changes).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from uuid import UUID

from aiokafka.partitioner import murmur2

_CACHED_KEYS = 16_384
"""Keys whose hash is remembered: a few times the sagas in flight of a busy process
(about 100 bytes each)."""


@functools.lru_cache(maxsize=_CACHED_KEYS)
def key_hash(key: bytes) -> int:
    """murmur2 of a record key as Kafka's default partitioner uses it (made positive)."""
    hashed: int = murmur2(key)
    return hashed & 0x7FFFFFFF


@functools.lru_cache(maxsize=_CACHED_KEYS)
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
    return key_hash(key) % partitions


class KeyPartitioner:
    """aiokafka's default partitioning, with :func:`key_hash` remembered.

    Records with a key go where the Java client and aiokafka's ``DefaultPartitioner``
    put them; records without one go to a random available partition, as there.
    """

    def __call__(
        self, key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]
    ) -> int:
        if key is None:
            return random.choice(available or all_partitions)
        return all_partitions[key_hash(key) % len(all_partitions)]
