"""The saga store: tables, migrations and repositories on SQLite and PostgreSQL.

``create_engine(url)`` makes the engine, ``upgrade(engine)`` migrates it, and
``SqlStore(engine)`` is the one implementation of the :class:`SagaStore` port for both
backends, and ``durability(engine)`` tells whether the database keeps every committed
transaction through a crash or power loss. Database errors come out as
:mod:`saga.errors` (``StoreUnavailable``, ``ConcurrencyConflict``, ...), never as
SQLAlchemy exceptions. The tables are in :mod:`saga.store.tables`.

Outside this package, only these names and ``saga.store.tables`` are imported; the
private modules (``saga.store._*``) are banned there by a lint rule.
"""

from saga.store import tables
from saga.store._audit import GENESIS, BreakReason, ChainBreak, record_hash, verify_chain
from saga.store._durability import Durability, durability
from saga.store._engine import DEFAULT_URL, create_engine, single_statement_engine
from saga.store._errors import classify, translate_errors
from saga.store._leases import (
    Claim,
    OffsetCommit,
    check_single_group,
    claim_partitions,
    commit_offsets,
    load_offsets,
    partition_count,
    register_partitions,
)
from saga.store._migrate import (
    alembic_config,
    current_revision,
    head_revision,
    lock_schema,
    upgrade,
)
from saga.store._protocol import Cursor, SagaStore, StoreTransaction
from saga.store._records import (
    AuditRecord,
    AuditWrite,
    JsonText,
    LockWrite,
    OutboxMessage,
    SagaRow,
    SagaStart,
    SagaWrite,
    StepExecutionRow,
    StepExecutionWrite,
    TimerKey,
    TimerRow,
    TimerWrite,
    as_utc,
    as_utc_or_none,
)
from saga.store._store import SqlStore, delete_inbox_ids
from saga.store._tx import SqlTransaction
from saga.store._tx.bulk import CHUNK, chunks
from saga.store._tx.messages import claim_inbox_ids, insert_outbox
from saga.store._tx.notify import NOTIFY_CHANNEL, lane_payload, notify_outbox, outbox_channel
from saga.store._tx.sagas import SAGA_COLUMNS, saga_row

__all__ = [
    "CHUNK",
    "DEFAULT_URL",
    "GENESIS",
    "NOTIFY_CHANNEL",
    "SAGA_COLUMNS",
    "AuditRecord",
    "AuditWrite",
    "BreakReason",
    "ChainBreak",
    "Claim",
    "Cursor",
    "Durability",
    "JsonText",
    "LockWrite",
    "OffsetCommit",
    "OutboxMessage",
    "SagaRow",
    "SagaStart",
    "SagaStore",
    "SagaWrite",
    "SqlStore",
    "SqlTransaction",
    "StepExecutionRow",
    "StepExecutionWrite",
    "StoreTransaction",
    "TimerKey",
    "TimerRow",
    "TimerWrite",
    "alembic_config",
    "as_utc",
    "as_utc_or_none",
    "check_single_group",
    "chunks",
    "claim_inbox_ids",
    "claim_partitions",
    "classify",
    "commit_offsets",
    "create_engine",
    "current_revision",
    "delete_inbox_ids",
    "durability",
    "head_revision",
    "insert_outbox",
    "lane_payload",
    "load_offsets",
    "lock_schema",
    "notify_outbox",
    "outbox_channel",
    "partition_count",
    "record_hash",
    "register_partitions",
    "saga_row",
    "single_statement_engine",
    "tables",
    "translate_errors",
    "upgrade",
    "verify_chain",
]
