"""The coordinator: consumes replies, applies the engine, persists decisions.

See ``_coordinator`` for the theory of operation.
"""

from saga.coordinator._breaker import BreakerPolicy, BreakerState, CircuitBreakers
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
from saga.coordinator._start import Started, replies_partitions, start_saga
from saga.coordinator._writes import Writes, decision_writes
from saga.kafka import shard_of

__all__ = [
    "CONTROL_PREFIX",
    "BatchResult",
    "BreakerPolicy",
    "BreakerState",
    "CircuitBreakers",
    "Coordinator",
    "CoordinatorConfig",
    "CoordinatorRuntime",
    "DefinitionCache",
    "RuntimeConfig",
    "Started",
    "Writes",
    "control_message",
    "decision_writes",
    "decode_event",
    "register_replies_partitions",
    "replies_partitions",
    "shard_of",
    "start_saga",
]
