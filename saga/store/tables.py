"""All tables of the saga store, as SQLAlchemy Core ``Table`` objects.

One module, so the whole data model can be read at once. Idempotency lives here
: the inbox primary key is the message id, outbox message ids are
unique, step executions and timers have deterministic natural keys.

Times are stored as timezone-aware UTC ``DateTime``; ids as 36-character strings so
the same schema works on SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects import postgresql

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# JSONB on PostgreSQL, JSON text on SQLite.
Json = JSON().with_variant(postgresql.JSONB(), "postgresql")
# BIGSERIAL on PostgreSQL; SQLite only autoincrements INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")
UtcDateTime = DateTime(timezone=True)

definitions = Table(
    "saga_definitions",
    metadata,
    Column("name", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("body", Json, nullable=False, comment="canonical JSON of the definition"),
    Column("registered_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("name", "version"),
)

sagas = Table(
    "sagas",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("saga_type", String(200), nullable=False),
    Column("saga_version", Integer, nullable=False),
    Column("status", String(32), nullable=False),
    Column("context", Json, nullable=False),
    Column("state", Json, nullable=False, comment="the engine's full SagaState"),
    Column("revision", Integer, nullable=False, comment="optimistic concurrency counter"),
    Column("idempotency_key", String(200), nullable=True, unique=True),
    Column("correlation_id", String(36), nullable=True),
    Column("deadline_at", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Index(None, "status", "updated_at"),
    Index(None, "saga_type", "status"),
    Index(None, "created_at"),
)

step_executions = Table(
    "saga_step_executions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("saga_id", String(36), nullable=False),
    Column("step", String(200), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("kind", String(16), nullable=False, comment="command or compensation"),
    Column("status", String(32), nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime, nullable=True),
    Column("error_code", String(200), nullable=True),
    Column("error_message", Text, nullable=True),
    UniqueConstraint("saga_id", "step", "attempt", "kind"),
)

outbox = Table(
    "saga_outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True, comment="monotonic publish order"),
    Column("message_id", String(36), nullable=False, unique=True),
    Column("topic", String(249), nullable=False),
    Column("key", LargeBinary, nullable=True),
    Column("headers", Json, nullable=False, comment="list of [name, value] string pairs"),
    Column("payload", LargeBinary, nullable=False),
    Column(
        "owner_topic",
        String(249),
        nullable=False,
        server_default="",
        comment="the consumed topic whose partition owner publishes this row",
    ),
    Column("shard", Integer, nullable=False, comment="that topic's partition"),
    Column("created_at", UtcDateTime, nullable=False),
    Column("published_at", UtcDateTime, nullable=True),
    # The relay of (owner_topic, shard) reads its unpublished rows in id order.
    Index(
        "ix_saga_outbox_unpublished",
        "owner_topic",
        "shard",
        "id",
        postgresql_where=text("published_at IS NULL"),
        sqlite_where=text("published_at IS NULL"),
    ),
    Index(None, "published_at"),
)

# Outbox rows that Kafka refused for good (too large, no such topic, ...), moved out of
# the outbox after a bounded number of attempts so that their lane goes on. They keep
# their id and everything needed to publish them again once the cause is fixed.
outbox_quarantine = Table(
    "saga_outbox_quarantine",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False, comment="its outbox id"),
    Column("message_id", String(36), nullable=False, unique=True),
    Column("topic", String(249), nullable=False),
    Column("key", LargeBinary, nullable=True),
    Column("headers", Json, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("owner_topic", String(249), nullable=False),
    Column("shard", Integer, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("quarantined_at", UtcDateTime, nullable=False),
    Column("attempts", Integer, nullable=False, comment="publish attempts Kafka refused"),
    Column("reason", Text, nullable=False, comment="Kafka's last refusal"),
)

# Per-key semantic locks (a definition's ``lock``): the holder of each key, and the
# sagas waiting for it in arrival order. Granting a key sets a ``lock_granted`` timer
# for the waiter, so the saga is started by the coordinator that owns it.
locks = Table(
    "saga_locks",
    metadata,
    Column("lock_key", String(300), primary_key=True, comment="<saga type>:<key>"),
    Column("holder", String(36), nullable=True, comment="the saga that holds the key"),
    Column("granted_at", UtcDateTime, nullable=True),
)

lock_waiters = Table(
    "saga_lock_waiters",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True, comment="arrival order"),
    Column("lock_key", String(300), nullable=False),
    Column("saga_id", String(36), nullable=False, unique=True),
    Column("queued_at", UtcDateTime, nullable=False),
    Index(None, "lock_key", "id"),
)

inbox = Table(
    "saga_inbox",
    metadata,
    Column("message_id", String(36), primary_key=True),
    Column("received_at", UtcDateTime, nullable=False),
    Index(None, "received_at"),  # pruning deletes the oldest ids
)

# One row per consumed topic partition: the next offset to read and its owner's epoch.
# A member that is assigned the partition claims it by raising the epoch; every batch
# stores its offsets only where the epoch is still its own (and never moves them back),
# so a member that lost the partition can never commit for it again.
consumer_offsets = Table(
    "saga_consumer_offsets",
    metadata,
    Column("group_id", String(200), nullable=False),
    Column("topic", String(249), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("next_offset", BigInteger, nullable=True, comment="the next offset to read"),
    Column("epoch", BigInteger, nullable=False, server_default="0", comment="owner generation"),
    Column("owner", String(200), nullable=True, comment="the member that claimed the partition"),
    Column("claimed_at", UtcDateTime, nullable=True),
    PrimaryKeyConstraint("group_id", "topic", "partition"),
)

timers = Table(
    "saga_timers",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("saga_id", String(36), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("step", String(200), nullable=False, comment="'' for saga-level timers"),
    Column("attempt", Integer, nullable=False),
    Column("due_at", UtcDateTime, nullable=False),
    UniqueConstraint("saga_id", "kind", "step", "attempt"),
    Index(None, "due_at"),
)

audit_log = Table(
    "saga_audit_log",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("saga_id", String(36), nullable=False),
    Column("seq", Integer, nullable=False, comment="1, 2, ... per saga"),
    Column("recorded_at", UtcDateTime, nullable=False),
    Column("kind", String(64), nullable=False),
    Column("step", String(200), nullable=True),
    Column("attempt", Integer, nullable=True),
    Column("actor", String(200), nullable=True),
    Column("detail", Json, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    UniqueConstraint("saga_id", "seq"),
    Index(None, "recorded_at"),
)

# Dead letters an operator has dealt with. A record cannot be deleted from the DLQ
# topic, so replaying or discarding one is remembered here (who, when, why), and the
# listings hide the handled ones.
dead_letters_handled = Table(
    "saga_dead_letters_handled",
    metadata,
    Column("topic", String(249), nullable=False, comment="the DLQ topic"),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("action", String(16), nullable=False, comment="replayed or discarded"),
    Column("actor", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    Column("original_topic", String(249), nullable=True, comment="where it was read from"),
    Column("saga_id", String(36), nullable=True, comment="the saga its envelope names"),
    Column("handled_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("topic", "partition", "offset"),
    Index(None, "handled_at"),
)

# Circuit breaker states as each coordinator last reported them. A breaker lives in
# the memory of the coordinator process that feeds it; each coordinator writes its
# breakers here when one changes state and every few seconds besides, so readers of
# the database (the console) see them. A coordinator that leaves deletes its rows;
# rows of one that died are not refreshed by ``stale_after`` (three intervals on).
breaker_reports = Table(
    "saga_breaker_reports",
    metadata,
    Column("member", String(200), nullable=False, comment="host:pid:id of the coordinator"),
    Column("participant", String(200), nullable=False),
    Column("state", String(16), nullable=False, comment="closed, open or half_open"),
    Column("calls", Integer, nullable=False, comment="outcomes in the window"),
    Column("failures", Integer, nullable=False, comment="failures and timeouts among them"),
    Column("opened_at", UtcDateTime, nullable=True),
    Column("reported_at", UtcDateTime, nullable=False),
    Column("stale_after", UtcDateTime, nullable=False, comment="not refreshed by then: stale"),
    PrimaryKeyConstraint("member", "participant"),
)
