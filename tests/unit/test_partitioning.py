"""Partitioning: the cached hash gives exactly aiokafka's (and the Java client's) answer."""

from __future__ import annotations

import uuid

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from saga.kafka import partition_of_key, shard_of
from saga.kafka._partitioning import KeyPartitioner, key_hash

_default = DefaultPartitioner()
_cached = KeyPartitioner()


@given(key=st.binary(max_size=64), partitions=st.integers(min_value=1, max_value=64))
def test_a_keyed_record_goes_where_the_default_partitioner_puts_it(
    key: bytes, partitions: int
) -> None:
    all_partitions = list(range(partitions))
    expected = _default(key, all_partitions, all_partitions)
    assert _cached(key, all_partitions, all_partitions) == expected
    assert _cached(key, all_partitions, all_partitions) == expected  # cached: the same again
    assert partition_of_key(key, partitions) == expected


def test_a_saga_lives_on_the_partition_of_its_id_as_a_key() -> None:
    for _ in range(200):
        saga_id = uuid.uuid4()
        for partitions in (1, 3, 6, 12):
            key = str(saga_id).encode()
            assert shard_of(saga_id, partitions) == _default(key, list(range(partitions)), [])


def test_a_record_without_a_key_goes_to_an_available_partition() -> None:
    seen = {_cached(None, [0, 1, 2, 3], [1, 3]) for _ in range(200)}
    assert seen == {1, 3}
    assert {_cached(None, [0, 1], []) for _ in range(200)} == {0, 1}


def test_the_hash_cache_is_bounded() -> None:
    for i in range(20_000):
        key_hash(f"key-{i}".encode())
    info = key_hash.cache_info()
    assert info.maxsize is not None
    assert info.currsize <= info.maxsize
