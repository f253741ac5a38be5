"""The :class:`Telemetry` of one process: tracer, meter, exporters, gauges and seams.

Nothing here is global: each process (or test) builds one :class:`Telemetry` — with
:func:`setup` from the settings in the CLI — and hands it to the parts it runs
(``CoordinatorRuntime(..., telemetry=)``, ``start_saga(..., telemetry=)``,
``Participant(..., **telemetry.participant_hooks())``, ``create_app(..., telemetry=)``).
Unconfigured, it uses OpenTelemetry's no-op tracer and meter, so every seam costs
almost nothing and exports nothing.

Observable gauges (outbox backlog, relay lag, consumer lag, circuit breakers) need
database and Kafka calls, which OpenTelemetry's synchronous callbacks cannot make:
*probes* (async functions returning :class:`Sample` values) are run by
:meth:`Telemetry.refresh` — periodically by the runtime, and before each ``/metrics``
scrape — and the callbacks report the last samples.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Counter, Histogram, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from contracts import Envelope
from saga.errors import ConfigError, SagaError
from saga.lifecycle import wait_at_most
from saga.telemetry._attributes import messaging_attributes
from saga.telemetry._config import TelemetryConfig, TelemetrySettings
from saga.telemetry._ids import SagaIdGenerator, format_trace_id
from saga.telemetry._logs import log_context
from saga.telemetry._observe import TRACE_HEADERS, BatchObservation

log = logging.getLogger("saga.telemetry")

OUTBOX_BACKLOG = "saga.outbox.backlog"
"""Gauge: outbox rows not published yet."""
RELAY_LAG = "saga.relay.lag"
"""Gauge (seconds): age of the oldest unpublished outbox row (0 when none)."""
CONSUMER_LAG = "saga.consumer.lag"
"""Gauge: records of the replies topic not consumed yet, per partition (highwater - position)."""
BREAKER_STATE = "saga.circuit_breaker.state"
"""Gauge per participant: 0 closed, 1 half-open, 2 open."""
GAUGES: Mapping[str, tuple[str, str]] = {
    OUTBOX_BACKLOG: ("Outbox rows not published yet", "{message}"),
    RELAY_LAG: ("Age of the oldest unpublished outbox row", "s"),
    CONSUMER_LAG: ("Replies not consumed yet per partition (highwater - position)", "{message}"),
    BREAKER_STATE: ("Circuit breaker per participant: 0 closed, 1 half-open, 2 open", "1"),
}

Headers = Sequence[tuple[str, bytes]]


@dataclass(frozen=True)
class Sample:
    """One value of an observable gauge, produced by a probe."""

    gauge: str
    """One of :data:`GAUGES`."""
    value: float
    """The observed value."""
    attributes: Mapping[str, str | int] = field(default_factory=dict)
    """Its attributes (e.g. ``partition``)."""


Probe = Callable[[], Awaitable[Iterable[Sample]]]
"""Samples gauges; may raise :class:`saga.errors.SagaError` (the last samples stay)."""


class Instruments:
    """The synchronous instruments (no-ops under the no-op meter)."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.sagas_started: Counter = meter.create_counter(
            "saga.sagas.started", description="Sagas started, by saga type"
        )
        self.saga_outcomes: Mapping[str, Counter] = {
            outcome: meter.create_counter(
                f"saga.sagas.{outcome}", description=f"Sagas that became {outcome}, by saga type"
            )
            for outcome in ("completed", "compensated", "stuck", "aborted")
        }
        self.step_duration: Histogram = meter.create_histogram(
            "saga.step.duration",
            unit="s",
            description="Duration of step and compensation attempts (command sent to outcome)",
            explicit_bucket_boundaries_advisory=[
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                5,
                10,
                30,
                60,
                300,
                900,
            ],
        )
        self.step_attempts: Histogram = meter.create_histogram(
            "saga.step.attempts",
            description="Attempts a step took until it succeeded, failed or timed out",
            explicit_bucket_boundaries_advisory=[1, 2, 3, 4, 5, 7, 10, 20, 50],
        )
        self.dead_letters: Counter = meter.create_counter(
            "saga.dlq.messages", description="Messages sent to the dead-letter topic"
        )


