"""The store's error mapping: foreign database exceptions become saga errors, once."""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import exc as sa_exc

from saga.errors import (
    ConcurrencyConflict,
    DuplicateMessage,
    StoreError,
    StoreUnavailable,
)
from saga.store import classify, translate_errors


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
