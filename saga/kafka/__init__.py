"""The Kafka adapter shared by the relay, the coordinator and participants.

Client factories configured the way the product needs them, idempotent topic creation,
and the one place where aiokafka exceptions become :mod:`saga.errors`.
"""

from saga.kafka._clients import (
    COMPACTED,
    TopicSpec,
    checkpoint_topic,
    close_quietly,
    committed_consumer,
    delete_topics,
    delete_topics_with_prefix,
    deployment_topics,
    end_offsets,
    ensure_topics,
    fence_topic,
    idempotent_producer,
    topic_partitions,
    topic_retention,
    transactional_producer,
)
from saga.kafka._errors import KAFKA_ERROR_MAP, map_kafka_error, translate_kafka_errors
from saga.kafka._group_fencing import (
    GroupMember,
    group_member_of,
    install_group_fencing,
    send_fenced_offsets,
)
from saga.kafka._partitioning import partition_of_key, shard_of
from saga.kafka._refusals import invalid_topic_name, refusal_of, topic_exists

__all__ = [
    "COMPACTED",
    "KAFKA_ERROR_MAP",
    "GroupMember",
    "TopicSpec",
    "checkpoint_topic",
    "close_quietly",
    "committed_consumer",
    "delete_topics",
    "delete_topics_with_prefix",
    "deployment_topics",
    "end_offsets",
    "ensure_topics",
    "fence_topic",
    "group_member_of",
    "idempotent_producer",
    "install_group_fencing",
    "invalid_topic_name",
    "map_kafka_error",
    "partition_of_key",
    "refusal_of",
    "send_fenced_offsets",
    "shard_of",
    "topic_exists",
    "topic_partitions",
    "topic_retention",
    "transactional_producer",
    "translate_kafka_errors",
]
