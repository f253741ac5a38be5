"""Translate aiokafka exceptions into :mod:`saga.errors`, once, at the adapter edge.

Nothing above :mod:`saga.kafka` catches ``aiokafka.*``: every call into aiokafka runs
inside :func:`translate_kafka_errors`, which looks the exception up in
:data:`KAFKA_ERROR_MAP` (first match wins, so specific classes come first) and raises
the saga error ``from`` the original.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from aiokafka import errors as kafka_errors

from saga.errors import ProducerFenced, TransportError

KAFKA_ERROR_MAP: tuple[tuple[type[Exception], type[TransportError]], ...] = (
    # A newer producer with our transactional id exists (or our transaction timed out
    # on the broker): this producer can never write again.
    (kafka_errors.ProducerFenced, ProducerFenced),
    (kafka_errors.InvalidProducerEpoch, ProducerFenced),
    # The broker cannot be reached or did not answer in time: retry with back-off.
    (kafka_errors.KafkaConnectionError, TransportError),
    (kafka_errors.NodeNotReadyError, TransportError),
    (kafka_errors.RequestTimedOutError, TransportError),
    (kafka_errors.KafkaTimeoutError, TransportError),
    # Everything else aiokafka raises: still a transport error, named by its class.
    (kafka_errors.KafkaError, TransportError),
)
"""``(aiokafka exception, saga error)`` pairs; the first ``isinstance`` match wins."""


def map_kafka_error(exc: BaseException, operation: str = "kafka") -> TransportError | None:
    """Return the saga error for an aiokafka exception, or ``None`` when it is not one.

    Args:
        exc: The exception aiokafka raised.
        operation: What was being done, for the message (e.g. ``"commit transaction"``).
    """
    for kafka_type, saga_type in KAFKA_ERROR_MAP:
        if isinstance(exc, kafka_type):
            detail = str(exc) or type(exc).__name__
            return saga_type(f"{operation}: {type(exc).__name__}: {detail}")
    return None


@contextmanager
def translate_kafka_errors(operation: str = "kafka") -> Iterator[None]:
    """Re-raise aiokafka exceptions raised in the block as :mod:`saga.errors` exceptions.

    Args:
        operation: What the block does, put at the start of the error message.

    Raises:
        saga.errors.ProducerFenced: Another producer with the same transactional id
            took over (also when aiokafka says so only by refusing to send: its
            ``IllegalOperation`` once the transaction was ended under it).
        saga.errors.TransportError: Any other aiokafka error; a ``CancelledError``
            that aiokafka let out of an operation of its own while nobody cancelled
            the caller (it cancels its internal futures when a connection dies, for
            example in the middle of starting a client); and an ``AssertionError``
            raised in aiokafka's own code, which checks the cluster's state with
            ``assert`` (right after a broker restarts or resumes, its metadata may
            list no broker yet: "Did we not perform bootstrap?").
    """
    try:
        yield
    except AssertionError as exc:
        if not _raised_in_aiokafka(exc):
            raise  # ours: a bug, not a state of the cluster
        raise TransportError(
            f"{operation}: the Kafka client is not ready ({exc or 'assertion failed'}); retry"
        ) from exc
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise  # a real cancellation of the caller
        raise TransportError(
            f"{operation}: the Kafka client cancelled the operation (a lost connection?)"
        ) from exc
    except kafka_errors.IllegalOperation as exc:
        # The transaction ended under the producer: a newer producer with the same
        # transactional id fenced it (or the broker timed the transaction out).
        raise ProducerFenced(f"{operation}: the transaction was ended under us ({exc})") from exc
    except kafka_errors.KafkaError as exc:
        mapped = map_kafka_error(exc, operation)
        if mapped is None:  # pragma: no cover - KafkaError is the table's last row
            raise
        raise mapped from exc


def _raised_in_aiokafka(exc: BaseException) -> bool:
    """Whether the innermost frame of ``exc``'s traceback is aiokafka's own code."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return str(tb.tb_frame.f_globals.get("__name__", "")).startswith("aiokafka")
