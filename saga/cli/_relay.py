"""``saga relay``: publish the replies partitions this process is assigned, until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import timedelta

import click

from saga.errors import SagaError
from saga.process import tune_gc
from saga.relay import RelayConfig, run_relays
from saga.settings import Settings
from saga.store import create_engine


@click.command("relay")
@click.option("--batch-size", type=click.IntRange(min=1), default=500, show_default=True)
@click.option(
    "--linger-ms",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Least time between two Kafka transactions: while rows keep coming, those written "
    "meanwhile share the next one (after a quiet spell the first rows go out at once).",
)
@click.option(
    "--poll-interval-ms",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Polling interval on SQLite (PostgreSQL is woken by NOTIFY).",
)
@click.option(
    "--prune-after-hours",
    type=click.FloatRange(min=0),
    default=24.0,
    show_default=True,
    help="Delete published rows older than this.",
)
@click.option(
    "--mode",
    type=click.Choice(["exactly_once", "at_least_once"]),
    default="exactly_once",
    show_default=True,
)
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
    configured per process.
    """
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        config = RelayConfig(
            batch_size=batch_size,
            linger_ms=linger_ms,
            poll_interval_ms=poll_interval_ms,
            prune_after=timedelta(hours=prune_after_hours),
            mode="at_least_once" if mode == "at_least_once" else "exactly_once",
            checkpoint_replication_factor=settings.replication_factor,
            crash_after_commit=crash_after_commit,
        )
        tune_gc()
        asyncio.run(_run(settings, config))
    except SagaError as exc:
        raise click.ClickException(exc.message) from exc


async def _run(settings: Settings, config: RelayConfig) -> None:
    engine = create_engine(settings.database_url)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        logging.getLogger("saga.relay").info(
            "relays following group %s on %s", settings.topics.relay_group, settings.topics.replies
        )
        pool = await run_relays(
            engine, settings.kafka_bootstrap_servers, settings.topics, config, stop
        )
        click.echo(f"saga relay: stopped; published {pool.published} rows", err=True)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await engine.dispose()
