"""Structured logs: the bound context appears on every line, as text or JSON."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from saga.telemetry import (
    ContextFilter,
    JsonFormatter,
    TextFormatter,
    current_log_context,
    log_context,
)


@pytest.fixture
def stream_logger() -> Iterator[tuple[logging.Logger, logging.Handler, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    logger = logging.getLogger(f"test.telemetry.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield logger, handler, stream
    logger.removeHandler(handler)


def test_json_lines_carry_the_bound_fields(
    stream_logger: tuple[logging.Logger, logging.Handler, io.StringIO],
) -> None:
    logger, handler, stream = stream_logger
    handler.setFormatter(JsonFormatter())
    saga_id, message_id = uuid.uuid4(), uuid.uuid4()
    with log_context(saga_id=saga_id, trace_id="abc"):
        with log_context(step="pay", attempt=2, message_id=message_id):
            logger.info("handled %s", "it")
        logger.warning("outer")
    logger.info("outside")
    inner, outer, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inner["message"] == "handled it"
    assert inner["level"] == "INFO"
    assert (inner["saga_id"], inner["step"], inner["attempt"]) == (str(saga_id), "pay", 2)
    assert (inner["message_id"], inner["trace_id"]) == (str(message_id), "abc")
    assert outer["saga_id"] == str(saga_id)
    assert "step" not in outer
    assert not {"saga_id", "step", "attempt", "message_id", "trace_id"} & set(outside)
    assert current_log_context() == {}


def test_text_lines_append_known_fields_and_the_current_span_trace_id(
    stream_logger: tuple[logging.Logger, logging.Handler, io.StringIO],
) -> None:
    logger, handler, stream = stream_logger
    handler.setFormatter(TextFormatter())
    provider = TracerProvider(shutdown_on_exit=False)
    with provider.get_tracer("t").start_as_current_span("work") as span, log_context(step="s"):
        logger.info("inside")
    trace_id = f"{span.get_span_context().trace_id:032x}"
    line = stream.getvalue().strip()
    assert line.endswith(f"inside step=s trace_id={trace_id}")
    provider.shutdown()
