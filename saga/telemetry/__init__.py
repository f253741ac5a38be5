"""Observability: OpenTelemetry traces and metrics, trace context in Kafka headers, logs.

Telemetry is a seam around the loops, never a dependency of the engine: build one
:class:`Telemetry` per process (:func:`setup` reads the CLI settings) and hand it to the
coordinator runtime, ``start_saga``, participants and the API. Unconfigured, everything
is a no-op. See :mod:`saga.telemetry._observe` for the shape of a saga's trace.
"""

from saga.telemetry._attributes import messaging_attributes
from saga.telemetry._config import TelemetryConfig, TelemetrySettings
from saga.telemetry._ids import (
    attempt_span_id,
    format_trace_id,
    root_span_id,
    saga_trace_id,
    send_span_id,
)
from saga.telemetry._logs import (
    ContextFilter,
    JsonFormatter,
    TextFormatter,
    configure_logging,
    current_log_context,
    log_context,
)
from saga.telemetry._observe import BatchObservation
from saga.telemetry._probes import outbox_samples, runtime_probe
from saga.telemetry._telemetry import (
    BREAKER_STATE,
    CONSUMER_LAG,
    GAUGES,
    OUTBOX_BACKLOG,
    RELAY_LAG,
    Probe,
    Sample,
    Telemetry,
    setup,
)

__all__ = [
    "BREAKER_STATE",
    "CONSUMER_LAG",
    "GAUGES",
    "OUTBOX_BACKLOG",
    "RELAY_LAG",
    "BatchObservation",
    "ContextFilter",
    "JsonFormatter",
    "Probe",
    "Sample",
    "Telemetry",
    "TelemetryConfig",
    "TelemetrySettings",
    "TextFormatter",
    "attempt_span_id",
    "configure_logging",
    "current_log_context",
    "format_trace_id",
    "log_context",
    "messaging_attributes",
    "outbox_samples",
    "root_span_id",
    "runtime_probe",
    "saga_trace_id",
    "send_span_id",
    "setup",
]
