"""Factories for the few aiokafka clients the product uses, and idempotent topic creation.

The factories return *unstarted* clients configured the one way the product needs them;
callers start and stop them inside :func:`saga.kafka.translate_kafka_errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka import errors as kafka_errors
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from saga.errors import ConfigError, TransportError
from saga.kafka._errors import translate_kafka_errors
from saga.kafka._partitioning import KeyPartitioner
from saga.topics import Topics

log = logging.getLogger("saga.kafka")

COMPACTED: dict[str, str] = {
    "cleanup.policy": "compact",
    # Roll segments often enough that compaction keeps the topic small: only closed
    # segments are compacted, and a relay reads the whole topic on start.
    "segment.ms": str(60 * 60 * 1000),
    "segment.bytes": str(16 * 1024 * 1024),
}
"""Topic configuration of the compacted checkpoint topic."""


@dataclass(frozen=True, kw_only=True)
class TopicSpec:
    """A topic to create."""

    name: str
    """Full topic name (prefix included)."""
    partitions: int = 1
    """Number of partitions."""
    replication_factor: int = 1
    """Number of replicas of each partition."""
    config: dict[str, str] = field(default_factory=dict)
    """Topic-level configuration, e.g. :data:`COMPACTED`."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("a topic needs a name")
        if self.partitions < 1:
            raise ConfigError(f"topic {self.name}: partitions must be >= 1")
        if self.replication_factor < 1:
            raise ConfigError(f"topic {self.name}: replication_factor must be >= 1")


def transactional_producer(
    bootstrap: str, transactional_id: str, *, transaction_timeout_ms: int = 60_000
) -> AIOKafkaProducer:
    """A transactional, idempotent producer (``acks=all``).

    ``start()`` runs ``InitProducerId``: it fences any older producer with the same
    transactional id and completes or aborts that producer's open transaction.
    """
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        transactional_id=transactional_id,
        transaction_timeout_ms=transaction_timeout_ms,
        enable_idempotence=True,
        acks="all",
        # Right after a commit the broker may still be writing the markers and answer
        # the next transaction's first request with CONCURRENT_TRANSACTIONS; the retry
        # waits this long (the client default of 100 ms showed up as step latency).
        retry_backoff_ms=20,
        partitioner=KeyPartitioner(),
    )


def idempotent_producer(bootstrap: str) -> AIOKafkaProducer:
    """An idempotent producer (``acks=all``) without transactions."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        acks="all",
        partitioner=KeyPartitioner(),
    )


def committed_consumer(
    bootstrap: str, topics: Sequence[str] | None = None, group_id: str | None = None
) -> AIOKafkaConsumer:
    """A consumer that sees only committed transactions and never auto-commits.

    Args:
        bootstrap: Kafka bootstrap servers.
        topics: Topics to subscribe to; ``None`` to ``assign()`` partitions manually.
        group_id: Consumer group, or ``None`` for a group-less consumer.
    """
    return AIOKafkaConsumer(
        *(topics or ()),
        bootstrap_servers=bootstrap,
        group_id=group_id,
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )


def deployment_topics(
    topics: Topics,
    participants: Iterable[str] = (),
    *,
    partitions: int = 6,
    replication_factor: int = 1,
) -> list[TopicSpec]:
    """The topics of one deployment: replies, starts, events, dlq, relay and commands.

    The relay's topics are its checkpoints and its fences.

    Args:
        topics: Topic names (with their prefix).
        participants: Participants that get a ``<participant>.commands`` topic.
        partitions: Partitions of every topic except the checkpoint topic (which has
            one: it is small, and the relay reads it whole) and the fence topic (one,
            never written).
        replication_factor: Replication factor of every topic.
    """

    def spec(name: str) -> TopicSpec:
        return TopicSpec(name=name, partitions=partitions, replication_factor=replication_factor)

    specs = [spec(topics.replies), spec(topics.starts), spec(topics.events), spec(topics.dlq)]
    specs.append(checkpoint_topic(topics, replication_factor=replication_factor))
    specs.append(fence_topic(topics, replication_factor=replication_factor))
    specs.extend(spec(topics.commands(p)) for p in sorted(set(participants)))
    return specs


def checkpoint_topic(topics: Topics, *, replication_factor: int = 1) -> TopicSpec:
    """The relay's compacted checkpoint topic (one partition)."""
    return TopicSpec(
        name=topics.checkpoints,
        partitions=1,
        replication_factor=replication_factor,
        config=dict(COMPACTED),
    )


