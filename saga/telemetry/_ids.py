"""Deterministic trace and span ids: every process finds a saga's trace from its id alone.

Why not random ids stored somewhere? Messages that start a decision do not always carry
trace headers (timer messages, operator commands and signals from the API, replies of
participants that do not propagate), and spans cannot stay open across processes and
crashes. So the ids are *derived*:

- trace id = the saga id's 128 bits (search a tracing UI for the saga id, without dashes);
- span id of the root span ``saga <type>`` = 64 bits of SHA-256 over the saga id;
- span id of a step attempt = 64 bits of SHA-256 over the command's message id.

A coordinator that receives a reply therefore knows the span id of the attempt it ends
(the reply's ``causation_id``, also kept in the step state) and the root's, without any
lookup. Our :class:`SagaIdGenerator` lets a span be *emitted* with such a derived id; it
hands out random ids unless :func:`forced_ids` is active.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from contextvars import ContextVar
from uuid import UUID

from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import SpanContext, TraceFlags

_FORCED: ContextVar[tuple[int | None, int | None]] = ContextVar(
    "saga_telemetry_forced_ids", default=(None, None)
)


def saga_trace_id(saga_id: UUID) -> int:
    """The trace id of a saga: its id's 128 bits."""
    return saga_id.int or 1


def _span_id(*parts: object) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") or 1


def root_span_id(saga_id: UUID) -> int:
    """The span id of a saga's root span ``saga <type>``."""
    return _span_id("saga.root", saga_id)


def attempt_span_id(message_id: UUID) -> int:
    """The span id of the step attempt (or compensation attempt) a command starts."""
    return _span_id("saga.attempt", message_id)


def remote_context(trace_id: int, span_id: int) -> SpanContext:
    """A sampled, remote span context with the given ids (a parent to build on)."""
    return SpanContext(
        trace_id=trace_id,
        span_id=span_id,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )


def root_context(saga_id: UUID) -> SpanContext:
    """The span context of a saga's root span."""
    return remote_context(saga_trace_id(saga_id), root_span_id(saga_id))


def attempt_context(saga_id: UUID, message_id: UUID) -> SpanContext:
    """The span context of the attempt that the command ``message_id`` starts."""
    return remote_context(saga_trace_id(saga_id), attempt_span_id(message_id))


def format_trace_id(trace_id: int) -> str:
    """A trace id as 32 lowercase hex digits (as in ``traceparent`` and tracing UIs)."""
    return f"{trace_id:032x}"


@contextlib.contextmanager
def forced_ids(*, trace_id: int | None = None, span_id: int | None = None) -> Iterator[None]:
    """Make :class:`SagaIdGenerator` return these ids for spans started in the block."""
    token = _FORCED.set((trace_id, span_id))
    try:
        yield
    finally:
        _FORCED.reset(token)


class SagaIdGenerator(IdGenerator):
    """Random ids, except inside :func:`forced_ids`."""

    def __init__(self) -> None:
        self._random = RandomIdGenerator()

    def generate_span_id(self) -> int:
        """The forced span id, else a random one."""
        forced = _FORCED.get()[1]
        return forced if forced is not None else self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        """The forced trace id, else a random one."""
        forced = _FORCED.get()[0]
        return forced if forced is not None else self._random.generate_trace_id()


def send_span_id(message_id: UUID) -> int:
    """The span id of the ``send <type>`` span of the command ``message_id``."""
    return _span_id("saga.send", message_id)
