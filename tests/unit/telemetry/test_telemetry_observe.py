"""The coordinator seam on real engine decisions: headers at decision time, spans and
metrics only after the commit."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from contracts import Envelope, MessageKind
from saga.coordinator import decision_writes
from saga.definition import SagaBuilder, SagaDefinition, compensatable
from saga.engine import StartSaga, StepFailed, StepSucceeded, transition
from saga.errors import ConfigError
from saga.telemetry import (
    Telemetry,
    TelemetryConfig,
    attempt_span_id,
    messaging_attributes,
    root_span_id,
    send_span_id,
    setup,
)
from saga.topics import Topics

T0 = datetime(2030, 1, 1, tzinfo=UTC)
TOPICS = Topics(prefix="p.")


def definition() -> SagaDefinition:
    steps = [
        compensatable(name, participant="svc", command=f"{name}.do", compensation=f"{name}.undo")
        for name in ("a", "b")
    ]
    return SagaBuilder("pair", version=1).add(*steps).build()


def metric_points(reader: InMemoryMetricReader) -> dict[str, list[object]]:
    data = reader.get_metrics_data()
    out: dict[str, list[object]] = {}
    if data is None:
        return out
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                out[metric.name] = list(metric.data.data_points)
    return out


def test_start_injects_headers_and_emits_only_after_commit() -> None:
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    with Telemetry(span_exporter=exporter, metric_readers=[reader]) as telemetry:
        d = definition()
        saga_id = uuid.uuid4()
        decision = transition(None, StartSaga(saga_id=saga_id), d, T0)
        writes = decision_writes(decision, before=None, topics=TOPICS, now=T0)
        observed = telemetry.observe_batch(T0)
        rows = observed.decision(decision, writes.outbox, before=None)

        command = decision.commands[0].envelope
        by_id = {r.message_id: r for r in rows}
        traceparent = dict(by_id[str(command.message_id)].headers)["traceparent"]
        assert traceparent == f"00-{saga_id.hex}-{send_span_id(command.message_id):016x}-01"
        events = [r for r in rows if r.message_id != str(command.message_id)]
        assert events
        for row in events:
            assert dict(row.headers)["traceparent"].split("-")[2] == f"{root_span_id(saga_id):016x}"
        assert exporter.get_finished_spans() == ()  # nothing before the commit

        observed.committed()
        spans = {s.name: s for s in exporter.get_finished_spans()}
        assert set(spans) == {"saga pair", "send a.do"}
        assert spans["send a.do"].parent is not None
        assert spans["send a.do"].parent.span_id == attempt_span_id(command.message_id)
        started = metric_points(reader)["saga.sagas.started"]
        assert [(p.attributes, p.value) for p in started] == [({"saga_type": "pair"}, 1)]


def test_a_failed_step_ends_its_attempt_span_with_the_error() -> None:
    exporter = InMemorySpanExporter()
    with Telemetry(span_exporter=exporter) as telemetry:
        d = definition()
        started = transition(None, StartSaga(saga_id=uuid.uuid4()), d, T0)
        assert started.state is not None
        a = started.commands[0].envelope
        t1 = T0 + timedelta(seconds=1)
        ok = transition(
            started.state, StepSucceeded(step="a", attempt=1, causation_id=a.message_id), d, t1
        )
        assert ok.state is not None
        b = ok.commands[0].envelope
        t2 = T0 + timedelta(seconds=3)
        failed = transition(
            ok.state,
            StepFailed(step="b", attempt=1, code="b.refused", causation_id=b.message_id),
            d,
            t2,
        )
        observed = telemetry.observe_batch(t2)
        observed.decision(failed, [], before=ok.state)
        observed.committed()
        spans = {s.name: s for s in exporter.get_finished_spans()}
        step_b = spans["step b"]
        assert step_b.status.status_code is StatusCode.ERROR
        assert "b.refused" in (step_b.status.description or "")
        assert step_b.context is not None
        assert step_b.context.span_id == attempt_span_id(b.message_id)
        assert step_b.start_time == int(t1.timestamp() * 1e9)  # when b's command was decided
        assert step_b.end_time == int(t2.timestamp() * 1e9)
        assert "send a.undo" in spans  # the compensation it started


def test_disabled_telemetry_passes_incoming_trace_headers_through() -> None:
    telemetry = Telemetry.disabled()
    assert not telemetry.tracing_enabled
    assert not telemetry.metrics_enabled
    d = definition()
    decision = transition(None, StartSaga(saga_id=uuid.uuid4()), d, T0)
    writes = decision_writes(decision, before=None, topics=TOPICS, now=T0)
    record = SimpleNamespace(headers=[("traceparent", b"00-abc-def-01"), ("other", b"x")])
    rows = telemetry.observe_batch(T0).decision(decision, writes.outbox, before=None, record=record)
    assert all(row.headers == [("traceparent", "00-abc-def-01")] for row in rows)


def test_messaging_attributes_follow_the_semantic_conventions() -> None:
    env = Envelope(
        saga_id=uuid.uuid4(),
        saga_type="pair",
        saga_version=1,
        step="a",
        attempt=2,
        kind=MessageKind.COMMAND,
        type="a.do",
        correlation_id=uuid.uuid4(),
    )
    attrs = messaging_attributes(
        env, destination="p.svc.commands", operation="process", partition=3, offset=42
    )
    assert attrs["messaging.system"] == "kafka"
    assert attrs["messaging.destination.name"] == "p.svc.commands"
    assert attrs["messaging.kafka.destination.partition"] == 3
    assert attrs["messaging.kafka.message.offset"] == 42
    assert attrs["messaging.kafka.message.key"] == str(env.saga_id)
    assert attrs["messaging.message.id"] == str(env.message_id)
    assert attrs["messaging.message.conversation_id"] == str(env.correlation_id)
    assert (attrs["saga.step"], attrs["saga.attempt"]) == ("a", 2)


def test_setup_reads_settings_and_refuses_unknown_exporters() -> None:
    settings = SimpleNamespace(traces_exporter="", metrics_exporter="Prometheus", otlp_endpoint="")
    with setup(settings) as telemetry:  # type: ignore[arg-type]
        assert telemetry.serves_prometheus
        assert not telemetry.tracing_enabled
        telemetry.instruments.sagas_started.add(1, {"saga_type": "pair"})
        body, content_type = telemetry.prometheus_text()
        assert content_type.startswith("text/plain")
        assert b'saga_sagas_started_total{saga_type="pair"} 1.0' in body
    with pytest.raises(ConfigError, match="unknown traces exporter 'jaeger'"):
        TelemetryConfig(traces_exporter="jaeger")
    with pytest.raises(ConfigError, match="not exported to Prometheus"):
        Telemetry.disabled().prometheus_text()