class Telemetry:
    """Tracer, meter and exporters of one process, and the seams the loops call.

    Args:
        config: Exporters; the default exports nothing.
        span_exporter: An extra span exporter, e.g. an ``InMemorySpanExporter`` in
            tests (exported synchronously); it turns tracing on.
        metric_readers: Extra metric readers (e.g. an ``InMemoryMetricReader``); they
            turn metrics on.
    """

    def __init__(
        self,
        config: TelemetryConfig | None = None,
        *,
        span_exporter: SpanExporter | None = None,
        metric_readers: Sequence[MetricReader] = (),
    ) -> None:
        self.config = config or TelemetryConfig()
        cfg = self.config
        resource = Resource.create({"service.name": cfg.service_name})
        self._tracer_provider: TracerProvider | None = None
        self._meter_provider: MeterProvider | None = None
        self._prometheus_registry: Any = None
        self._probes: list[Probe] = []
        self._samples: dict[str, list[Sample]] = {}
        self._closed = False

        exporters: list[tuple[SpanExporter, bool]] = []
        if span_exporter is not None:
            exporters.append((span_exporter, False))
        if cfg.traces_exporter == "console":
            exporters.append((ConsoleSpanExporter(), True))
        elif cfg.traces_exporter == "otlp":
            exporters.append((_otlp_span_exporter(cfg.otlp_endpoint), True))
        if exporters:
            provider = TracerProvider(
                resource=resource, id_generator=SagaIdGenerator(), shutdown_on_exit=False
            )
            for exporter, batched in exporters:
                processor = (
                    BatchSpanProcessor(exporter) if batched else SimpleSpanProcessor(exporter)
                )
                provider.add_span_processor(processor)
            self._tracer_provider = provider
            self.tracer: trace.Tracer = provider.get_tracer("saga")
        else:
            self.tracer = trace.NoOpTracer()

        readers = list(metric_readers)
        interval = cfg.export_interval_ms
        if cfg.metrics_exporter == "prometheus":
            readers.append(self._prometheus_reader())
        elif cfg.metrics_exporter == "console":
            readers.append(
                PeriodicExportingMetricReader(
                    ConsoleMetricExporter(), export_interval_millis=interval
                )
            )
        elif cfg.metrics_exporter == "otlp":
            readers.append(
                PeriodicExportingMetricReader(
                    _otlp_metric_exporter(cfg.otlp_endpoint), export_interval_millis=interval
                )
            )
        if readers:
            self._meter_provider = MeterProvider(
                resource=resource, metric_readers=readers, shutdown_on_exit=False
            )
            self.meter: metrics.Meter = self._meter_provider.get_meter("saga")
        else:
            self.meter = metrics.NoOpMeter("saga")
        self.instruments = Instruments(self.meter)
        for name, (description, unit) in GAUGES.items():
            self.meter.create_observable_gauge(
                name, callbacks=[self._gauge_callback(name)], unit=unit, description=description
            )

    @classmethod
    def disabled(cls) -> Telemetry:
        """A telemetry that records and exports nothing."""
        return cls()

    @property
    def tracing_enabled(self) -> bool:
        """Whether spans are recorded (some span exporter is configured)."""
        return self._tracer_provider is not None

    @property
    def metrics_enabled(self) -> bool:
        """Whether metrics are recorded (some metric reader is configured)."""
        return self._meter_provider is not None

    @property
    def serves_prometheus(self) -> bool:
        """Whether :meth:`prometheus_text` has something to serve."""
        return self._prometheus_registry is not None

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Flush and shut the exporters down (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._tracer_provider is not None:
            self._tracer_provider.shutdown()
        if self._meter_provider is not None:
            self._meter_provider.shutdown()

    def force_flush(self) -> None:
        """Export every finished span now (batching exporters)."""
        if self._tracer_provider is not None:
            self._tracer_provider.force_flush()

    # -- coordinator seam -----------------------------------------------------------------

    def observe_batch(self, now: datetime) -> BatchObservation:
        """Start observing the decisions of one database transaction decided at ``now``."""
        return BatchObservation(self, now)

    # -- participant seam -----------------------------------------------------------------

    def participant_hooks(self) -> dict[str, Any]:
        """Keyword arguments for :class:`saga.participant.Participant` (``scope``, ``headers``)."""
        return {"scope": self.command_scope, "headers": self.reply_headers}

    @contextlib.contextmanager
    def command_scope(self, envelope: Envelope, record: Any) -> Iterator[None]:
        """Handle one command in a consumer span ``process <type>`` with a log context.

        The span's parent is the context in the command's headers (the coordinator's
        ``send <type>`` span); handlers' own spans become its children.
        """
        fields: dict[str, object] = {
            "saga_id": envelope.saga_id,
            "step": envelope.step,
            "attempt": envelope.attempt,
            "message_id": envelope.message_id,
        }
        headers: Headers = tuple(getattr(record, "headers", None) or ())
        carrier = {k: v.decode("ascii", "replace") for k, v in headers if k in TRACE_HEADERS}
        parent = TraceContextTextMapPropagator().extract(carrier)
        if not self.tracing_enabled:
            remote = trace.get_current_span(parent).get_span_context()
            trace_id = format_trace_id(remote.trace_id) if remote.is_valid else None
            with log_context(**fields, trace_id=trace_id):
                yield
            return
        with self.tracer.start_as_current_span(
            f"process {envelope.type}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=messaging_attributes(
                envelope,
                destination=getattr(record, "topic", ""),
                operation="process",
                partition=getattr(record, "partition", None),
                offset=getattr(record, "offset", None),
            ),
        ) as span:
            trace_id = format_trace_id(span.get_span_context().trace_id)
            with log_context(**fields, trace_id=trace_id):
                yield

    def reply_headers(self, command_headers: Headers) -> list[tuple[str, bytes]]:
        """The reply's trace headers: the current ``process`` span, else the command's."""
        span = trace.get_current_span()
        if not self.tracing_enabled or not span.get_span_context().is_valid:
            return [(k, v) for k, v in command_headers if k in TRACE_HEADERS]
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier)
        return [(k, v.encode("ascii")) for k, v in sorted(carrier.items())]

    # -- gauges ---------------------------------------------------------------------------

    def add_probe(self, probe: Probe) -> Callable[[], None]:
        """Register a probe run by :meth:`refresh`; returns a function that removes it."""
        self._probes.append(probe)

        def remove() -> None:
            if probe in self._probes:
                self._probes.remove(probe)
                self._samples.clear()

        return remove

    async def refresh(self) -> None:
        """Run every probe and keep its samples for the gauges (no-op without metrics)."""
        if not self.metrics_enabled:
            return
        fresh: dict[str, list[Sample]] = {}
        failed = False
        for probe in list(self._probes):
            try:
                samples = list(await probe())
            except SagaError as exc:
                log.debug("telemetry probe failed (gauges keep their last values): %s", exc)
                failed = True
                continue
            except Exception:
                # Telemetry must never stop the process it observes.
                log.exception("telemetry probe raised (gauges keep their last values)")
                failed = True
                continue
            for sample in samples:
                fresh.setdefault(sample.gauge, []).append(sample)
        for name in GAUGES:
            if name in fresh or not failed:
                self._samples[name] = fresh.get(name, [])

    async def sample_until(self, stop: asyncio.Event) -> None:
        """Refresh the gauges every ``export_interval_ms`` until ``stop`` is set."""
        if not self.metrics_enabled:
            return
        seconds = self.config.export_interval_ms / 1000
        while not stop.is_set():
            await self.refresh()
            await wait_at_most(stop, seconds)

    def _gauge_callback(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(s.value, dict(s.attributes)) for s in self._samples.get(name, [])]

        return callback

    # -- prometheus -----------------------------------------------------------------------

    def _prometheus_reader(self) -> MetricReader:
        try:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from prometheus_client import CollectorRegistry
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ConfigError(
                "SAGA_METRICS_EXPORTER=prometheus needs opentelemetry-exporter-prometheus"
            ) from exc
        # A registry of our own: two Telemetry objects (tests) never share metrics.
        self._prometheus_registry = CollectorRegistry(auto_describe=True)
        return PrometheusMetricReader(scope_info_enabled=False, registry=self._prometheus_registry)

    def prometheus_text(self) -> tuple[bytes, str]:
        """The Prometheus exposition of every metric, and its content type.

        Raises:
            ConfigError: The metrics exporter is not ``prometheus``.
        """
        if self._prometheus_registry is None:
            raise ConfigError("metrics are not exported to Prometheus (SAGA_METRICS_EXPORTER)")
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self._prometheus_registry), CONTENT_TYPE_LATEST


