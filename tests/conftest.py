"""Shared fixtures: a real Kafka broker and real databases (SQLite and PostgreSQL).

Where the servers come from, in order:
1. ``KAFKA_BOOTSTRAP_SERVERS`` / ``SAGA_DATABASE_URL`` from the environment;
2. testcontainers, when a Docker engine answers;
3. ``deploy/local/up --postgres`` (Kafka jars from Maven Central, PostgreSQL from Debian).

Under ``CI=true`` a server that cannot be had is a test failure with the reason, never a
skip. Every test gets fresh topic names (deleted when the session ends, see
``_test_topics``) and a fresh database schema.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import NoReturn

import _test_topics
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _unavailable(what: str, reason: str) -> NoReturn:
    msg = f"{what} is not available: {reason}. Run `deploy/local/up --postgres` and retry."
    if IN_CI:
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def _docker_engine_answers() -> bool:
    try:
        res = subprocess.run(["docker", "info"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0


_local_env: dict[str, str] | None = None


def _local_up() -> dict[str, str]:
    global _local_env
    if _local_env is None:
        res = subprocess.run(
            [str(ROOT / "deploy" / "local" / "up"), "--postgres"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if res.returncode != 0:
            raise RuntimeError(res.stderr[-2000:])
        _local_env = dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)
    return _local_env


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a real Kafka broker."""
    if env := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield from _cleaned_up(env)
        return
    if _docker_engine_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
        return
    try:
        bootstrap = _local_up()["KAFKA_BOOTSTRAP_SERVERS"]
    except (RuntimeError, KeyError, OSError, subprocess.TimeoutExpired) as exc:
        _unavailable("Kafka", str(exc))
    yield from _cleaned_up(bootstrap)


def _cleaned_up(bootstrap: str) -> Iterator[str]:
    """Serve ``bootstrap``; delete earlier runs' leftover topics before, this run's after."""
    _test_topics.delete_stale(bootstrap)
    yield bootstrap
    _test_topics.delete_handed_out(bootstrap)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """SQLAlchemy URL (asyncpg) of a real PostgreSQL database."""
    if (env := os.environ.get("SAGA_DATABASE_URL")) and env.startswith("postgresql"):
        yield env
        return
    if _docker_engine_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver="asyncpg") as pg:
            yield pg.get_connection_url()
        return
    try:
        yield _local_up()["SAGA_DATABASE_URL"]
    except (RuntimeError, KeyError, OSError, subprocess.TimeoutExpired) as exc:
        _unavailable("PostgreSQL", str(exc))


@pytest.fixture
def topic_prefix() -> str:
    """A fresh topic-name prefix, so tests never see each other's messages."""
    return _test_topics.new_prefix()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database on each backend.

    SQLite: a new file. PostgreSQL: a new schema, selected through the ``options``
    query parameter, dropped afterwards.
    """
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'saga.db'}"
        return
    base: str = request.getfixturevalue("postgres_url")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    _psql(base, f'CREATE SCHEMA "{schema}"')
    try:
        sep = "&" if "?" in base else "?"
        yield f"{base}{sep}search_path={schema}"
    finally:
        _psql(base, f'DROP SCHEMA "{schema}" CASCADE')


def _psql(url: str, sql: str) -> None:
    import asyncio

    async def run() -> None:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.execute(text(sql))
        finally:
            await engine.dispose()

    asyncio.run(run())


@pytest.fixture
async def db_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An async SQLAlchemy engine on a fresh database (both backends)."""
    from saga.store import create_engine

    engine = create_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()
