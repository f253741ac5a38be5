"""Alembic environment of the saga store.

:func:`saga.store.upgrade` runs the migrations on a connection of the application's
own async engine: it calls ``command.upgrade`` inside ``AsyncConnection.run_sync`` and
hands the (sync-facing) connection over in ``config.attributes["connection"]``. So the
same code path serves ``sqlite+aiosqlite`` and ``postgresql+asyncpg``, and the
``search_path`` query parameter understood by :func:`saga.store.create_engine` selects
the PostgreSQL schema the tables go into.

Without a connection (someone running the ``alembic`` command line against this
directory), the environment builds an engine from the ``sqlalchemy.url`` option.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from saga.errors import ConfigError
from saga.store._engine import create_engine
from saga.store.tables import metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        # SQLite cannot ALTER most things; later revisions use batch mode there.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_url(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run)
    finally:
        await engine.dispose()


def _main() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    if not url:
        raise ConfigError("no connection and no sqlalchemy.url to run the migrations on")
    asyncio.run(_run_url(url))


_main()