def _otlp_span_exporter(endpoint: str) -> SpanExporter:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ConfigError(
            "SAGA_TRACES_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto-http"
        ) from exc
    if endpoint:
        return OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
    return OTLPSpanExporter()


def _otlp_metric_exporter(endpoint: str) -> Any:
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ConfigError(
            "SAGA_METRICS_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto-http"
        ) from exc
    if endpoint:
        return OTLPMetricExporter(endpoint=endpoint.rstrip("/") + "/v1/metrics")
    return OTLPMetricExporter()


def setup(
    settings: TelemetrySettings | TelemetryConfig, *, service_name: str = "saga"
) -> Telemetry:
    """The telemetry of a CLI process, from its settings (``SAGA_TRACES_EXPORTER``, ...).

    Args:
        settings: :class:`saga.cli.Settings` (or anything with ``traces_exporter``,
            ``metrics_exporter`` and ``otlp_endpoint``), or a :class:`TelemetryConfig`.
        service_name: ``service.name`` of the process (ignored for a ``TelemetryConfig``).

    Raises:
        ConfigError: An exporter name is unknown or its package is not installed.
    """
    if isinstance(settings, TelemetryConfig):
        return Telemetry(settings)
    return Telemetry(
        TelemetryConfig(
            service_name=service_name,
            traces_exporter=settings.traces_exporter.strip().lower() or "none",
            metrics_exporter=settings.metrics_exporter.strip().lower() or "none",
            otlp_endpoint=settings.otlp_endpoint.strip(),
        )
    )
