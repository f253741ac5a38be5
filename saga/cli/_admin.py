"""``saga admin``: operator commands (``saga admin topics`` creates the Kafka topics)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from saga.cli._common import load_definitions
from saga.definition import SagaDefinition, load_file
from saga.errors import SagaError, StoreError
from saga.kafka import deployment_topics, ensure_topics
from saga.settings import Settings


@click.group("admin")
def admin() -> None:
    """Operator commands."""


def _database_exists(database_url: str) -> bool:
    """False for a SQLite file that is not there (never create one just to look inside)."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    return url.get_backend_name() != "sqlite" or Path(url.database or "").exists()


async def _registered(database_url: str) -> list[SagaDefinition]:
    """Every definition registered in the store (none when it has no schema yet)."""
    from saga.coordinator import DefinitionCache
    from saga.store import SqlStore, create_engine

    engine = create_engine(database_url)
    try:
        store = SqlStore(engine)
        cache = DefinitionCache(store)
        found = []
        for name, version in await store.list_definitions():
            d = await cache.get(name, version)
            if d is not None:
                found.append(d)
        return found
    except StoreError:
        return []
    finally:
        await engine.dispose()


@admin.command("topics")
@click.option(
    "--participant",
    "participants",
    multiple=True,
    metavar="NAME",
    help="Create <prefix><NAME>.commands (repeatable).",
)
@click.option(
    "--definitions",
    "definition_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Also create the commands topics of every participant of this YAML/JSON "
    "definition (repeatable).",
)
def topics(participants: tuple[str, ...], definition_files: tuple[Path, ...]) -> None:
    """Create the deployment's topics (existing topics are left as they are).

    Replies, events, dlq, the compacted relay checkpoints, and one commands topic per
    participant — given with --participant, in --definitions files, in SAGA_DEFINITIONS,
    or registered in the database — with SAGA_PARTITIONS partitions and
    SAGA_REPLICATION_FACTOR replicas.
    """
    settings = Settings()
    names = set(participants)
    try:
        definitions = [load_file(file) for file in definition_files]
        definitions += load_definitions(settings.definitions)
        if _database_exists(settings.database_url):
            definitions += asyncio.run(_registered(settings.database_url))
        for definition in definitions:
            names.update(s.participant for s in definition.steps if s.participant)
        specs = deployment_topics(
            settings.topics,
            names,
            partitions=settings.partitions,
            replication_factor=settings.replication_factor,
        )
        created = set(asyncio.run(ensure_topics(settings.kafka_bootstrap_servers, specs)))
        registered = (
            asyncio.run(_register_partitions(settings))
            if _database_exists(settings.database_url)
            else None
        )
    except SagaError as exc:
        raise click.ClickException(exc.message) from exc
    for spec in specs:
        status = "created" if spec.name in created else "exists"
        click.echo(f"{status:8} {spec.name} (partitions={spec.partitions})")
    if registered is None:
        click.echo(
            "the database has no saga schema yet: run `saga db upgrade`, then this command"
            " again, so that sagas can be started before the first coordinator runs"
        )
    else:
        click.echo(f"registered {registered} partitions of {settings.topics.replies}")


async def _register_partitions(settings: Settings) -> int | None:
    """Record the replies topic's partition count (``None``: no schema to record it in)."""
    from saga.coordinator import register_replies_partitions
    from saga.store import SqlStore, create_engine, current_revision

    engine = create_engine(settings.database_url)
    try:
        if await current_revision(engine) is None:
            return None
        return await register_replies_partitions(
            SqlStore(engine),
            settings.kafka_bootstrap_servers,
            settings.topics,
            settings.topics.coordinator_group,
        )
    finally:
        await engine.dispose()
