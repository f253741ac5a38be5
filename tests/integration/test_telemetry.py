"""Telemetry end to end through real Kafka: one trace per saga, and the /metrics endpoint.

The coordinator runtime (coordinator, relay, timers) and a participant built with the
SDK run in this process, sharing one :class:`saga.telemetry.Telemetry` whose spans go
to an in-memory exporter.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from _scripted import booking, fast_runtime_config, looping
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, ConfigDict

from saga.api import create_app
from saga.coordinator import CoordinatorRuntime, start_saga
from saga.definition import SagaBuilder, SagaDefinition, pivot
from saga.participant import (
    CommandContext,
    Mode,
    Participant,
    ParticipantConfig,
    PermanentError,
)
from saga.telemetry import Telemetry, TelemetryConfig
from saga.topics import Topics

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TERMINAL = {"completed", "compensated", "stuck", "aborted"}


class AnyPayload(BaseModel):
    model_config = ConfigDict(extra="allow")


def trip() -> SagaDefinition:
    return (
        SagaBuilder("trip", version=1)
        .add(
            booking("hotel", "agency", input={"city": "city"}, timeout_ms=10_000),
            booking("flight", "agency", timeout_ms=10_000),
            pivot(
                "charge",
                participant="agency",
                command="payment.charge",
                input={"decline": "decline"},
                timeout_ms=10_000,
            ),
        )
        .build()
    )


def agency(bootstrap: str, topics: Topics, telemetry: Telemetry) -> Participant:
    participant = Participant(
        ParticipantConfig(
            name="agency",
            bootstrap_servers=bootstrap,
            topics=topics,
            mode=Mode.SIMPLE,
            poll_timeout_ms=50,
        ),
        **telemetry.participant_hooks(),
    )

    async def done(cmd: AnyPayload, ctx: CommandContext) -> dict[str, Any]:
        return {"ok": True}

    async def charge(cmd: AnyPayload, ctx: CommandContext) -> dict[str, Any]:
        if getattr(cmd, "decline", False):
            raise PermanentError("payment.declined", "card declined")
        return {"charged": True}

    for message_type in ("hotel.book", "hotel.cancel", "flight.book", "flight.cancel"):
        participant.register(message_type, done, model=AnyPayload)
    participant.register("payment.charge", charge, model=AnyPayload)
    return participant


@contextlib.asynccontextmanager
async def deployment(
    tmp_path: Path, bootstrap: str, prefix: str, telemetry: Telemetry
) -> AsyncIterator[tuple[CoordinatorRuntime, Topics]]:
    topics = Topics(prefix=prefix)
    config = fast_runtime_config(
        f"sqlite+aiosqlite:///{tmp_path / 'saga.db'}", bootstrap, topics, partitions=1
    )
    participant = agency(bootstrap, topics, telemetry)
    async with (
        CoordinatorRuntime(config, [trip()], telemetry=telemetry) as runtime,
        looping(runtime),
        participant,
        looping(participant),
    ):
        yield runtime, topics


async def run_saga(runtime: CoordinatorRuntime, topics: Topics, **saga_input: Any) -> UUID:
    started = await start_saga(
        runtime.store,
        runtime.definitions,
        topics,
        "trip",
        {"city": "Lisbon", **saga_input},
        now=datetime.now(UTC),
        telemetry=runtime.telemetry,
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 45
    while loop.time() < deadline:
        row = await runtime.store.get_saga(str(started.saga_id))
        assert row is not None
        if row.status in TERMINAL:
            return started.saga_id
        await asyncio.sleep(0.05)
    raise AssertionError(f"saga {started.saga_id} did not finish")


async def wait_for_spans(exporter: InMemorySpanExporter, count: int) -> list[ReadableSpan]:
    for _ in range(100):
        spans = list(exporter.get_finished_spans())
        if len(spans) >= count:
            return spans
        await asyncio.sleep(0.05)
    names = sorted(s.name for s in exporter.get_finished_spans())
    raise AssertionError(f"expected {count} spans, got {names}")


def one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


async def test_a_compensated_saga_is_one_trace_with_steps_sends_and_handlers(
    tmp_path: Path, kafka_bootstrap: str, topic_prefix: str
) -> None:
    exporter = InMemorySpanExporter()
    with Telemetry(span_exporter=exporter) as telemetry:
        async with deployment(tmp_path, kafka_bootstrap, topic_prefix, telemetry) as (rt, topics):
            saga_id = await run_saga(rt, topics, decline=True)
            status = (await rt.store.get_saga(str(saga_id))).status  # type: ignore[union-attr]
            # root + 5 attempts (3 steps, 2 compensations), each with a send and a process span
            spans = await wait_for_spans(exporter, 1 + 5 * 3)
    assert status == "compensated"
    assert len(spans) == 16, sorted(s.name for s in spans)

    # One trace, named after the saga.
    assert {s.context.trace_id for s in spans if s.context} == {saga_id.int}

    root = one(spans, "saga trip")
    assert root.parent is None
    assert root.attributes is not None
    assert root.attributes["saga.id"] == str(saga_id)

    attempts = {
        "hotel.book": one(spans, "step book_hotel"),
        "flight.book": one(spans, "step book_flight"),
        "payment.charge": one(spans, "step charge"),
        "flight.cancel": one(spans, "compensate book_flight"),
        "hotel.cancel": one(spans, "compensate book_hotel"),
    }
    for message_type, attempt in attempts.items():
        # saga root -> step attempt -> send (coordinator) -> process (participant)
        assert parent_id(attempt) == span_id(root), attempt.name
        send = one(spans, f"send {message_type}")
        assert send.kind is SpanKind.PRODUCER
        assert parent_id(send) == span_id(attempt), send.name
        process = one(spans, f"process {message_type}")
        assert process.kind is SpanKind.CONSUMER
        assert parent_id(process) == span_id(send), process.name
        assert attempt.start_time is not None
        assert attempt.end_time is not None
        assert process.start_time is not None
        assert attempt.start_time <= process.start_time <= attempt.end_time

        attrs = process.attributes
        assert attrs is not None
        assert attrs["messaging.system"] == "kafka"
        assert attrs["messaging.destination.name"] == topics.commands("agency")
        assert attrs["messaging.kafka.message.key"] == str(saga_id)
        assert attrs["messaging.message.conversation_id"] == str(saga_id)
        assert isinstance(attrs["messaging.kafka.destination.partition"], int)
        assert isinstance(attrs["messaging.kafka.message.offset"], int)

    assert attempts["payment.charge"].status.status_code is StatusCode.ERROR
    assert "payment.declined" in (attempts["payment.charge"].status.description or "")
    for name in ("hotel.book", "flight.book", "flight.cancel", "hotel.cancel"):
        assert attempts[name].status.status_code is StatusCode.OK, name

    # Compensations run in reverse order of the steps they undo.
    forward = [attempts["hotel.book"], attempts["flight.book"]]
    backward = [attempts["flight.cancel"], attempts["hotel.cancel"]]
    assert forward[0].start_time < forward[1].start_time  # type: ignore[operator]
    assert backward[0].start_time < backward[1].start_time  # type: ignore[operator]
    assert forward[1].end_time <= backward[0].start_time  # type: ignore[operator]


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


async def test_metrics_endpoint_counts_a_completed_saga(
    tmp_path: Path, kafka_bootstrap: str, topic_prefix: str
) -> None:
    with Telemetry(TelemetryConfig(metrics_exporter="prometheus")) as telemetry:
        async with deployment(tmp_path, kafka_bootstrap, topic_prefix, telemetry) as (rt, topics):
            saga_id = await run_saga(rt, topics)
            assert (await rt.store.get_saga(str(saga_id))).status == "completed"  # type: ignore[union-attr]
            app = create_app(rt.store, rt.definitions, topics, telemetry=telemetry)
            async with TestClient(TestServer(app)) as client:
                text = ""
                for _ in range(50):  # the counters are added right after the commit
                    response = await client.get("/metrics")
                    assert response.status == 200
                    assert response.content_type == "text/plain"
                    text = await response.text()
                    if sample(text, "saga_sagas_completed_total", saga_type="trip"):
                        break
                    await asyncio.sleep(0.05)

    assert sample(text, "saga_sagas_started_total", saga_type="trip") == 1
    assert sample(text, "saga_sagas_completed_total", saga_type="trip") == 1
    assert sample(text, "saga_sagas_compensated_total", saga_type="trip") is None
    # One attempt per step, each timed.
    assert sample(text, "saga_step_attempts_count", saga_type="trip", step="charge") == 1
    assert (
        sample(
            text,
            "saga_step_duration_seconds_count",
            saga_type="trip",
            step="book_hotel",
            kind="command",
            outcome="succeeded",
        )
        == 1
    )
    # Gauges sampled on scrape: the relay has published everything, the replies are consumed.
    assert sample(text, "saga_outbox_backlog") is not None
    assert sample(text, "saga_relay_lag_seconds") is not None
    assert sample(text, "saga_consumer_lag", partition="0") == 0
