"""Simple mode (at least once): handlers run without a transaction.

Replies and dead letters are sent with an idempotent producer after the batch, and
when every send is acknowledged the message ids are remembered (an in-memory LRU, plus
the inbox table when an engine is given) and the Kafka offsets committed: here they
are what marks a batch consumed. A crash before that re-runs the handlers of the batch
(they must be idempotent); their replies carry the same message ids (derived from the
command's id), so the coordinator drops the copies. A batch that fails is rewound so
its records are read again, and a revocation waits for the batch in flight to commit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from saga.participant import _db
from saga.participant._decoding import command_ids
from saga.participant._kafka import (
    RebalanceHooks,
    committed_consumer,
    idempotent_producer,
    topic_partition,
    translate_kafka_errors,
)
from saga.participant._mode import BatchMode, ModeParts


class SimpleMode(BatchMode):
    """Consumes with a Kafka group consumer; replies go through an idempotent producer."""

    def __init__(self, parts: ModeParts, engine: AsyncEngine | None) -> None:
        super().__init__(parts)
        self._engine = engine
        self._consumer: Any = None  # an aiokafka group consumer
        self._producer: Any = None
        self._batch_lock = asyncio.Lock()
        self._recent: OrderedDict[str, None] = OrderedDict()

    @property
    def group_consumer(self) -> Any:
        """The Kafka consumer whose group offsets mark a batch consumed."""
        return self._consumer

    @property
    def joined(self) -> bool:
        """Whether the group assigned this replica partitions (now)."""
        return self._consumer is not None and bool(self._consumer.assignment())

    async def start(self) -> None:
        """Start the producer and the consumer (the caller stops on failure)."""
        cfg = self._config
        self._producer = idempotent_producer(cfg.bootstrap_servers)
        with translate_kafka_errors("start the reply producer"):
            await self._producer.start()
        self._consumer = committed_consumer(cfg.bootstrap_servers, group_id=cfg.effective_group_id)
        with translate_kafka_errors("start the command consumer"):
            await self._consumer.start()
            self._consumer.subscribe(
                topics=[cfg.commands_topic],
                listener=RebalanceHooks(_nothing, self._on_revoked),
            )

    async def stop(self) -> None:
        """Stop the consumer, then the producer (idempotent)."""
        consumer, producer = self._consumer, self._producer
        self._consumer = self._producer = None
        try:
            if consumer is not None:
                with translate_kafka_errors("stop the command consumer"):
                    await consumer.stop()
        finally:
            if producer is not None:
                with translate_kafka_errors("stop the reply producer"):
                    await producer.stop()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Nothing runs beside the loop in this mode."""
        yield

    async def round(self) -> None:
        """Poll once and handle what came; a failed batch is read again."""
        cfg = self._config
        with translate_kafka_errors("poll commands"):
            fetched = await self._consumer.getmany(
                timeout_ms=cfg.poll_timeout_ms, max_records=cfg.max_batch
            )
        batch = {tp.partition: list(rs) for tp, rs in fetched.items() if rs}
        if not batch:
            return
        async with self._batch_lock:
            try:
                await self._process_batch(batch)
            except BaseException:
                self._rewind(batch)
                raise

    async def _process_batch(self, batch: Mapping[int, Sequence[Any]]) -> None:
        items, next_offsets = self._decode_batch(batch)
        ids = command_ids(items)
        seen = {i for i in ids if i in self._recent}
        if self._engine is not None:
            with _db.translate_db_errors(f"{self._name}: read the inbox"):
                async with self._engine.connect() as conn:
                    seen |= await _db.seen_message_ids(conn, ids)
        handled, to_send = await self._runner.handle_batch(items, seen, None)
        with translate_kafka_errors(f"{self._name}: send replies"):
            acks = [
                await self._producer.send(
                    r.topic, value=r.value, key=r.key, headers=list(r.headers)
                )
                for r in to_send
            ]
            await asyncio.gather(*acks)
        self._remember(handled)
        if self._engine is not None and handled:
            with _db.translate_db_errors(f"{self._name}: write the inbox"):
                async with self._engine.begin() as conn:
                    await _db.claim_message_ids(conn, handled)
        await self._commit_offsets(next_offsets)

    def _remember(self, message_ids: Iterable[str]) -> None:
        limit = self._config.dedupe_cache_size
        for message_id in message_ids:
            self._recent[message_id] = None
            self._recent.move_to_end(message_id)
        while len(self._recent) > limit:
            self._recent.popitem(last=False)

    def _rewind(self, batch: Mapping[int, Sequence[Any]]) -> None:
        assignment = self._consumer.assignment()
        for partition, records in batch.items():
            tp = topic_partition(self._config.commands_topic, partition)
            if records and tp in assignment:
                self._consumer.seek(tp, records[0].offset)

    async def _on_revoked(self, _revoked: set[Any]) -> None:
        # Let the batch in flight finish (and commit) before another member takes over.
        async with self._batch_lock:
            pass


async def _nothing(_partitions: set[Any]) -> None:
    """Nothing to do on assignment (Kafka's offsets count here)."""
