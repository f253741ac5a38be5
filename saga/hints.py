"""What to do next about an error: the one table every command and process uses.

A command or a long-running process that ends on an error prints the error and one
"What to do:" line (:func:`explain`); ``saga`` commands do it through
``saga.cli._common.fail``, the example services and the auditor directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from saga.errors import ConfigError, DefinitionError, SagaError, StoreUnavailable, TransportError

Hints = Sequence[tuple[type[Exception], str]]
"""``(error class, what to do)`` pairs; the first ``isinstance`` match wins."""

COMMON_HINTS: Final[Hints] = (
    (ConfigError, "check the SAGA_* environment variables (`saga --help`)."),
    (DefinitionError, "fix the field named above and run `saga lint FILE`."),
    (
        StoreUnavailable,
        "check that the database of SAGA_DATABASE_URL runs and is reachable from here"
        " (and that `saga db upgrade` ran), then run the command again.",
    ),
)
"""What to do about the errors every command can meet."""

KAFKA_HINT: Final = (
    "check that the Kafka brokers of SAGA_KAFKA_BOOTSTRAP_SERVERS run and are reachable"
    " from here, then run the command again."
)
"""What to do when Kafka cannot be reached (a retriable ``TransportError``)."""


def explain(exc: Exception, hints: Hints = (), *, message: str | None = None) -> str:
    """The error's message and, on a second line, ``What to do: ...``.

    Args:
        exc: The error.
        hints: The caller's own hints, tried before :data:`COMMON_HINTS`.
        message: Shown instead of the error's own message.
    """
    table = [*hints, *COMMON_HINTS]
    if isinstance(exc, TransportError) and exc.retriable:
        table.append((TransportError, KAFKA_HINT))
    what = next((h for t, h in table if isinstance(exc, t)), "see the message above.")
    text = message or (exc.message if isinstance(exc, SagaError) else str(exc))
    return f"{text}\nWhat to do: {what}"
