"""``saga bench``: run the benchmark harness (:mod:`saga.bench`) and print its figures."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click

from saga.cli import _options as opt
from saga.cli._common import configure_logging, fail, settings
from saga.errors import SagaError


@click.command("bench")
@opt.number("--sagas", "-n", default=1000, help="Sagas per measured phase.")
@opt.number("--concurrency", "-c", default=200, help="Most sagas in flight.")
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Offered load in sagas/s (default: flat out).",
)
@opt.number("--steps", default=3)
@opt.number("--payload-bytes", default=100, minimum=0)
@click.option(
    "--failure-ratio",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of sagas whose last step fails (the others are compensated).",
)
@click.option(
    "--database", type=click.Choice(["postgres", "sqlite"]), default="postgres", show_default=True
)
@click.option(
    "--postgres-url",
    default=None,
    help="Server for the bench schemas (default: SAGA_DATABASE_URL if it is "
    "PostgreSQL, else the local one).",
)
@opt.relay_mode("--relay-mode")
@opt.number("--warmup", default=20, help="Unmeasured sagas before each phase.")
@opt.number("--partitions", default=6)
@click.option(
    "--producer-per",
    type=click.Choice(["lane", "process"]),
    default="process",
    show_default=True,
    help="Exactly-once relays: a Kafka producer per outbox lane (partition owned), or one "
    "per process publishing all of its lanes in one transaction.",
)
@click.option(
    "--baseline",
    is_flag=True,
    help="Also measure the same pattern with bare aiokafka (no DB, no engine): "
    "at-least-once, then with a Kafka transaction per batch (exactly-once).",
)
@opt.number(
    "--baseline-commit-interval-ms",
    default=0,
    minimum=0,
    help="Exactly-once baseline: keep each Kafka transaction open this long, adding the "
    "batches polled meanwhile (0: a transaction per polled batch, as the relays do).",
)
@opt.number(
    "--scale-preload",
    default=0,
    minimum=0,
    help="Preload this many finished sagas (PostgreSQL) and rerun.",
)
@opt.number(
    "--timeout", default=600.0, minimum=1, help="Give up on a phase after this many seconds."
)
@opt.folder("--workdir", "Keep process logs (and SQLite files) here.")
@opt.number(
    "--coordinators",
    default=1,
    help="Coordinator processes, sharing the replies partitions.",
)
@click.option(
    "--relay-process",
    is_flag=True,
    help="Run the coordinators' relays in `saga relay` processes (one per coordinator) "
    "instead of inside the coordinators (the default deployment).",
)
@opt.keep("Keep the schemas, topics and files of the run.")
@opt.folder(
    "--profile-dir", "Record every process with py-spy (raw collapsed stacks) into this folder."
)
@opt.json("Print the report as JSON.")
def bench(
    sagas: int,
    concurrency: int,
    rate: float | None,
    steps: int,
    payload_bytes: int,
    failure_ratio: float,
    database: str,
    postgres_url: str | None,
    relay_mode: str,
    warmup: int,
    partitions: int,
    producer_per: str,
    baseline: bool,
    baseline_commit_interval_ms: int,
    scale_preload: int,
    timeout: float,
    workdir: Path | None,
    coordinators: int,
    relay_process: bool,
    keep: bool,
    profile_dir: Path | None,
    as_json: bool,
) -> None:
    """Run N bench sagas (3 participants writing one row each) and report the figures.

    The coordinator (with its relays, or beside a `saga relay` with --relay-process) and
    the three participants run as separate processes against the Kafka broker and
    database of this machine (SAGA_KAFKA_BOOTSTRAP_SERVERS). The database's durability
    settings are printed first (--json: the "database" key).
    """
    from rich.console import Console
    from rich.progress import Progress

    from saga.bench import DEFAULT_POSTGRES_URL, BenchConfig, render, run_bench

    s = settings()
    configure_logging("WARNING")
    url = postgres_url or (
        s.database_url if s.database_url.startswith("postgresql") else DEFAULT_POSTGRES_URL
    )
    try:
        config = BenchConfig(
            sagas=sagas,
            concurrency=concurrency,
            rate=rate,
            steps=steps,
            payload_bytes=payload_bytes,
            failure_ratio=failure_ratio,
            database="sqlite" if database == "sqlite" else "postgres",
            postgres_url=url,
            bootstrap_servers=s.kafka_bootstrap_servers,
            relay_mode=opt.as_relay_mode(relay_mode),
            warmup=warmup,
            partitions=partitions,
            producer_per="process" if producer_per == "process" else "lane",
            baseline=baseline,
            baseline_commit_interval_ms=baseline_commit_interval_ms,
            scale_preload=scale_preload,
            timeout_s=timeout,
            workdir=workdir,
            coordinators=coordinators,
            relay_process=relay_process,
            keep=keep,
            profile_dir=profile_dir,
        )
        console = Console(stderr=True)
        with Progress(console=console, transient=True, disable=as_json) as progress:
            say = (
                None
                if as_json
                else lambda line: console.print(line, highlight=False, soft_wrap=True)
            )
            report = asyncio.run(run_bench(config, progress=progress, say=say))
    except SagaError as exc:
        fail(exc)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        render(report, Console())
