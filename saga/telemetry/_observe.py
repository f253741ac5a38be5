"""The coordinator seam: spans, counters and trace headers of applied decisions.

Theory of operation
-------------------
Both places that apply engine decisions (the coordinator's batch, ``start_saga``) open a
:class:`BatchObservation`, hand it every applied decision together with the outbox rows
it produced, and call :meth:`BatchObservation.committed` after the database commit.

* At decision time (before the commit) the observation rewrites the outbox rows'
  headers: every command gets a ``traceparent`` naming its ``send <type>`` span, and
  lifecycle events name the saga's root span. The headers are stored in the outbox and
  published by the relay with the message.
* After the commit it emits what the decisions did, so a rolled-back (and replayed)
  batch emits nothing twice: the root span ``saga <type>`` when a saga starts, a
  ``send <type>`` producer span per command, a ``step <name>`` / ``compensate <name>``
  span per attempt that ended (started when its command was sent — the command id is a
  UUIDv7 carrying that time — ended now, with the outcome as status), and the counters
  and histograms.

Span ids are derived (see :mod:`saga.telemetry._ids`), so the tree is::

    saga trip                              root, emitted by start_saga
    ├── step book_hotel                    attempt 1, emitted when its reply is applied
    │   └── send hotel.book                producer, emitted when the command is decided
    │       └── process hotel.book         consumer span of the participant
    └── compensate book_hotel
        └── send hotel.cancel
            └── process hotel.cancel

A parent is emitted after its children (an attempt ends after its command was sent);
an attempt that never ends (the saga was aborted meanwhile) leaves its send span with
an unseen parent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from saga.engine import CompensationStatus, Decision, SagaState, SagaStatus, StepStatus
from saga.store import OutboxMessage
from saga.telemetry._attributes import messaging_attributes
from saga.telemetry._ids import (
    attempt_context,
    attempt_span_id,
    forced_ids,
    remote_context,
    root_context,
    root_span_id,
    saga_trace_id,
    send_span_id,
)

if TYPE_CHECKING:
    from saga.telemetry._telemetry import Telemetry

TRACE_HEADERS = ("traceparent", "tracestate")
_PROPAGATOR = TraceContextTextMapPropagator()

Kind = Literal["command", "compensation"]


@dataclass(frozen=True)
class AttemptEnd:
    """A step attempt (or compensation attempt) that a decision ended."""

    saga_id: UUID
    saga_type: str
    step: str
    kind: Kind
    attempt: int
    message_id: UUID
    outcome: str
    error: str | None
    ok: bool | None
    """``True`` succeeded, ``False`` failed, ``None`` neither (skipped, cancelled)."""


def headers_of(context: trace.SpanContext) -> list[tuple[str, str]]:
    """``traceparent`` (and ``tracestate``) text headers naming ``context``."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(trace.NonRecordingSpan(context)))
    return sorted(carrier.items())


def passthrough_headers(record: Any) -> list[tuple[str, str]]:
    """The W3C trace headers of a consumed record, as text (when tracing is off)."""
    if record is None:
        return []
    return [
        (k, v.decode("ascii", "replace"))
        for k, v in (getattr(record, "headers", None) or ())
        if k in TRACE_HEADERS
    ]


def _ns(ts: datetime) -> int:
    return int(ts.timestamp() * 1_000_000_000)


def _uuid7_ns(message_id: UUID, fallback: datetime) -> int:
    """When a command was decided: the Unix milliseconds leading its UUIDv7 id."""
    if message_id.version == 7:
        return (message_id.int >> 80) * 1_000_000
    return _ns(fallback)


