"""Schema migrations (Alembic, shipped in ``saga/store/migrations``), run on an async engine.

:func:`upgrade` opens one transaction on the application's own engine and runs Alembic's
``command.upgrade`` inside ``AsyncConnection.run_sync``, handing the connection to the
migration environment through ``config.attributes["connection"]`` (see
``migrations/env.py``). So SQLite and PostgreSQL, including a ``search_path`` schema,
migrate exactly as they are later used. On PostgreSQL an advisory lock serialises
processes that start at the same time (coordinator, relay and API all upgrade).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from saga.store._errors import translate_errors

MIGRATIONS: Final = Path(__file__).with_name("migrations")
"""The Alembic script directory shipped inside the package."""

_LOCK_ID: Final = 0x5A6A_0001
"""PostgreSQL advisory lock taken while migrating (processes may start at once)."""


async def lock_schema(conn: AsyncConnection) -> None:
    """Serialize schema changes in ``conn``'s transaction (PostgreSQL advisory lock).

    Replicas start at once; two ``CREATE TABLE IF NOT EXISTS`` (or migrations) racing
    each other fail on PostgreSQL's catalog. No-op elsewhere (SQLite writers queue).
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(text(f"SELECT pg_advisory_xact_lock({_LOCK_ID})"))


def alembic_config(connection: Any = None) -> Config:
    """An Alembic config for the packaged migrations (optionally bound to a connection)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The newest revision the packaged migrations know."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships 0001
        raise RuntimeError(f"no migrations in {MIGRATIONS}")
    return head


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the database schema up to ``revision`` (idempotent; one transaction).

    Args:
        engine: From :func:`saga.store.create_engine`.
        revision: Target revision; the newest by default.

    Raises:
        StoreUnavailable: The database cannot be reached.
    """

    def run(sync_conn: Any) -> None:
        command.upgrade(alembic_config(sync_conn), revision)

    with translate_errors("migrate the schema"):
        async with engine.begin() as conn:
            await lock_schema(conn)
            await conn.run_sync(run)


async def current_revision(engine: AsyncEngine) -> str | None:
    """The schema revision the database is at (``None`` before the first upgrade).

    Raises:
        StoreUnavailable: The database cannot be reached.
    """

    def read(sync_conn: Any) -> str | None:
        rev: str | None = MigrationContext.configure(sync_conn).get_current_revision()
        return rev

    with translate_errors("read the schema revision"):
        async with engine.connect() as conn:
            return await conn.run_sync(read)
