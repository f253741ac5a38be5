"""Create async SQLAlchemy engines for the saga store (SQLite or PostgreSQL)."""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any, Final

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine
from sqlalchemy.pool import NullPool

from saga.errors import ConfigError
from saga.store._records import JsonText

DEFAULT_URL = "sqlite+aiosqlite:///saga.db"
"""The embedded default: a SQLite file in the working directory."""


def json_text(value: Any) -> str:
    """``value`` as JSON text: the engines' JSON serializer.

    A :class:`JsonText` is encoded already (a model's own ``model_dump_json()``) and
    passes as it is.
    """
    return value if isinstance(value, JsonText) else json.dumps(value)


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """Create an async engine for a store URL.

    Supported: ``sqlite+aiosqlite:///path`` and ``postgresql+asyncpg://...``. A
    ``search_path`` query parameter on a PostgreSQL URL selects a schema (used by the
    tests to give each test a fresh schema). SQLite runs in WAL mode with a busy
    timeout so the coordinator, relay and API can share one file, and with
    ``PRAGMA synchronous=FULL``: every commit is on disk before it returns, so a power
    loss forgets nothing committed. A ``synchronous`` query parameter on a SQLite URL
    (``sqlite+aiosqlite:///saga.db?synchronous=normal``; ``off``, ``normal``, ``full``
    or ``extra``) selects another level for that engine: ``normal`` skips the sync at
    each commit, and a power loss (not a crash of the application) may then roll back
    the last committed transactions. :func:`saga.store.durability` tells what a
    database runs with.

    PostgreSQL connections are not pinged before each use (``pool_pre_ping``): a ping
    is one more round trip per transaction, and the loops that use the engine retry a
    failed batch anyway. After a database restart the first transaction on a stale
    connection fails with ``StoreUnavailable``; SQLAlchemy then discards the pool's
    connections and the retry gets a fresh one. Servers that answer requests (the
    HTTP API) pass ``pool_pre_ping=True`` so a request never meets a stale connection.

    Raises:
        ConfigError: the URL names a driver the store does not support, or an unknown
            ``synchronous`` level.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        shown = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)  # never print a password
        raise ConfigError(f"cannot read the database URL {shown!r}: {SUPPORTED_URLS}") from exc
    backend = parsed.get_backend_name()
    kwargs.setdefault("json_serializer", json_text)
    if backend == "postgresql":
        if parsed.get_driver_name() != "asyncpg":
            parsed = parsed.set(drivername="postgresql+asyncpg")
        search_path = parsed.query.get("search_path")
        connect_args: dict[str, Any] = dict(kwargs.pop("connect_args", {}))
        if search_path:
            parsed = parsed.difference_update_query(["search_path"])
            settings = dict(connect_args.get("server_settings", {}))
            settings["search_path"] = str(search_path)
            connect_args["server_settings"] = settings
        # Prepared statements cached per connection (SQLAlchemy's default is 100). A
        # participant batch runs one SAVEPOINT/RELEASE pair per command, each pair with
        # its own name: with 100 commands in a batch a small cache evicts (and
        # re-prepares) every statement, the handlers' included, on every batch.
        connect_args.setdefault("prepared_statement_cache_size", 1000)
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 10)
        kwargs.setdefault("pool_pre_ping", False)
        return _create_async_engine(parsed, connect_args=connect_args, **kwargs)
    if backend == "sqlite":
        if parsed.get_driver_name() != "aiosqlite":
            parsed = parsed.set(drivername="sqlite+aiosqlite")
        synchronous = _sqlite_synchronous(parsed.query.get("synchronous"))
        parsed = parsed.difference_update_query(["synchronous"])
        # One connection per use: SQLite serialises writers anyway, and pooled
        # aiosqlite threads outliving the loop cause shutdown warnings.
        kwargs.setdefault("poolclass", NullPool)
        engine = _create_async_engine(parsed, **kwargs)

        def pragmas(dbapi_conn: Any, _record: Any) -> None:
            _sqlite_pragmas(dbapi_conn, synchronous)

        event.listen(engine.sync_engine, "connect", pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin_immediate)
        return engine
    raise ConfigError(
        f"unsupported database URL {parsed.render_as_string(hide_password=True)!r}: "
        + SUPPORTED_URLS
    )


SUPPORTED_URLS: Final = "use sqlite+aiosqlite:///FILE or postgresql+asyncpg://USER@HOST:PORT/DB"
"""What the store accepts, for error messages."""

SQLITE_SYNCHRONOUS: Final = ("OFF", "NORMAL", "FULL", "EXTRA")
"""The levels of ``PRAGMA synchronous`` (0 to 3), weakest first."""

DEFAULT_SQLITE_SYNCHRONOUS: Final = "FULL"
"""With WAL: every commit is durable, also on power loss."""


def single_statement_engine(engine: AsyncEngine) -> AsyncEngine:
    """``engine`` for work that is ONE statement, atomic on its own.

    On PostgreSQL it runs in autocommit mode: no ``BEGIN`` and ``COMMIT`` round trips
    around the statement (they were two thirds of the relay's database round trips).
    SQLite keeps its transaction and so its write lock.
    """
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return engine


def _sqlite_synchronous(value: str | tuple[str, ...] | None) -> str:
    if value is None:
        return DEFAULT_SQLITE_SYNCHRONOUS
    level = value[-1] if isinstance(value, tuple) else value
    if level.upper() not in SQLITE_SYNCHRONOUS:
        raise ConfigError(
            f"unknown SQLite synchronous level {level!r} in the database URL: use "
            + ", ".join(s.lower() for s in SQLITE_SYNCHRONOUS)
        )
    return level.upper()


def _sqlite_pragmas(dbapi_conn: Any, synchronous: str) -> None:
    # Let SQLAlchemy issue BEGIN itself (pysqlite's implicit transactions are off).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")
    try:
        cur.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError as exc:
        # Several processes opening a new file at once: SQLite refuses the switch to
        # WAL with "database is locked" (no busy wait) while another connection makes
        # it. The mode is persistent, so whoever wins sets it for everyone.
        if "locked" not in str(exc):
            raise
    cur.execute(f"PRAGMA synchronous={synchronous}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin_immediate(conn: Any) -> None:
    # Take the write lock at BEGIN: a deferred transaction that reads and then writes
    # can fail with "database is locked" instead of waiting for the busy timeout.
    conn.exec_driver_sql("BEGIN IMMEDIATE")