def ended_attempts(before: SagaState | None, after: SagaState) -> Iterator[AttemptEnd]:
    """The attempts that were in flight in ``before`` and are not any more in ``after``."""
    if before is None:
        return
    for name, old in before.steps.items():
        new = after.steps.get(name)
        if new is None:
            continue
        if (
            old.status is StepStatus.RUNNING
            and not old.deferred
            and old.message_id is not None
            and (new.status is not StepStatus.RUNNING or new.message_id != old.message_id)
        ):
            same = new.attempt == old.attempt
            ok = _FORWARD_OK.get(new.status, False) if same else False
            yield AttemptEnd(
                saga_id=after.saga_id,
                saga_type=after.saga_type,
                step=name,
                kind="command",
                attempt=old.attempt,
                message_id=old.message_id,
                outcome=str(new.status) if same else "retried",
                error=_error(new) if ok is False else None,
                ok=ok,
            )
        if (
            old.compensation is CompensationStatus.RUNNING
            and not old.compensation_deferred
            and old.compensation_message_id is not None
            and (
                new.compensation is not CompensationStatus.RUNNING
                or new.compensation_message_id != old.compensation_message_id
            )
        ):
            same = new.compensation_attempt == old.compensation_attempt
            cok = _COMPENSATION_OK.get(new.compensation, False) if same else False
            yield AttemptEnd(
                saga_id=after.saga_id,
                saga_type=after.saga_type,
                step=name,
                kind="compensation",
                attempt=old.compensation_attempt,
                message_id=old.compensation_message_id,
                outcome=str(new.compensation) if same else "retried",
                error=_error(new) if cok is False else None,
                ok=cok,
            )


def _error(step: Any) -> str | None:
    err = step.last_error
    if err is None:
        return None
    return f"{err.code}: {err.message}" if err.message else str(err.code)


_FORWARD_OK: Mapping[StepStatus, bool | None] = {
    StepStatus.SUCCEEDED: True,
    StepStatus.SKIPPED: None,
    StepStatus.CANCELLED: None,
}
_COMPENSATION_OK: Mapping[CompensationStatus, bool | None] = {
    CompensationStatus.COMPENSATED: True,
    CompensationStatus.SKIPPED: None,
}
_SAGA_OUTCOMES: Mapping[SagaStatus, str] = {
    SagaStatus.COMPLETED: "completed",
    SagaStatus.COMPENSATED: "compensated",
    SagaStatus.STUCK: "stuck",
    SagaStatus.ABORTED: "aborted",
}
_FINAL_FORWARD = frozenset({StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.TIMED_OUT})