def fence_topic(topics: Topics, *, replication_factor: int = 1) -> TopicSpec:
    """The relay's fence topic (one partition, never written; see ``Topics.fences``)."""
    return TopicSpec(name=topics.fences, partitions=1, replication_factor=replication_factor)


@contextlib.asynccontextmanager
async def _admin(bootstrap: str, operation: str) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client, closed afterwards; Kafka errors become :mod:`saga.errors`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    with translate_kafka_errors(operation):
        try:
            await admin.start()
            yield admin
        except AttributeError as exc:
            # aiokafka's admin client dereferences the cluster's controller without a
            # check; right after a broker restart or freeze the metadata has none yet.
            raise TransportError(
                f"{operation}: the Kafka cluster has no controller yet ({exc}); retry"
            ) from exc
        finally:
            await admin.close()


async def ensure_topics(bootstrap: str, specs: Sequence[TopicSpec]) -> list[str]:
    """Create the topics that do not exist yet; existing ones are left as they are.

    Returns:
        The names of the topics this call created.

    Raises:
        saga.errors.TransportError: Kafka is unreachable or refused a topic.
    """
    if not specs:
        return []
    created: list[str] = []
    async with _admin(bootstrap, "create topics") as admin:
        response = await admin.create_topics(
            [
                NewTopic(
                    s.name,
                    num_partitions=s.partitions,
                    replication_factor=s.replication_factor,
                    topic_configs=s.config,
                )
                for s in specs
            ]
        )
        for topic_error in response.topic_errors:
            name, code = topic_error[0], topic_error[1]
            error_type = kafka_errors.for_code(code)
            if error_type is kafka_errors.NoError:
                created.append(name)
            elif error_type is not kafka_errors.TopicAlreadyExistsError:
                message = topic_error[2] if len(topic_error) > 2 else None
                raise error_type(f"topic {name}: {message or error_type.__name__}")
    if created:
        log.info("created topics %s", ", ".join(created))
    return created


async def delete_topics_with_prefix(bootstrap: str, prefix: str) -> list[str]:
    """Delete every topic whose name starts with ``prefix``; return the names deleted.

    The runs that make topics of their own (``saga demo``, ``saga chaos``,
    ``saga bench``, the test suite) call it when they end: every partition is a few
    open files on the broker, and a broker that keeps thousands of leftover
    partitions ends up refusing work with "Too many open files".

    Raises:
        saga.errors.ConfigError: ``prefix`` is empty (that would delete every topic).
        saga.errors.TransportError: Kafka is unreachable.
    """
    if not prefix:
        raise ConfigError("delete_topics_with_prefix needs a non-empty prefix")
    return await delete_topics(bootstrap, lambda name: name.startswith(prefix))


DELETE_CHUNK = 200
"""Topics named in one DeleteTopics request."""


async def delete_topics(bootstrap: str, select: Callable[[str], bool]) -> list[str]:
    """Delete the topics whose name ``select`` accepts; return their names, sorted.

    Raises:
        saga.errors.TransportError: Kafka is unreachable.
    """
    async with _admin(bootstrap, "delete topics") as admin:
        doomed = sorted(t for t in await admin.list_topics() if select(t))
        for i in range(0, len(doomed), DELETE_CHUNK):
            await admin.delete_topics(doomed[i : i + DELETE_CHUNK], timeout_ms=60_000)
    if doomed:
        log.info("deleted %d topics", len(doomed))
    return doomed


async def topic_partitions(bootstrap: str, names: Sequence[str]) -> list[TopicPartition]:
    """Every partition of the named topics that exist, sorted (missing ones are left out).

    Raises:
        saga.errors.TransportError: Kafka is unreachable.
    """
    async with _admin(bootstrap, "describe topics") as admin:
        described = await admin.describe_topics(list(names))
    return sorted(
        TopicPartition(t["topic"], p["partition"])
        for t in described
        if not t.get("error_code")
        for p in t["partitions"]
    )


