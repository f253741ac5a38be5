"""``saga graph`` and ``saga lint``: look at and check saga definitions."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from saga.cli._common import fail, load_definitions, settings
from saga.definition import SagaDefinition, lint_warnings, load_file, to_mermaid
from saga.engine import table_to_mermaid
from saga.errors import DefinitionError, SagaError


def builtin_definitions() -> list[SagaDefinition]:
    """Definitions shipped with the product (the example order-placement saga)."""
    from saga.definition.examples.order_placement import ORDER_PLACEMENT

    return [ORDER_PLACEMENT]


async def _stored(database_url: str, name: str, version: int | None) -> SagaDefinition | None:
    from saga.coordinator import DefinitionCache
    from saga.store import SqlStore, create_engine

    engine = create_engine(database_url)
    try:
        cache = DefinitionCache(SqlStore(engine))
        return await cache.get(name, version) if version is not None else await cache.latest(name)
    finally:
        await engine.dispose()


@click.command("graph")
@click.argument("name", required=False)
@click.option("--version", "version", type=int, default=None, help="Definition version.")
@click.option("--states", is_flag=True, help="Draw the saga status table instead.")
def graph(name: str | None, version: int | None, states: bool) -> None:
    """Print a Mermaid flowchart of a definition (NAME, or a YAML/JSON file).

    Forward edges are solid, compensation edges dashed. Definitions are looked up in
    SAGA_DEFINITIONS, the built-in examples, then the database.
    """
    if states:
        if name:
            raise click.UsageError(
                "--states draws the status table, which every saga shares; leave out"
                f" {name!r}, or leave out --states to draw that definition"
            )
        click.echo(table_to_mermaid(), nl=False)
        return
    if not name:
        raise click.UsageError("give a definition NAME or FILE (or --states)")
    try:
        if Path(name).is_file():
            click.echo(to_mermaid(load_file(Path(name))), nl=False)
            return
        s = settings()
        candidates = [*load_definitions(s.definitions), *builtin_definitions()]
        matches = [
            d for d in candidates if d.name == name and (version is None or d.version == version)
        ]
        found = max(matches, key=lambda d: d.version) if matches else None
        if found is None:
            found = asyncio.run(_stored(s.database_url, name, version))
    except SagaError as exc:
        fail(exc)
    if found is None:
        known = ", ".join(sorted({d.name for d in candidates})) or "none"
        raise click.ClickException(
            f"no definition called {name!r}"
            + (f" with version {version}" if version is not None else "")
            + f". Known here: {known}. Set SAGA_DEFINITIONS or pass a YAML file."
        )
    click.echo(to_mermaid(found), nl=False)


@click.command("lint")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def lint(files: tuple[Path, ...]) -> None:
    """Validate YAML/JSON saga definitions; errors name the offending field's path."""
    bad = 0
    for path in files:
        try:
            d = load_file(path)
        except DefinitionError as exc:
            bad += 1
            where = f"{exc.path}: " if exc.path else ""
            click.echo(f"{path}: {where}{exc.reason}", err=True)
        except OSError as exc:
            bad += 1
            click.echo(f"{path}: cannot read: {exc.strerror}", err=True)
        else:
            click.echo(
                f"{path}: ok ({d.name} v{d.version}, {len(d.steps)} steps, {d.content_hash[:12]})"
            )
            for warning in lint_warnings(d):
                click.echo(f"{path}: warning: {warning}", err=True)
    if bad:
        raise click.ClickException(
            f"{bad} of {len(files)} definition(s) invalid; fix the fields named above"
        )