class BatchObservation:
    """Telemetry of one database transaction's decisions (see the module docstring)."""

    def __init__(self, telemetry: Telemetry, now: datetime) -> None:
        self._telemetry = telemetry
        self._now = now
        self._pending: list[Callable[[], None]] = []

    def decision(
        self,
        decision: Decision,
        outbox: Sequence[OutboxMessage],
        *,
        before: SagaState | None,
        record: Any = None,
    ) -> list[OutboxMessage]:
        """Note an applied decision; returns its outbox rows with trace headers.

        Args:
            decision: The applied decision.
            outbox: The outbox rows written for it (commands and lifecycle events).
            before: The state the decision started from (``None``: the saga starts).
            record: The Kafka record that caused it, if any (its trace headers are
                passed through when tracing is off).
        """
        after = decision.state
        if after is None or decision.outcome != "applied":
            return list(outbox)
        telemetry = self._telemetry
        commands = {str(out.envelope.message_id): out for out in decision.commands}
        rows: list[OutboxMessage] = []
        for row in outbox:
            if not telemetry.tracing_enabled:
                rows.append(replace(row, headers=passthrough_headers(record)))
            elif row.message_id in commands:
                msg_id = commands[row.message_id].envelope.message_id
                ctx = remote_context(saga_trace_id(after.saga_id), send_span_id(msg_id))
                rows.append(replace(row, headers=headers_of(ctx)))
            else:  # a lifecycle event: it belongs to the saga as a whole
                rows.append(replace(row, headers=headers_of(root_context(after.saga_id))))
        self._pending.append(lambda: self._emit(decision, after, before, rows, commands))
        return rows

    def committed(self, *, dead_letters: int = 0) -> None:
        """The transaction committed: emit the spans and metrics of its decisions."""
        pending, self._pending = self._pending, []
        for emit in pending:
            emit()
        if dead_letters:
            self._telemetry.instruments.dead_letters.add(dead_letters, {"source": "coordinator"})

    # -- emitting -------------------------------------------------------------------------

    def _emit(
        self,
        decision: Decision,
        after: SagaState,
        before: SagaState | None,
        rows: Sequence[OutboxMessage],
        commands: Mapping[str, Any],
    ) -> None:
        telemetry = self._telemetry
        tracer = telemetry.tracer
        inst = telemetry.instruments
        kind = {"saga_type": after.saga_type}
        now_ns = _ns(self._now)
        if before is None:
            inst.sagas_started.add(1, kind)
            if telemetry.tracing_enabled:
                with forced_ids(
                    trace_id=saga_trace_id(after.saga_id), span_id=root_span_id(after.saga_id)
                ):
                    root = tracer.start_span(
                        f"saga {after.saga_type}",
                        context=trace.set_span_in_context(trace.INVALID_SPAN),
                        kind=SpanKind.INTERNAL,
                        start_time=_ns(after.created_at),
                        attributes=_saga_attributes(after),
                    )
                root.end(end_time=max(now_ns, _ns(after.created_at)))
        if before is None or before.status != after.status:
            outcome = _SAGA_OUTCOMES.get(after.status)
            if outcome is not None:
                inst.saga_outcomes[outcome].add(1, kind)
        for end in ended_attempts(before, after):
            start_ns = _uuid7_ns(end.message_id, self._now)
            attrs = {**kind, "step": end.step, "kind": end.kind, "outcome": end.outcome}
            inst.step_duration.record(max(0, now_ns - start_ns) / 1e9, attrs)
            if telemetry.tracing_enabled:
                self._attempt_span(end, start_ns, now_ns)
        if before is not None:
            for name, new in after.steps.items():
                old = before.steps.get(name)
                if new.status in _FINAL_FORWARD and (old is None or old.status != new.status):
                    inst.step_attempts.record(
                        new.attempt, {**kind, "step": name, "outcome": str(new.status)}
                    )
        if telemetry.tracing_enabled:
            by_id = {row.message_id: row for row in rows}
            for mid, out in commands.items():
                row = by_id.get(mid)
                env = out.envelope
                parent = attempt_context(env.saga_id, env.message_id)
                with forced_ids(span_id=send_span_id(env.message_id)):
                    span = tracer.start_span(
                        f"send {env.type}",
                        context=trace.set_span_in_context(trace.NonRecordingSpan(parent)),
                        kind=SpanKind.PRODUCER,
                        start_time=now_ns,
                        attributes=messaging_attributes(
                            env,
                            destination=row.topic if row is not None else out.topic,
                            operation="send",
                        ),
                    )
                span.end(end_time=now_ns)

    def _attempt_span(self, end: AttemptEnd, start_ns: int, end_ns: int) -> None:
        verb = "step" if end.kind == "command" else "compensate"
        with forced_ids(span_id=attempt_span_id(end.message_id)):
            span = self._telemetry.tracer.start_span(
                f"{verb} {end.step}",
                context=trace.set_span_in_context(
                    trace.NonRecordingSpan(root_context(end.saga_id))
                ),
                kind=SpanKind.INTERNAL,
                start_time=start_ns,
                attributes={
                    "saga.id": str(end.saga_id),
                    "saga.type": end.saga_type,
                    "saga.step": end.step,
                    "saga.attempt": end.attempt,
                    "saga.step.kind": end.kind,
                    "saga.step.outcome": end.outcome,
                    "messaging.message.id": str(end.message_id),
                },
            )
        if end.ok is True:
            span.set_status(Status(StatusCode.OK))
        elif end.ok is False:
            span.set_status(Status(StatusCode.ERROR, end.error or end.outcome))
        span.end(end_time=max(end_ns, start_ns))


def _saga_attributes(state: SagaState) -> dict[str, str | int]:
    attrs: dict[str, str | int] = {
        "saga.id": str(state.saga_id),
        "saga.type": state.saga_type,
        "saga.version": state.saga_version,
    }
    if state.correlation_id is not None:
        attrs["messaging.message.conversation_id"] = str(state.correlation_id)
    return attrs