async def end_offsets(
    bootstrap: str, partitions: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """The end offset of each named partition that exists (a missing one is left out).

    An end offset counts every record and every transaction marker written so far.

    Raises:
        saga.errors.TransportError: Kafka is unreachable.
    """
    wanted = sorted(set(partitions))
    existing = set(await topic_partitions(bootstrap, sorted({topic for topic, _ in wanted})))
    tps = [TopicPartition(t, p) for t, p in wanted if TopicPartition(t, p) in existing]
    if not tps:
        return {}
    consumer = committed_consumer(bootstrap)
    try:
        with translate_kafka_errors("read end offsets"):
            await consumer.start()
            ends = await consumer.end_offsets(tps)
    finally:
        await close_quietly(consumer)
    return {(tp.topic, tp.partition): int(offset) for tp, offset in ends.items()}


async def topic_retention(bootstrap: str, topic: str) -> timedelta | None:
    """How long ``topic`` keeps its records: its ``retention.ms`` as the broker applies it.

    The broker answers with the value in force, whether it was set on the topic or comes
    from the broker's default (``log.retention.*``).

    Returns:
        The retention, or ``None`` when the topic keeps records forever (``-1``).

    Raises:
        saga.errors.TransportError: Kafka is unreachable, the topic does not exist, or
            the broker did not say.
    """
    value: str | None = None
    async with _admin(bootstrap, f"read the retention of {topic}") as admin:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"retention.ms": None})]
        )
        for response in responses:
            for error_code, error_message, _type, name, entries in response.resources:
                error_type = kafka_errors.for_code(error_code)
                if error_type is not kafka_errors.NoError:
                    raise error_type(f"topic {name}: {error_message or error_type.__name__}")
                value = next((e[1] for e in entries if e[0] == "retention.ms"), value)
        if value is None or not value.lstrip("-").isdigit():
            raise kafka_errors.KafkaError(f"topic {topic}: retention.ms is {value!r}")
    ms = int(value)
    return None if ms < 0 else timedelta(milliseconds=ms)


CLOSE_TIMEOUT_S = 10.0
"""How long :func:`close_quietly` waits for a client to stop."""


_LEFT_BEHIND: set[asyncio.Task[None]] = set()
"""Stops that did not finish in time; referenced until they end (never awaited)."""


async def close_quietly(client: AIOKafkaProducer | AIOKafkaConsumer) -> None:
    """Stop a client that may be broken, logging (not raising) what goes wrong.

    A client whose broker is gone can wait without end to flush or to leave, and may
    even swallow the cancellation of a time-out. So the stop runs in a task of its own:
    after :data:`CLOSE_TIMEOUT_S` it is left behind (with a warning) and the caller
    goes on. Cancelling the caller still cancels the caller.
    """
    # aiokafka: a consumer without a group starts a background task in start() and
    # awaits it in stop(). Stopped before that task first ran, stop() raises the task's
    # CancelledError and skips closing its fetcher and connections. That CancelledError
    # once escaped the relay's checkpoint read and ended the relay's task silently.
    # One turn of the event loop lets the task start, so stop() closes everything.
    await asyncio.sleep(0)
    stopping = asyncio.ensure_future(_stop(client))
    done, _ = await asyncio.wait({stopping}, timeout=CLOSE_TIMEOUT_S)
    if not done:
        log.warning("a Kafka client did not stop within %.0f s; left behind", CLOSE_TIMEOUT_S)
        _LEFT_BEHIND.add(stopping)
        stopping.add_done_callback(_LEFT_BEHIND.discard)


async def _stop(client: AIOKafkaProducer | AIOKafkaConsumer) -> None:
    try:
        with translate_kafka_errors("close client"):
            await client.stop()
    except (Exception, asyncio.CancelledError):  # a broken client must not hide the error
        log.warning("closing a Kafka client failed", exc_info=True)
