"""The coordinator: consumes replies, applies the engine, persists decisions.

See ``_coordinator`` for the theory of operation.
"""

from saga.coordinator._breaker import BreakerPolicy, BreakerReport, BreakerState, CircuitBreakers
from saga.coordinator._breaker_reports import (
    REPORT_INTERVAL,
    BreakerReporter,
    ReportedBreaker,
    breaker_reports,
)
from saga.coordinator._coordinator import (
    CONTROL_PREFIX,
    BatchResult,
    Coordinator,
    CoordinatorConfig,
    control_message,
    decode_event,
    register_replies_partitions,
)
from saga.coordinator._definitions import DefinitionCache
from saga.coordinator._runtime import CoordinatorRuntime, RuntimeConfig
from saga.coordinator._start import (
    PreparedStart,
    Started,
    prepare_start,
    replies_partitions,
    resolve_definition,
    start_saga,
)
from saga.coordinator._starter import REQUESTED_KIND, StartBatch, Starter, trigger_topics
from saga.coordinator._writes import Writes, decision_writes
from saga.kafka import shard_of

__all__ = [
    "CONTROL_PREFIX",
    "REPORT_INTERVAL",
    "REQUESTED_KIND",
    "BatchResult",
    "BreakerPolicy",
    "BreakerReport",
    "BreakerReporter",
    "BreakerState",
    "CircuitBreakers",
    "Coordinator",
    "CoordinatorConfig",
    "CoordinatorRuntime",
    "DefinitionCache",
    "PreparedStart",
    "ReportedBreaker",
    "RuntimeConfig",
    "StartBatch",
    "Started",
    "Starter",
    "Writes",
    "breaker_reports",
    "control_message",
    "decision_writes",
    "decode_event",
    "prepare_start",
    "register_replies_partitions",
    "replies_partitions",
    "resolve_definition",
    "shard_of",
    "start_saga",
    "trigger_topics",
]
