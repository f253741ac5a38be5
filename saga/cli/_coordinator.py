"""``saga coordinator``: the coordinator loop, its timers and (by default) the relay."""

from __future__ import annotations

from datetime import timedelta

import click

from saga.cli._common import configure_logging, fail, load_definitions, settings
from saga.errors import SagaError
from saga.process import Register, run_until_signal


@click.command("coordinator")
@click.option(
    "--no-relay",
    is_flag=True,
    help="Do not run the relays of the owned partitions here (run `saga relay` processes).",
)
@click.option("--no-timers", is_flag=True, help="Do not fire due timers in this process.")
@click.option(
    "--crash-after-batches",
    type=int,
    default=None,
    hidden=True,
    envvar="SAGA_COORDINATOR_CRASH_AFTER_BATCHES",
    help="Fault injection for tests: SIGKILL after this many committed batches.",
)
def coordinator(no_relay: bool, no_timers: bool, crash_after_batches: int | None) -> None:
    """Run the coordinator until SIGTERM (finishes the batch, commits, closes)."""
    from saga.coordinator import CoordinatorConfig, CoordinatorRuntime, RuntimeConfig
    from saga.health import HealthServer
    from saga.telemetry import setup

    s = settings()
    configure_logging(s.log_level)
    try:
        definitions = load_definitions(s.definitions)
        telemetry = setup(s, service_name="saga-coordinator")
    except SagaError as exc:
        fail(exc)
    config = RuntimeConfig(
        database_url=s.database_url,
        bootstrap_servers=s.kafka_bootstrap_servers,
        topics=s.topics,
        coordinator=CoordinatorConfig(crash_after_batches=crash_after_batches),
        relay=None if no_relay else s.relay_config(),
        run_timers=not no_timers,
        partitions=s.partitions,
        replication_factor=s.replication_factor,
        inbox_retention=(
            None if s.inbox_retention_s is None else timedelta(seconds=s.inbox_retention_s)
        ),
    )

    async def main(on_stop: Register) -> None:
        runtime = CoordinatorRuntime(config, definitions, telemetry=telemetry)
        on_stop(runtime.stop)  # before opening: it also ends a wait for the database
        # Health first: while the runtime waits out an outage, /healthz answers and
        # /readyz says what it waits for (a startup probe does not restart it).
        async with (
            HealthServer(s.health_host, s.health_port, runtime.readiness, telemetry=telemetry),
            runtime,
        ):
            click.echo(
                f"coordinator running: {len(definitions)} definition(s), "
                f"replies from {s.topics.replies}, database {s.database_url.split('@')[-1]}",
                err=True,
            )
            await runtime.run()

    try:
        run_until_signal(main)
    except SagaError as exc:
        fail(exc)
    finally:
        telemetry.close()
