"""Telemetry options: which exporters, where to; a frozen value built by the shell."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

from saga.errors import ConfigError

TRACES_EXPORTERS: Final = ("none", "console", "otlp")
"""Accepted values of ``traces_exporter``."""
METRICS_EXPORTERS: Final = ("none", "prometheus", "console", "otlp")
"""Accepted values of ``metrics_exporter``."""


@dataclass(frozen=True, kw_only=True)
class TelemetryConfig:
    """What a process exports. The default exports nothing (no-op providers)."""

    service_name: str = "saga"
    """``service.name`` resource attribute of every span and metric."""
    traces_exporter: str = "none"
    """``none``, ``console`` (stderr) or ``otlp`` (OTLP over HTTP)."""
    metrics_exporter: str = "none"
    """``none``, ``prometheus`` (served at the API's ``/metrics``), ``console`` or ``otlp``."""
    otlp_endpoint: str = ""
    """Base URL of the OTLP/HTTP collector (``http://host:4318``); empty: the OTel default
    (``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``http://localhost:4318``)."""
    export_interval_ms: int = 10_000
    """How often pushed metrics (console, OTLP) are exported and gauges re-sampled."""

    def __post_init__(self) -> None:
        if self.traces_exporter not in TRACES_EXPORTERS:
            raise ConfigError(
                f"unknown traces exporter {self.traces_exporter!r} "
                f"(use one of {', '.join(TRACES_EXPORTERS)})"
            )
        if self.metrics_exporter not in METRICS_EXPORTERS:
            raise ConfigError(
                f"unknown metrics exporter {self.metrics_exporter!r} "
                f"(use one of {', '.join(METRICS_EXPORTERS)})"
            )
        if self.export_interval_ms < 100:
            raise ConfigError("export_interval_ms must be >= 100")


class TelemetrySettings(Protocol):
    """The part of :class:`saga.cli.Settings` that :func:`saga.telemetry.setup` reads."""

    @property
    def traces_exporter(self) -> str:
        """See :attr:`TelemetryConfig.traces_exporter`."""

    @property
    def metrics_exporter(self) -> str:
        """See :attr:`TelemetryConfig.metrics_exporter`."""

    @property
    def otlp_endpoint(self) -> str:
        """See :attr:`TelemetryConfig.otlp_endpoint`."""
