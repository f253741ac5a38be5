"""Derived trace and span ids, and the id generator that emits spans with them."""

from __future__ import annotations

import uuid

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from saga.telemetry import attempt_span_id, format_trace_id, root_span_id, saga_trace_id
from saga.telemetry._ids import SagaIdGenerator, forced_ids, root_context
from saga.telemetry._observe import headers_of


def test_ids_are_derived_from_the_saga_and_message_ids() -> None:
    saga_id, command_id = uuid.uuid4(), uuid.uuid4()
    assert saga_trace_id(saga_id) == saga_id.int
    assert format_trace_id(saga_trace_id(saga_id)) == saga_id.hex
    assert root_span_id(saga_id) == root_span_id(uuid.UUID(str(saga_id)))
    assert attempt_span_id(command_id) == attempt_span_id(uuid.UUID(str(command_id)))
    assert root_span_id(saga_id) != attempt_span_id(saga_id)
    assert 0 < attempt_span_id(command_id) < 2**64


def test_headers_name_the_root_as_a_sampled_w3c_traceparent() -> None:
    saga_id = uuid.uuid4()
    headers = dict(headers_of(root_context(saga_id)))
    assert headers == {"traceparent": f"00-{saga_id.hex}-{root_span_id(saga_id):016x}-01"}


def test_the_generator_is_random_unless_ids_are_forced() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(id_generator=SagaIdGenerator(), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with forced_ids(trace_id=7, span_id=9):
        tracer.start_span("forced").end()
    tracer.start_span("free").end()
    forced, free = exporter.get_finished_spans()
    assert forced.context is not None
    assert free.context is not None
    assert (forced.context.trace_id, forced.context.span_id) == (7, 9)
    assert (free.context.trace_id, free.context.span_id) != (7, 9)
    provider.shutdown()
