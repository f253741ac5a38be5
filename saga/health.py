"""Health endpoints of the long-running processes (coordinator, relay, example services).

``saga coordinator``, ``saga relay`` and ``python -m services.<name>`` serve, when
``SAGA_HEALTH_PORT`` is set, ``GET /healthz`` (the process's event loop answers: a liveness probe),
``GET /readyz`` (the process consumes: it joined its consumer group and none of its
parts failed; 503 with the reason otherwise) and, with
``SAGA_METRICS_EXPORTER=prometheus``, ``GET /metrics``. The HTTP API (``saga api``)
has its own, richer, endpoints.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from aiohttp import web

from saga.errors import ConfigError
from saga.lifecycle import AsyncResource
from saga.telemetry import Telemetry

log = logging.getLogger("saga.health")

Readiness = Callable[[], str | None]
"""Returns ``None`` when ready, else why not (shown in the 503 body)."""


class HealthServer(AsyncResource):
    """Serve ``/healthz``, ``/readyz`` and ``/metrics`` while the context is open.

    Args:
        host: Address to bind (``0.0.0.0`` in a container, for the kubelet).
        port: Port to bind; ``0`` serves nothing (the default of the settings).
        readiness: Why the process is not ready, or ``None``.
        telemetry: Serves ``/metrics`` when it exports to Prometheus.
    """

    def __init__(
        self,
        host: str,
        port: int,
        readiness: Readiness,
        *,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._readiness = readiness
        self._telemetry = telemetry
        self._runner: web.AppRunner | None = None

    async def _open(self) -> None:
        if not self.port:
            return
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        if self._telemetry is not None and self._telemetry.metrics_enabled:
            app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.host, self.port).start()
        self._runner = runner
        log.info("health endpoints on http://%s:%d (/healthz, /readyz)", self.host, self.port)

    async def _close(self, exc: BaseException | None) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _healthz(self, _request: web.Request) -> web.Response:
        return _json({"status": "ok"}, 200)

    async def _readyz(self, _request: web.Request) -> web.Response:
        reason = self._readiness()
        if reason is None:
            return _json({"status": "ready"}, 200)
        return _json({"status": "not_ready", "reason": reason}, 503)

    async def _metrics(self, _request: web.Request) -> web.Response:
        assert self._telemetry is not None
        await self._telemetry.refresh()
        try:
            body, content_type = self._telemetry.prometheus_text()
        except ConfigError as exc:  # metrics go to another exporter
            return _json({"status": "not_found", "reason": exc.message}, 404)
        return web.Response(body=body, headers={"Content-Type": content_type})


def _json(body: dict[str, str], status: int) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type="application/json")
