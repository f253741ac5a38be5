"""What a person or a program can do to sagas: one function per verb, shared by API and CLI.

The HTTP handlers (``saga.api``) and the ``saga`` CLI verbs call the same
:class:`SagaOperations` methods, so there is one way of doing each thing.

Theory of operation
-------------------
Every state change of a saga is made by the coordinator that owns its Kafka partition.
Starting a saga is the one exception: the saga does not exist yet, so
:meth:`SagaOperations.start` inserts it with its first commands in one transaction
(:func:`saga.coordinator.start_saga`). Signals, abort and the operator verbs are
*delivered*: the saga and its definition are loaded, the event is dry-run through
:func:`saga.engine.transition` to refuse what the engine would refuse (``rejected`` ->
:class:`~saga.errors.TransitionError`, ``dead_letter`` ->
:class:`~saga.errors.InvalidCommand`), and then ONE transaction writes the message
(to the replies topic, key = saga id) into the outbox together with an
``operator.requested`` audit record naming the caller and the reason. The coordinator
applies the event later and writes the engine's own audit records; the caller gets the
message id to follow it in the timeline.

Layout: ``_service`` (:class:`SagaOperations`), ``_views`` (the answers), ``_verbs``
(what can be asked, and the event each operator verb delivers), ``_cursor`` (the page
cursor codec). The clock is :mod:`saga.lifecycle`'s, shared by every component.
"""

from saga.lifecycle import Clock, utc_now
from saga.operations._cursor import decode_cursor, encode_cursor
from saga.operations._service import SagaOperations
from saga.operations._verbs import REQUESTED, STEP_VERBS, Verb, operator_event
from saga.operations._views import (
    Accepted,
    AuditRecordView,
    DefinitionDetail,
    DefinitionSummary,
    LockView,
    SagaDetail,
    SagaPage,
    SagaSummary,
    StartResult,
    StepExecutionView,
    StepView,
    open_error,
)

__all__ = [
    "REQUESTED",
    "STEP_VERBS",
    "Accepted",
    "AuditRecordView",
    "Clock",
    "DefinitionDetail",
    "DefinitionSummary",
    "LockView",
    "SagaDetail",
    "SagaOperations",
    "SagaPage",
    "SagaSummary",
    "StartResult",
    "StepExecutionView",
    "StepView",
    "Verb",
    "decode_cursor",
    "encode_cursor",
    "open_error",
    "operator_event",
    "utc_now",
]
