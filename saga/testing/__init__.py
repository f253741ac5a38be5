"""Test helpers shipped with the library.

* :class:`SagaTest` runs a saga definition in memory against plain Python handlers on
  a fake clock, with scripted failures, timeouts, duplicate and late replies and
  operator verbs, and returns a :class:`SagaResult` to assert on.
* :func:`explore` enumerates a definition's failure space within a bound and reports
  every reachable outcome with its shortest path and every broken property.
* :class:`FaultInjector` injects faults into a real participant's replies.
"""

from saga.participant import NO_REPLY, ParticipantError, PermanentError, RetriableError
from saga.testing._explore import PROPERTIES, Exploration, Outcome, Violation, explore
from saga.testing._faults import INJECTED_HEADER, FaultInjector, ReplyFaults
from saga.testing._kit import (
    T0,
    Call,
    OperatorRejected,
    SagaResult,
    SagaTest,
    SagaTestError,
    SentCommand,
    TimelineEntry,
)

__all__ = [
    "INJECTED_HEADER",
    "NO_REPLY",
    "PROPERTIES",
    "T0",
    "Call",
    "Exploration",
    "FaultInjector",
    "OperatorRejected",
    "Outcome",
    "ParticipantError",
    "PermanentError",
    "ReplyFaults",
    "RetriableError",
    "SagaResult",
    "SagaTest",
    "SagaTestError",
    "SentCommand",
    "TimelineEntry",
    "Violation",
    "explore",
]
