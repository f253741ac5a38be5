"""``python -m services.audit``: run the auditor until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import click

from saga.errors import SagaError
from saga.health import HealthServer
from saga.hints import explain
from saga.process import Register, run_until_signal
from saga.settings import Settings
from services.audit._app import Auditor, AuditorConfig


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Web view address.")
@click.option("--port", type=click.IntRange(1, 65535), default=6066, show_default=True)
@click.option(
    "--window-seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Tumbling window of the outcome counts.",
)
@click.option("--app-id", default="", help="Faust app id (default: <prefix>saga-auditor).")
def main(host: str, port: int, window_seconds: float, app_id: str) -> None:
    """Audit the events topic of the deployment in SAGA_* settings.

    With SAGA_HEALTH_PORT set it serves /healthz and /readyz (ready once it has joined
    its consumer group).
    """
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    config = AuditorConfig(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        topics=settings.topics,
        app_id=app_id,
        web_host=host,
        web_port=port,
        window=timedelta(seconds=window_seconds),
        replication_factor=settings.replication_factor,
    )

    async def run(on_stop: Register) -> None:
        stop = asyncio.Event()
        auditor = Auditor(config)
        on_stop(stop.set)
        on_stop(auditor.stop)  # before opening: it also ends a wait for Kafka
        # Health first: while the auditor waits for Kafka, /readyz says so.
        async with (
            HealthServer(settings.health_host, settings.health_port, auditor.readiness),
            auditor,
        ):
            click.echo(f"auditor listening on {auditor.url}", err=True)
            await stop.wait()

    try:
        run_until_signal(run)
    except SagaError as exc:
        raise click.ClickException(explain(exc)) from None


main()
