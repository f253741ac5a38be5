"""Configuration of an outbox relay: a frozen value object validated at construction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from saga.errors import ConfigError

RelayMode = Literal["exactly_once", "at_least_once"]
"""How the relay publishes: in Kafka transactions with a checkpoint, or plainly."""

ProducerPer = Literal["lane", "process"]
"""Whose Kafka producer a pool's relays publish with (see ``RelayConfig.producer_per``)."""


def relay_id_for(owner_topic: str, shard: int) -> str:
    """The transactional id of the relay of one outbox lane (see ``RelayConfig``)."""
    return f"{owner_topic or 'saga-outbox'}.relay.{shard}"


@dataclass(frozen=True, kw_only=True)
class RelayConfig:
    """How one relay shard publishes the outbox."""

    owner_topic: str = ""
    """Together with ``shard``, the outbox *lane* this relay publishes: the rows whose
    owner (a consumed topic partition) is ``owner_topic[shard]``."""
    shard: int = 0
    """The partition of ``owner_topic`` whose rows the relay publishes."""
    relay_id: str = ""
    """Transactional id of this relay and key of its checkpoint record.

    Empty (the default): derived from the lane, ``<owner_topic>.relay.<shard>``
    (:func:`relay_id_for`), so it includes the deployment's topic prefix and every
    process that owns the partition uses the same id. A relay that starts with the same
    id fences the older one: that is how a partition's new owner stops the old one.
    """
    batch_size: int = 500
    """Most rows published in one Kafka transaction (and marked in one statement)."""
    linger_ms: int = 10
    """Least time from the end of one transaction of rows to the start of the next (after a
    quiet spell the rows go out at once).

    Under a steady stream of writes, rows written meanwhile share the next transaction:
    at most one Kafka transaction per ``linger_ms``, whose broker cost (partition
    registration, commit markers on every partition written) dominates at moderate
    load. An idle relay publishes the first rows without waiting."""
    mark_after_ms: int = 500
    """Longest time a row committed in Kafka waits to be marked published in the database
    while the relay runs (exactly-once mode; it is marked sooner with the read of the
    next batch once this has passed, when ``batch_size`` rows wait, and when the relay
    closes). Until then the relay's reads leave the row out and every checkpoint names
    it, so a crash publishes nothing twice. ``0``: mark after every batch (a database
    write per batch). At-least-once mode always marks after every batch: without
    checkpoints the mark is all that says a row went out."""
    poll_interval_ms: int = 50
    """How often to look for new rows on a database that cannot notify (SQLite)."""
    fallback_poll_ms: int = 1_000
    """On PostgreSQL, look for rows this often even without a notification."""
    prune_after: timedelta = timedelta(days=1)
    """Published rows older than this are deleted."""
    prune_every: timedelta = timedelta(minutes=1)
    """How often to prune published rows."""
    prune_batch_size: int = 1_000
    """Most rows deleted in one statement while pruning."""
    mode: RelayMode = "exactly_once"
    """``exactly_once`` (transactions and checkpoints) or ``at_least_once`` (a plain
    idempotent producer: a crash between the send and the database mark republishes the
    batch; for benchmarks to compare)."""
    producer_per: ProducerPer = "process"
    """In a :class:`~saga.relay.RelayPool`, exactly-once: ``lane`` gives every relay a
    transactional producer of its own, under the lane's id, so a new owner fences the old
    one by id; ``process`` publishes the batches of every lane of the process in ONE
    Kafka transaction, fenced by the consumer group's generation (and, for a prompt
    abort of a dead owner's transaction, by the lane ids; see ``saga.relay._shared``).
    ``process`` cuts the Kafka transactions per saga by about the number of lanes a
    process owns. The two kinds may run side by side in one deployment. ``process`` is
    the default: flat out it took a quarter off the CPU per saga of the bench, and about
    4% at a third of that rate (README, tenth pass under "Benchmarks").
    """
    transaction_timeout_ms: int = 60_000
    """Kafka aborts a transaction of this relay that stays open longer than this."""
    checkpoint_replication_factor: int = 1
    """Replication factor used if the relay has to create the checkpoint topic."""
    connect_timeout_ms: int = 30_000
    """Give up connecting to Kafka (and back off) after this long."""
    publish_timeout_ms: int = 30_000
    """Give up a batch whose sends and commit have not finished after this long.

    A broker that died or froze mid-transaction can leave the client waiting without
    end. The relay drops its producer and retries the batch; the next producer fences
    the old one and finishes or aborts its transaction, and the checkpoint says which
    rows did get committed, so nothing is published twice."""
    stalled_after_ms: int = 180_000
    """A batch still running after this long is logged as stalled (once), with the
    chain of awaits it waits in. Every step of a batch has a time limit of its own well
    below it (connecting, the checkpoint read, the publish), so such a warning points
    at a bug: report it with the log line."""
    backoff_initial_ms: int = 100
    """First delay before retrying after Kafka or the database failed."""
    backoff_max_ms: int = 5_000
    """Longest delay between retries (the delay doubles up to this)."""
    quarantine_after_refusals: int = 3
    """Kafka refusing the same row this many times in a row for a reason of the record's
    own (too large, invalid topic) moves it to the quarantine table
    (``saga_outbox_quarantine``), so that the rows behind it are published. ``saga
    outbox quarantined`` lists such rows and ``saga outbox requeue`` sends them again."""
    quarantine_missing_topic_after_ms: int = 60_000
    """A row for a topic that does not exist is quarantined only after it has been
    refused for this long as well: the topic may still be on its way (created by a
    service that is starting, or by a broker that creates topics on first use)."""
    crash_in_transaction_after: int | None = None
    """Fault injection for tests: SIGKILL the process inside the N-th Kafka transaction
    of its relays (all of them, counted together), after the records were sent and
    before the commit. Never set this in production."""
    crash_after_commit: bool = False
    """Fault injection for tests: SIGKILL the process right after a Kafka commit,
    before the rows are marked published. Never set this in production."""

    @property
    def effective_relay_id(self) -> str:
        """``relay_id``, or the one derived from the lane."""
        return self.relay_id or relay_id_for(self.owner_topic, self.shard)

    def __post_init__(self) -> None:
        if self.mode not in ("exactly_once", "at_least_once"):
            raise ConfigError(f"mode must be exactly_once or at_least_once, not {self.mode!r}")
        if self.producer_per not in ("lane", "process"):
            raise ConfigError(f"producer_per must be lane or process, not {self.producer_per!r}")
        positive = {
            "batch_size": self.batch_size,
            "poll_interval_ms": self.poll_interval_ms,
            "fallback_poll_ms": self.fallback_poll_ms,
            "prune_batch_size": self.prune_batch_size,
            "transaction_timeout_ms": self.transaction_timeout_ms,
            "checkpoint_replication_factor": self.checkpoint_replication_factor,
            "connect_timeout_ms": self.connect_timeout_ms,
            "publish_timeout_ms": self.publish_timeout_ms,
            "stalled_after_ms": self.stalled_after_ms,
            "backoff_initial_ms": self.backoff_initial_ms,
            "quarantine_after_refusals": self.quarantine_after_refusals,
        }
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, not {value}")
        if self.shard < 0:
            raise ConfigError(f"shard must be >= 0, not {self.shard}")
        if self.quarantine_missing_topic_after_ms < 0:
            raise ConfigError(
                "quarantine_missing_topic_after_ms must be >= 0,"
                f" not {self.quarantine_missing_topic_after_ms}"
            )
        if self.linger_ms < 0:
            raise ConfigError(f"linger_ms must be >= 0, not {self.linger_ms}")
        if self.mark_after_ms < 0:
            raise ConfigError(f"mark_after_ms must be >= 0, not {self.mark_after_ms}")
        if self.backoff_max_ms < self.backoff_initial_ms:
            raise ConfigError("backoff_max_ms must be >= backoff_initial_ms")
        if self.prune_after < timedelta(0) or self.prune_every <= timedelta(0):
            raise ConfigError("prune_after must be >= 0 and prune_every > 0")
