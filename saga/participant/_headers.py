"""Kafka headers of replies: what is carried over from the command.

A seam for telemetry: the reply's headers come from one function, by default
:func:`propagate_trace_headers`; the telemetry package replaces it with one that also
starts a span and injects its context.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Final

from contracts import Envelope

TRACE_HEADERS: Final = ("traceparent", "tracestate")
"""W3C trace context headers, copied from a command to its reply."""

Headers = Sequence[tuple[str, bytes]]
HeadersHook = Callable[[Headers], list[tuple[str, bytes]]]
"""Given a command's Kafka headers, return the headers of its reply."""


CommandScope = Callable[[Envelope, Any], AbstractContextManager[object]]
"""Given a command's envelope and Kafka record, a context the handler runs in (and its
reply is built in): the telemetry package opens a consumer span and a log context."""


def no_scope(envelope: Envelope, record: Any) -> AbstractContextManager[object]:
    """The default :data:`CommandScope`: nothing around the handler."""
    return nullcontext()


def propagate_trace_headers(command_headers: Headers) -> list[tuple[str, bytes]]:
    """Return the W3C trace context headers of a command, for its reply."""
    return [(name, value) for name, value in command_headers if name in TRACE_HEADERS]
