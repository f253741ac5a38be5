"""``saga chaos``: the fault-injection run, and ``saga chaos participants`` (its services).

``saga chaos --sagas N --seed S [--brokers 3] [--postgres-kills K] [--json]`` drives N
order-placement sagas through real coordinator, relay and participant processes while
killing and restarting them (with ``--postgres-kills`` also the run's own PostgreSQL
server; see :mod:`saga.chaos`), then prints the invariant figures and exits 1 when any
is non-zero. It prints the database's durability settings first (``--json``: the
``database`` key). ``saga chaos participants`` is the participants process it starts:
the four example services with the reply faults of ``SAGA_FAULTS``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click

from saga.cli import _options as opt
from saga.cli._common import configure_logging, fail, settings
from saga.errors import ConfigError, SagaError
from saga.process import Register, run_until_signal


@click.group("chaos", invoke_without_command=True)
@opt.number("--sagas", default=200)
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of everything random.")
@click.option(
    "--brokers",
    type=click.Choice(["1", "3"]),
    default="1",
    show_default=True,
    help="3: use the local 3-broker cluster (deploy/local/up --brokers 3) and restart a broker.",
)
@opt.number("--rate", default=8.0, minimum=0.1, help="Sagas started per second.")
@opt.number("--deadline", default=900.0, minimum=30, help="Global time limit in seconds.")
@opt.folder("--workdir", "Where the process logs go.", default_name="saga-chaos")
@opt.number(
    "--coordinators",
    default=1,
    help="Coordinator replicas (2 or more: each runs the relays of its partitions, and one "
    "more coordinator is added and removed during the run).",
)
@opt.number(
    "--participant-replicas",
    default=1,
    help="Replicas of the participants process (2 or more: one of them is killed inside a "
    "relay transaction).",
)
@opt.number(
    "--postgres-kills",
    default=0,
    minimum=0,
    help="SIGKILL the PostgreSQL postmaster this many times (restarted after a pause); the "
    "run then brings a durable PostgreSQL of its own (own data directory and port, stopped "
    "at the end) instead of SAGA_DATABASE_URL.",
)
@click.option(
    "--producer-per",
    type=click.Choice(["lane", "process", "mixed"]),
    default=None,
    help="The relays' producers: one per lane, one per process, or both in turn (as in a "
    "rolling change). Default: SAGA_RELAY_PRODUCER_PER.",
)
@opt.keep("Keep the PostgreSQL schemas and the topics of the run.")
@opt.json("Print the figures as JSON.")
@click.pass_context
def chaos(
    ctx: click.Context,
    sagas: int,
    seed: int,
    brokers: str,
    rate: float,
    deadline: float,
    workdir: Path,
    coordinators: int,
    participant_replicas: int,
    postgres_kills: int,
    producer_per: str | None,
    keep: bool,
    as_json: bool,
) -> None:
    """Kill and restart the coordinator, relay, participants (and a broker) under load.

    Needs PostgreSQL (SAGA_DATABASE_URL=postgresql+asyncpg://..., or --postgres-kills) and
    Kafka (SAGA_KAFKA_BOOTSTRAP_SERVERS); exits 1 when an invariant figure is not 0.
    """
    if ctx.invoked_subcommand is not None:
        return
    from saga.chaos import ChaosConfig, run_chaos

    s = settings()
    if not postgres_kills and not s.database_url.startswith("postgresql"):
        fail(
            ConfigError(
                "saga chaos needs PostgreSQL: set SAGA_DATABASE_URL=postgresql+asyncpg://..."
            )
        )
    config = ChaosConfig(
        postgres_url=s.database_url,
        bootstrap_servers=s.kafka_bootstrap_servers,
        sagas=sagas,
        seed=seed,
        brokers=int(brokers),
        start_rate=rate,
        deadline_s=deadline,
        workdir=workdir,
        coordinators=coordinators,
        participant_replicas=participant_replicas,
        postgres_kills=postgres_kills,
        keep_schemas=keep,
        producer_per=producer_per or s.relay_producer_per,
    )
    try:
        result = asyncio.run(run_chaos(config, progress=lambda line: click.echo(line, err=True)))
    except (SagaError, TimeoutError) as exc:
        raise click.ClickException(f"chaos run failed: {exc}") from exc
    if as_json:
        # Figures only, every one a count that must be 0 (but `sagas`): scripts check
        # them all. The database's durability went to stderr with the progress lines.
        click.echo(json.dumps(dict(result.report.figures())))
    else:
        _print(result)
    if not result.ok:
        for name, examples in result.report.examples.items():
            click.echo(f"{name}: {'; '.join(examples)}", err=True)
        raise SystemExit(1)


def _print(result: object) -> None:
    from rich.console import Console
    from rich.table import Table

    from saga.chaos import ChaosResult

    assert isinstance(result, ChaosResult)
    table = Table(title=f"chaos run ({result.elapsed_s:.0f} s, topics {result.prefix}*)")
    table.add_column("invariant")
    table.add_column("value", justify="right")
    for name, value in result.report.figures().items():
        style = "" if name == "sagas" or value == 0 else "[red]"
        table.add_row(name, f"{style}{value}")
    console = Console(file=sys.stdout)
    console.print(table)
    outcomes = ", ".join(f"{k}={v}" for k, v in result.report.outcomes.items())
    kills = ", ".join(f"{k}={v}" for k, v in sorted(result.kills.items())) or "none"
    console.print(f"outcomes: {outcomes}")
    console.print(
        f"started through the starts topic (each request sent twice): {result.kafka_starts}"
    )
    console.print(f"kills: {kills}; unexpected exits: {result.unexpected_exits or 'none'}")
    if result.database is not None:
        console.print(f"database: {result.database.describe()}", soft_wrap=True)


@chaos.command("participants")
@click.option(
    "--faults",
    envvar="SAGA_FAULTS",
    default="",
    show_default=True,
    help="Reply faults, e.g. seed=1,duplicate=0.1,delay_ms=200,reorder=1 (env SAGA_FAULTS).",
)
@opt.number(
    "--crash-in-transaction-after",
    default=None,
    hidden=True,
    envvar="SAGA_RELAY_CRASH_IN_TRANSACTION_AFTER",
    help="Fault injection: SIGKILL inside a relay's N-th Kafka transaction.",
)
def participants(faults: str, crash_in_transaction_after: int | None) -> None:
    """Run the four example services with fault-injecting replies until SIGTERM."""
    from saga.chaos import parse_faults, run_faulty_services

    s = settings()
    configure_logging(s.log_level)
    try:
        reply_faults = parse_faults(faults)
    except ConfigError as exc:
        fail(exc)

    async def main(on_stop: Register) -> None:
        stop = asyncio.Event()
        on_stop(stop.set)
        await run_faulty_services(
            database_url=s.database_url,
            bootstrap_servers=s.kafka_bootstrap_servers,
            topics=s.topics,
            faults=reply_faults,
            stop=stop,
            partitions=s.partitions,
            replication_factor=s.replication_factor,
            crash_in_transaction_after=crash_in_transaction_after,
        )

    try:
        run_until_signal(main)
    except SagaError as exc:
        fail(exc)
