"""``saga relay``: publish the replies partitions this process is assigned, until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import click

from saga.cli import _options as opt
from saga.cli._common import configure_logging, fail, settings
from saga.errors import SagaError
from saga.process import Register, run_until_signal


@click.command("relay")
@opt.number("--batch-size", default=500)
@opt.number(
    "--linger-ms",
    default=10,
    minimum=0,
    help="Least time between two Kafka transactions: while rows keep coming, those written "
    "meanwhile share the next one (after a quiet spell the first rows go out at once).",
)
@opt.number(
    "--poll-interval-ms",
    default=50,
    help="Polling interval on SQLite (PostgreSQL is woken by NOTIFY).",
)
@opt.number(
    "--prune-after-hours", default=24.0, minimum=0, help="Delete published rows older than this."
)
@opt.relay_mode("--mode")
@click.option(
    "--crash-after-commit",
    is_flag=True,
    hidden=True,
    envvar="SAGA_RELAY_CRASH_AFTER_COMMIT",
    help="Fault injection for tests: SIGKILL after the first Kafka commit, before the mark.",
)
def relay(
    batch_size: int,
    linger_ms: int,
    poll_interval_ms: int,
    prune_after_hours: float,
    mode: str,
    crash_after_commit: bool,
) -> None:
    """Publish the coordinators' outbox to Kafka exactly once.

    Run it beside `saga coordinator --no-relay`: any number of `saga relay` processes
    share the partitions of the replies topic through the group <prefix>saga-relay and
    each publishes the outbox rows of the partitions it is assigned. Nothing is
    configured per process. With SAGA_HEALTH_PORT set it serves /healthz and /readyz
    (ready once it has joined the group and no relay failed).
    """
    from saga.health import HealthServer
    from saga.relay import RelayGroupMember
    from saga.store import create_engine

    s = settings()
    configure_logging(s.log_level)
    try:
        config = s.relay_config(
            batch_size=batch_size,
            linger_ms=linger_ms,
            poll_interval_ms=poll_interval_ms,
            prune_after=timedelta(hours=prune_after_hours),
            mode=opt.as_relay_mode(mode),
            crash_after_commit=crash_after_commit,
        )
    except SagaError as exc:
        fail(exc)

    async def main(on_stop: Register) -> None:
        stop = asyncio.Event()
        on_stop(stop.set)
        engine = create_engine(s.database_url)
        member = RelayGroupMember(engine, s.kafka_bootstrap_servers, s.topics, config, stop)
        try:
            logging.getLogger("saga.relay").info(
                "relays following group %s on %s", s.topics.relay_group, s.topics.replies
            )
            async with HealthServer(s.health_host, s.health_port, member.readiness):
                pool = await member.run()
            click.echo(f"saga relay: stopped; published {pool.published} rows", err=True)
        finally:
            await engine.dispose()

    try:
        run_until_signal(main)
    except SagaError as exc:
        fail(exc)
