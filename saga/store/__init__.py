"""The saga store: tables, migrations and repositories on SQLite and PostgreSQL.

``create_engine(url)`` makes the engine, ``upgrade(engine)`` migrates it, and
``SqlStore(engine)`` is the one implementation of the :class:`SagaStore` port for both
backends, and ``durability(engine)`` tells whether the database keeps every committed
transaction through a crash or power loss. Database errors come out as
:mod:`saga.errors` (``StoreUnavailable``, ``ConcurrencyConflict``, ...), never as
SQLAlchemy exceptions.
"""

from saga.store._audit import GENESIS, BreakReason, ChainBreak, verify_chain
from saga.store._durability import Durability, durability
from saga.store._engine import DEFAULT_URL, create_engine
from saga.store._errors import translate_errors
from saga.store._leases import (
    Claim,
    check_single_group,
    claim_partitions,
    commit_offsets,
    load_offsets,
    partition_count,
    register_partitions,
)
from saga.store._migrate import current_revision, head_revision, lock_schema, upgrade
from saga.store._protocol import Cursor, SagaStore, StoreTransaction
from saga.store._records import (
    AuditRecord,
    AuditWrite,
    JsonText,
    LockWrite,
    OutboxMessage,
    SagaRow,
    SagaWrite,
    StepExecutionRow,
    StepExecutionWrite,
    TimerKey,
    TimerRow,
    TimerWrite,
)
from saga.store._store import SqlStore
from saga.store._tx import NOTIFY_CHANNEL, SqlTransaction, lane_payload, notify_outbox

__all__ = [
    "DEFAULT_URL",
    "GENESIS",
    "NOTIFY_CHANNEL",
    "AuditRecord",
    "AuditWrite",
    "BreakReason",
    "ChainBreak",
    "Claim",
    "Cursor",
    "Durability",
    "JsonText",
    "LockWrite",
    "OutboxMessage",
    "SagaRow",
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
    "check_single_group",
    "claim_partitions",
    "commit_offsets",
    "create_engine",
    "current_revision",
    "durability",
    "head_revision",
    "lane_payload",
    "load_offsets",
    "lock_schema",
    "notify_outbox",
    "partition_count",
    "register_partitions",
    "translate_errors",
    "upgrade",
    "verify_chain",
]
