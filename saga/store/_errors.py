"""Translate SQLAlchemy and driver exceptions into :mod:`saga.errors`, once, at the edge.

Everything in :mod:`saga.store` that talks to the database runs inside
:func:`translate_errors`; nothing above the store ever sees ``sqlalchemy.*``,
``asyncpg.*`` or ``sqlite3.*`` exceptions. The rules, first match wins:

=====================================================  ==================================
foreign exception                                      saga error
=====================================================  ==================================
SQLSTATE 40001 / 40P01 (serialization, deadlock)       ``ConcurrencyConflict`` (retry)
SQLSTATE 42P01 (table missing: schema not migrated)    ``StoreUnavailable``
SQLSTATE class 08, 53, 57P (connection, resources)     ``StoreUnavailable``
SQLSTATE class 28, 3D000 (login refused, no database)  ``StoreError`` (not retried)
``sqlalchemy.exc.IntegrityError``                      the caller's ``integrity`` class
``DBAPIError`` that invalidated its connection         ``StoreUnavailable``
``OperationalError``, ``InterfaceError``, pool timeout  ``StoreUnavailable``
asyncpg connection errors (raised outside SQLAlchemy)  ``StoreUnavailable``
``OSError`` (refused, reset, timed out, no such file)  ``StoreUnavailable``
anything else                                          re-raised untouched
=====================================================  ==================================

A unique-key violation means different things per statement: a saga inserted twice is
a lost race (``ConcurrencyConflict``, the default), a message id stored twice is a
duplicate (``DuplicateMessage``). Callers that know which it is say so with
``integrity=``; statements where a duplicate is harmless avoid the error altogether
with ``ON CONFLICT DO NOTHING``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import exc as sa_exc

from saga.errors import ConcurrencyConflict, SagaError, StoreError, StoreUnavailable

SQLSTATE_MAP: Final[tuple[tuple[str, type[StoreError]], ...]] = (
    ("40001", ConcurrencyConflict),  # serialization_failure
    ("40P01", ConcurrencyConflict),  # deadlock_detected
    ("42P01", StoreUnavailable),  # undefined_table: run `saga db upgrade`
    ("08", StoreUnavailable),  # connection_exception (class)
    ("53", StoreUnavailable),  # insufficient_resources, e.g. too_many_connections
    ("57P", StoreUnavailable),  # admin_shutdown, crash_shutdown, cannot_connect_now
    ("28", StoreError),  # invalid_authorization_specification, invalid_password: fix the URL
    ("3D000", StoreError),  # invalid_catalog_name (no such database): fix the URL
)
"""``(SQLSTATE prefix, saga error)`` pairs, checked before the type table."""

INTEGRITY: Final = sa_exc.IntegrityError
"""Mapped onto the ``integrity`` class the caller passes to :func:`translate_errors`."""

ERROR_MAP: Final[tuple[tuple[tuple[type[BaseException], ...], type[StoreError]], ...]] = (
    (
        (
            sa_exc.OperationalError,
            sa_exc.InterfaceError,
            sa_exc.DisconnectionError,
            sa_exc.TimeoutError,  # the connection pool is exhausted
            # A connection that died inside a transaction, used again: the transaction
            # is gone; a new one (on a new connection) is the retry.
            sa_exc.PendingRollbackError,
        ),
        StoreUnavailable,
    ),
    (
        (
            asyncpg.PostgresConnectionError,
            asyncpg.InterfaceError,
            asyncpg.CannotConnectNowError,
            asyncpg.TooManyConnectionsError,
        ),
        StoreUnavailable,
    ),
    # Refused or reset connections, timeouts (TimeoutError is an OSError), DNS
    # failures, unwritable SQLite paths: the driver may raise them unwrapped.
    ((OSError,), StoreUnavailable),
)
"""``(foreign exception types, saga error)`` pairs; the first ``isinstance`` match wins."""


def _sqlstate(exc: BaseException) -> str:
    """The SQLSTATE of a database error (SQLAlchemy's wrapper or the driver's), or ``""``."""
    orig = getattr(exc, "orig", None)
    for candidate in (exc, orig, getattr(orig, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str) and code:
            return code
    return ""


def classify(
    exc: BaseException, *, integrity: type[StoreError] = ConcurrencyConflict
) -> type[StoreError] | None:
    """The saga error ``exc`` becomes, or ``None`` when it is not the store's to translate.

    Args:
        exc: An exception raised while talking to the database.
        integrity: What a unique-key (or other integrity) violation means here.
    """
    state = _sqlstate(exc)
    if state:
        for prefix, target in SQLSTATE_MAP:
            if state.startswith(prefix):
                return target
    if isinstance(exc, INTEGRITY):
        return integrity
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return StoreUnavailable
    for foreign, ours in ERROR_MAP:
        if isinstance(exc, foreign):
            return ours
    return None


def _describe(operation: str, exc: BaseException, target: type[StoreError]) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    hint = ""
    state = _sqlstate(exc)
    if target is StoreUnavailable and state == "42P01":
        hint = " (the schema is missing: run `saga db upgrade`)"
    elif state.startswith("28") or state == "3D000":
        hint = " (check the user, the password and the database name of the database URL)"
    return f"{operation} failed: {type(orig).__name__}: {text}{hint}"[:500]


@contextmanager
def translate_errors(
    operation: str = "database operation",
    *,
    integrity: type[StoreError] = ConcurrencyConflict,
    saga_id: str | None = None,
    message_id: str | None = None,
) -> Iterator[None]:
    """Re-raise database errors raised inside the block as :mod:`saga.errors`.

    Args:
        operation: What was being done, for the message (``"save sagas"``).
        integrity: The error a unique-key violation in the block stands for.
        saga_id: Attached to the raised error, when the block concerns one saga.
        message_id: Attached to the raised error, when the block concerns one message.

    Raises:
        StoreError: A subclass chosen by :func:`classify`, ``from`` the original.
    """
    try:
        yield
    except SagaError:
        raise
    except Exception as exc:
        target = classify(exc, integrity=integrity)
        if target is None:
            raise
        raise target(
            _describe(operation, exc, target), saga_id=saga_id, message_id=message_id
        ) from exc
