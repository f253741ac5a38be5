"""``saga db``: manage the saga store's schema (``saga db upgrade``, ``saga db current``)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import click

from saga.cli._common import fail, settings
from saga.errors import SagaError
from saga.store import create_engine, current_revision, head_revision, upgrade


async def _settled(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main``; on failure, let driver threads finish before the loop closes.

    aiosqlite stops the worker thread of a failed connection without awaiting it; if
    ``asyncio.run`` closes the loop first, the thread dies with a traceback on stderr.
    """
    try:
        await main
    except SagaError:
        await asyncio.sleep(0.1)
        raise


@click.group("db")
def db() -> None:
    """Manage the database schema of the saga store (SAGA_DATABASE_URL)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target schema revision.")
def upgrade_command(revision: str) -> None:
    """Create or migrate the tables of the saga store (safe to run again)."""
    url = settings().database_url

    async def run() -> None:
        engine = create_engine(url)
        try:
            shown = engine.url.render_as_string(hide_password=True)
            click.echo(f"database: {shown}")
            before = await current_revision(engine)
            target = head_revision() if revision == "head" else revision
            click.echo(f"schema revision: {before or 'none (empty database)'}")
            if before == target:
                click.echo(f"already at revision {target}: nothing to do")
                return
            click.echo(f"upgrading to revision {target} ...")
            await upgrade(engine, revision)
            click.echo(f"done: schema at revision {await current_revision(engine)}")
        finally:
            await engine.dispose()

    try:
        asyncio.run(_settled(run()))
    except SagaError as exc:
        fail(exc)


@db.command("current")
def current_command() -> None:
    """Print the schema revision of the database and the newest one this version knows."""
    url = settings().database_url

    async def run() -> None:
        engine = create_engine(url)
        try:
            rev = await current_revision(engine)
        finally:
            await engine.dispose()
        head = head_revision()
        state = "up to date" if rev == head else "run `saga db upgrade`"
        click.echo(f"database: {rev or 'none'}; newest: {head} ({state})")

    try:
        asyncio.run(_settled(run()))
    except SagaError as exc:
        fail(exc)
