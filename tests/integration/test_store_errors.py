"""The store's error mapping: foreign database exceptions become saga errors, once."""

from __future__ import annotations

import time
from urllib.parse import urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]
import pytest
from _scripted import fast_runtime_config
from sqlalchemy import exc as sa_exc

from saga.coordinator import CoordinatorRuntime
from saga.errors import (
    ConcurrencyConflict,
    DuplicateMessage,
    StoreError,
    StoreUnavailable,
)
from saga.store import classify, translate_errors
from saga.topics import Topics


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"pg error {sqlstate}")
        self.sqlstate = sqlstate


def _dbapi(cls: type[sa_exc.DBAPIError], orig: Exception) -> sa_exc.DBAPIError:
    return cls("SELECT 1", {}, orig)


@pytest.mark.parametrize(
    ("exc", "integrity", "expected"),
    [
        (
            _dbapi(sa_exc.IntegrityError, Exception("unique")),
            ConcurrencyConflict,
            ConcurrencyConflict,
        ),
        (_dbapi(sa_exc.IntegrityError, Exception("unique")), DuplicateMessage, DuplicateMessage),
        (_dbapi(sa_exc.OperationalError, Exception("database is locked")), None, StoreUnavailable),
        (_dbapi(sa_exc.InterfaceError, Exception("closed")), None, StoreUnavailable),
        (_dbapi(sa_exc.DBAPIError, _PgError("40001")), None, ConcurrencyConflict),
        (_dbapi(sa_exc.DBAPIError, _PgError("40P01")), None, ConcurrencyConflict),
        (_dbapi(sa_exc.ProgrammingError, _PgError("42P01")), None, StoreUnavailable),
        (_dbapi(sa_exc.DBAPIError, _PgError("57P01")), None, StoreUnavailable),
        (_dbapi(sa_exc.DBAPIError, _PgError("28P01")), None, StoreError),  # bad password
        (_dbapi(sa_exc.DBAPIError, _PgError("28000")), None, StoreError),  # no such role
        (_dbapi(sa_exc.DBAPIError, _PgError("3D000")), None, StoreError),  # no such database
        (sa_exc.TimeoutError("pool exhausted"), None, StoreUnavailable),
        (ConnectionRefusedError(111, "refused"), None, StoreUnavailable),
        (TimeoutError(), None, StoreUnavailable),
        (asyncpg.CannotConnectNowError("starting up"), None, StoreUnavailable),
        (asyncpg.ConnectionDoesNotExistError("gone"), None, StoreUnavailable),
        (_dbapi(sa_exc.ProgrammingError, _PgError("42601")), None, None),  # syntax error: a bug
        (ValueError("not ours"), None, None),
    ],
)
def test_classify_follows_the_mapping_table(
    exc: Exception, integrity: type[StoreError] | None, expected: type[StoreError] | None
) -> None:
    kwargs = {"integrity": integrity} if integrity is not None else {}
    assert classify(exc, **kwargs) is expected


def test_translate_errors_raises_from_the_original_with_context() -> None:
    orig = _dbapi(sa_exc.IntegrityError, Exception("duplicate key"))
    with pytest.raises(DuplicateMessage) as info:  # noqa: SIM117
        with translate_errors("enqueue", integrity=DuplicateMessage, message_id="m-1"):
            raise orig
    assert info.value.__cause__ is orig
    assert info.value.message_id == "m-1"
    assert "enqueue failed" in str(info.value)


def test_translate_errors_leaves_other_errors_alone() -> None:
    with pytest.raises(KeyError), translate_errors():
        raise KeyError("x")
    conflict = ConcurrencyConflict("already ours")
    with pytest.raises(ConcurrencyConflict) as info, translate_errors():
        raise conflict
    assert info.value is conflict


@pytest.mark.postgres
@pytest.mark.parametrize("wrong", ["database", "user"])
async def test_a_refused_login_fails_at_once_and_names_what_to_fix(
    postgres_url: str, wrong: str
) -> None:
    # Waiting cannot fix a wrong database name or user: start-up must not retry it.
    parts = urlsplit(postgres_url)
    if wrong == "database":
        parts = parts._replace(path="/no_such_database")
    else:
        parts = parts._replace(netloc=f"no_such_user@{parts.hostname}:{parts.port}")
    url = urlunsplit(parts)
    config = fast_runtime_config(url, "127.0.0.1:1", Topics(prefix="refused."), partitions=1)
    started = time.monotonic()
    with pytest.raises(StoreError) as info:
        async with CoordinatorRuntime(config, []):
            pass
    assert time.monotonic() - started < 5, "a refused login was retried"
    assert not info.value.retriable
    assert "check the user, the password and the database name" in str(info.value)
