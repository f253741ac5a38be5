"""saga-coordinator: orchestrated sagas over Kafka with an exactly-once outbox.

The names most users need are here; everything else lives in the subpackages
(``saga.definition``, ``saga.engine``, ``saga.store``, ``saga.coordinator``,
``saga.relay``, ``saga.participant``, ``saga.api``).
"""

from saga import errors
from saga.coordinator import CoordinatorRuntime, RuntimeConfig, start_saga
from saga.definition import (
    RetryPolicy,
    SagaBuilder,
    SagaDefinition,
    compensatable,
    load_file,
    pivot,
    retriable,
    wait,
)
from saga.participant import Participant, ParticipantConfig
from saga.topics import Topics

__all__ = [
    "CoordinatorRuntime",
    "Participant",
    "ParticipantConfig",
    "RetryPolicy",
    "RuntimeConfig",
    "SagaBuilder",
    "SagaDefinition",
    "Topics",
    "compensatable",
    "errors",
    "load_file",
    "pivot",
    "retriable",
    "start_saga",
    "wait",
]
