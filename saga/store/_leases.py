"""Partition ownership in the database: claims, fenced offset commits, partition counts.

Theory of operation
-------------------
``saga_consumer_offsets`` holds one row per ``(group, topic, partition)``: the next
offset to read and the *epoch* of the partition's current owner (the model is
Temporal's shard ``range_id``).

* **Claim.** A member that Kafka's group protocol assigned a partition claims it in
  one transaction: ``epoch = epoch + 1``, ``owner = member``. The claim returns the new
  epoch and the stored offset to seek to. Because it takes the row lock, a claim waits
  for a batch of the previous owner that already wrote its offsets, and then sees them.
* **Commit.** Every batch stores its next offsets with one ``UPDATE`` that matches only
  rows whose epoch is still the one the member claimed and whose stored offset is not
  ahead of the new one. A row that does not match means the partition was claimed by
  someone else (or the offset would move backwards): :class:`PartitionFenced` is
  raised inside the batch's transaction, so nothing of the batch commits.

So a member that lost a partition, however late its batch arrives, can never commit
state, outbox rows or offsets for it again, and stored offsets never decrease.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Integer, bindparam, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from saga.errors import ConfigError, PartitionFenced
from saga.store.tables import consumer_offsets as co


@dataclass(frozen=True, slots=True)
class Claim:
    """A partition this member now owns."""

    partition: int
    """The partition."""
    epoch: int
    """The owner generation every batch of this member is checked against."""
    next_offset: int | None
    """Where to resume reading (``None``: nothing stored; read from the beginning)."""


def _insert(conn: AsyncConnection) -> postgresql.Insert | sqlite.Insert:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(co)


async def check_single_group(conn: AsyncConnection, group_id: str, topic: str) -> None:
    """Refuse a second consumer group for a topic whose offsets this database stores.

    Two groups reading one topic into one database would each handle every record and
    publish each result twice.

    Raises:
        ConfigError: Another group's offsets of ``topic`` are stored here.
    """
    other = (
        await conn.execute(
            select(co.c.group_id).where(co.c.topic == topic, co.c.group_id != group_id).limit(1)
        )
    ).scalar()
    if other is not None:
        raise ConfigError(
            f"this database already stores the offsets of {topic!r} for consumer group"
            f" {other!r}; group {group_id!r} would handle every record of {topic!r} a second"
            f" time and publish each result twice. Use group {other!r} (the default"
            " derives it from the topic prefix), or delete its rows from"
            " saga_consumer_offsets if that group is gone for good."
        )


async def register_partitions(
    conn: AsyncConnection, group_id: str, topic: str, partitions: int
) -> None:
    """Make sure rows exist for partitions ``0..partitions-1`` (epoch 0, nothing stored)."""
    if partitions < 1:
        return
    stmt = _insert(conn).on_conflict_do_nothing(index_elements=["group_id", "topic", "partition"])
    await conn.execute(
        stmt,
        [{"group_id": group_id, "topic": topic, "partition": p} for p in range(partitions)],
    )


async def claim_partitions(
    conn: AsyncConnection,
    group_id: str,
    topic: str,
    partitions: Collection[int],
    *,
    member: str,
    now: datetime,
) -> dict[int, Claim]:
    """Claim partitions for ``member``: raise their epochs and return where to resume.

    Raises:
        ConfigError: Another consumer group's offsets of ``topic`` are stored here.
    """
    wanted = sorted(set(partitions))
    if not wanted:
        return {}
    await check_single_group(conn, group_id, topic)
    stmt = _insert(conn).on_conflict_do_nothing(index_elements=["group_id", "topic", "partition"])
    await conn.execute(
        stmt, [{"group_id": group_id, "topic": topic, "partition": p} for p in wanted]
    )
    rows = await conn.execute(
        update(co)
        .where(co.c.group_id == group_id, co.c.topic == topic, co.c.partition.in_(wanted))
        .values(epoch=co.c.epoch + 1, owner=member, claimed_at=now)
        .returning(co.c.partition, co.c.epoch, co.c.next_offset)
    )
    return {
        int(r.partition): Claim(int(r.partition), int(r.epoch), r.next_offset) for r in rows.all()
    }


_PG_COMMIT = text(
    """
    UPDATE saga_consumer_offsets AS o SET next_offset = v.next_offset
    FROM unnest(CAST(:partitions AS integer[]), CAST(:offsets AS bigint[]),
                CAST(:epochs AS bigint[])) AS v(partition, next_offset, epoch)
    WHERE o.group_id = :group_id AND o.topic = :topic AND o.partition = v.partition
      AND o.epoch = v.epoch AND coalesce(o.next_offset, -1) <= v.next_offset
    RETURNING o.partition
    """
)

_SQLITE_COMMIT = (
    update(co)
    .where(
        co.c.group_id == bindparam("g"),
        co.c.topic == bindparam("t"),
        co.c.partition == bindparam("p"),
        co.c.epoch == bindparam("e"),
        func.coalesce(co.c.next_offset, -1) <= bindparam("o"),
    )
    .values(next_offset=bindparam("o"))
)


PG_COMMIT_CTE = _PG_COMMIT.columns(partition=Integer).cte("w_offsets")
"""PostgreSQL: the fenced offset commit as a CTE for one statement with a batch's writes
(its ``partition`` column lists the partitions stored; bind :meth:`OffsetCommit.params`)."""


@dataclass(frozen=True, slots=True)
class OffsetCommit:
    """The next offsets a batch stores, with the epochs its member claimed them at."""

    group_id: str
    topic: str
    offsets: Mapping[int, int]
    """``partition -> next offset``."""
    epochs: Mapping[int, int]
    """``partition -> epoch`` of the partitions the member owns now."""

    @property
    def partitions(self) -> list[int]:
        """The partitions committed, in order."""
        return sorted(self.offsets)

    def params(self) -> dict[str, object]:
        """The parameters of the PostgreSQL commit (see :data:`PG_COMMIT_CTE`).

        Raises:
            PartitionFenced: A partition is not claimed by this member at all.
        """
        parts = self.partitions
        missing = [p for p in parts if p not in self.epochs]
        if missing:
            raise PartitionFenced(self.topic, missing, "this member has not claimed them")
        return {
            "partitions": parts,
            "offsets": [self.offsets[p] for p in parts],
            "epochs": [self.epochs[p] for p in parts],
            "group_id": self.group_id,
            "topic": self.topic,
        }

    def check(self, stored: Collection[int]) -> None:
        """Raise unless every partition was stored (``stored``: those the commit matched).

        Raises:
            PartitionFenced: Another member claimed a partition since.
        """
        lost = [p for p in self.partitions if p not in stored]
        if lost:
            raise PartitionFenced(self.topic, lost, "another member claimed them since")


async def commit_offsets(
    conn: AsyncConnection,
    group_id: str,
    topic: str,
    offsets: Mapping[int, int],
    epochs: Mapping[int, int],
) -> None:
    """Store ``partition -> next offset``, checked against the epochs this member holds.

    Call it inside the batch's transaction; when it raises, roll the transaction back.

    Raises:
        PartitionFenced: A partition is owned by a newer epoch (or its stored offset is
            ahead of the new one): this member must not commit for it.
    """
    await store_offsets(conn, OffsetCommit(group_id, topic, offsets, epochs))


async def store_offsets(conn: AsyncConnection, commit: OffsetCommit) -> None:
    """:func:`commit_offsets` of one :class:`OffsetCommit`.

    Raises:
        PartitionFenced: As :func:`commit_offsets`.
    """
    if not commit.offsets:
        return
    params = commit.params()
    if conn.dialect.name == "postgresql":
        rows = await conn.execute(_PG_COMMIT, params)
        stored = {int(p) for p in rows.scalars()}
    else:
        stored = set()
        for p in commit.partitions:
            values = {
                "g": commit.group_id,
                "t": commit.topic,
                "p": p,
                "e": commit.epochs[p],
                "o": commit.offsets[p],
            }
            if (await conn.execute(_SQLITE_COMMIT, values)).rowcount:
                stored.add(p)
    commit.check(stored)


async def load_offsets(conn: AsyncConnection, group_id: str, topic: str) -> dict[int, int]:
    """Return ``partition -> next offset`` stored for a consumer group and topic."""
    rows = await conn.execute(
        select(co.c.partition, co.c.next_offset).where(
            co.c.group_id == group_id, co.c.topic == topic, co.c.next_offset.is_not(None)
        )
    )
    return {int(p): int(o) for p, o in rows.all()}


async def partition_count(conn: AsyncConnection, topic: str) -> int | None:
    """How many partitions of ``topic`` are registered here (``None``: none yet)."""
    n = (
        await conn.execute(
            select(func.count(func.distinct(co.c.partition))).where(co.c.topic == topic)
        )
    ).scalar_one()
    return int(n) or None
