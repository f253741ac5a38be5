"""Kafka headers of replies: what is carried over from the command.

A seam for telemetry: the reply's headers come from one function, by default
:func:`propagate_trace_headers`; the telemetry package replaces it with one that also
starts a span and injects its context.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

TRACE_HEADERS: Final = ("traceparent", "tracestate")
"""W3C trace context headers, copied from a command to its reply."""

Headers = Sequence[tuple[str, bytes]]
HeadersHook = Callable[[Headers], list[tuple[str, bytes]]]
"""Given a command's Kafka headers, return the headers of its reply."""


def propagate_trace_headers(command_headers: Headers) -> list[tuple[str, bytes]]:
    """Return the W3C trace context headers of a command, for its reply."""
    return [(name, value) for name, value in command_headers if name in TRACE_HEADERS]
