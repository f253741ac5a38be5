"""What a participant is configured with: its mode and its options.

The two modes differ only in how a batch of commands is made durable (see
:mod:`saga.participant._transactional` and :mod:`saga.participant._simple`); the
options here are the same for every replica of a service, so replicas need no
configuration of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum

from saga.errors import ConfigError
from saga.inbox import DEFAULT_PRUNE_INTERVAL, DEFAULT_PRUNE_LIMIT, check_prune_settings
from saga.relay import RelayConfig
from saga.topics import Topics


class Mode(StrEnum):
    """How a participant processes commands."""

    TRANSACTIONAL = "transactional"
    """Exactly once: handler writes, inbox, reply (outbox) and offsets in one transaction."""
    SIMPLE = "simple"
    """At least once: inbox dedupe by message id, replies by an idempotent producer."""


@dataclass(frozen=True, kw_only=True)
class ParticipantConfig:
    """Options of a participant.

    Nothing here is per replica: run any number of replicas of a service with the same
    options, and any number of participants (in one process or in several) on one
    database. Each replica consumes the partitions its group assigns it and publishes
    the replies of exactly those partitions, under transactional ids derived from the
    commands topic (see :class:`saga.relay.RelayPool`). ``services.run_services`` is
    the one-process-many-participants layout: the four example services on one
    database, each with its own relays.
    """

    name: str
    """Participant name: it consumes ``<prefix><name>.commands``."""
    bootstrap_servers: str
    """Kafka bootstrap servers."""
    topics: Topics = field(default_factory=Topics)
    """Topic names (prefix) of the deployment."""
    mode: Mode = Mode.TRANSACTIONAL
    """Transactional (exactly once, needs an engine) or simple (at least once)."""
    group_id: str | None = None
    """Consumer group; default ``<prefix><name>.participant``. Every replica of the
    service uses the same one (the default needs no configuration)."""
    max_batch: int = 100
    """Most records handled per batch (one database transaction in transactional mode)."""
    poll_timeout_ms: int = 200
    """How long one poll waits for records (also bounds how fast ``stop()`` is seen)."""
    dedupe_cache_size: int = 10_000
    """Simple mode: message ids remembered in memory."""
    create_tables: bool = True
    """With an engine: create the inbox/outbox/offsets tables on open if missing."""
    relay: RelayConfig = field(default_factory=RelayConfig)
    """Transactional mode: options of the relays that publish the replies (one per owned
    partition; their lanes and transactional ids are derived, never configured)."""
    retry_backoff_ms: int = 500
    """Pause before a batch is retried after the database or Kafka failed."""
    lag_commit_interval_ms: int = 1_000
    """Transactional mode: commit the consumer group's Kafka offsets (used only to
    monitor lag) at most this often, not after every batch: each commit is a request
    to the broker. Simple mode commits after every batch (there, it is what counts)."""
    inbox_retention: timedelta | None = None
    """With an engine: how long the ids of handled commands are kept in the inbox.

    ``None`` (the default): as long as the commands topic keeps its records, its
    ``retention.ms`` read from the broker when the participant opens (7 days if it
    cannot be read; never pruned if it is ``-1``): a duplicate command can only arrive
    while a copy of it can still be read. A shorter value is accepted with a warning:
    duplicates older than that are handled again. See :mod:`saga.inbox`."""
    inbox_prune_interval: timedelta = DEFAULT_PRUNE_INTERVAL
    """With an engine: how often old inbox ids are deleted."""
    inbox_prune_limit: int = DEFAULT_PRUNE_LIMIT
    """Most inbox ids deleted in one transaction (rounds go on until one deletes fewer)."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("a participant needs a name")
        if self.max_batch < 1 or self.poll_timeout_ms < 1 or self.dedupe_cache_size < 0:
            raise ConfigError("max_batch and poll_timeout_ms must be >= 1")
        check_prune_settings(
            self.inbox_retention, self.inbox_prune_interval, self.inbox_prune_limit
        )

    @property
    def commands_topic(self) -> str:
        """The topic this participant consumes."""
        return self.topics.commands(self.name)

    @property
    def effective_group_id(self) -> str:
        """The consumer group."""
        return self.group_id or self.topics.participant_group(self.name)
