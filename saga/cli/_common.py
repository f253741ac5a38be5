"""Helpers shared by the CLI commands: settings, definitions, logging, errors."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import click

from saga.definition import SagaDefinition, load_file
from saga.errors import ConfigError, DefinitionError, SagaError, StoreUnavailable, TransportError
from saga.settings import Settings


def load_definitions(spec: str) -> list[SagaDefinition]:
    """Definitions from a comma-separated list of YAML/JSON files and ``module:attr`` names.

    Raises:
        ConfigError: A module or attribute does not exist.
        DefinitionError: A file holds an invalid definition.
    """
    found: list[SagaDefinition] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        if ":" in item and not Path(item).exists():
            module_name, _, attr = item.partition(":")
            try:
                value = getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError) as exc:
                raise ConfigError(f"cannot load definitions from {item!r}: {exc}") from exc
            values = value if isinstance(value, list | tuple) else [value]
            for v in values:
                if not isinstance(v, SagaDefinition):
                    raise ConfigError(f"{item!r} is not a SagaDefinition")
                found.append(v)
        else:
            found.append(load_file(Path(item)))
    return found


def configure_logging(level: str, fmt: str | None = None) -> None:
    """Log lines on stderr with saga_id, step, attempt, message_id and trace_id fields.

    ``fmt`` is ``text`` or ``json``; ``None`` reads ``SAGA_LOG_FORMAT``.
    """
    from saga.telemetry import configure_logging as configure

    try:
        configure(level, fmt or settings().log_format)
    except ValueError as exc:
        fail(ConfigError(f"SAGA_LOG_FORMAT: {exc}"))


Hints = Sequence[tuple[type[Exception], str]]
"""``(error class, what to do)`` pairs; the first ``isinstance`` match wins."""

COMMON_HINTS: Hints = (
    (ConfigError, "check the SAGA_* environment variables (`saga --help`)."),
    (DefinitionError, "fix the field named above and run `saga lint FILE`."),
    (
        StoreUnavailable,
        "check that the database of SAGA_DATABASE_URL runs and is reachable from here"
        " (and that `saga db upgrade` ran), then run the command again.",
    ),
)
"""What to do about the errors every command can meet."""

KAFKA_HINT = (
    "check that the Kafka brokers of SAGA_KAFKA_BOOTSTRAP_SERVERS run and are reachable"
    " from here, then run the command again."
)


def fail(exc: Exception, hints: Hints = (), *, message: str | None = None) -> NoReturn:
    """Print a clear error and what to do next, then exit 1.

    Args:
        exc: The error.
        hints: The command's own hints, tried before :data:`COMMON_HINTS`.
        message: Shown instead of the error's own message.
    """
    table = [*hints, *COMMON_HINTS]
    if isinstance(exc, TransportError) and exc.retriable:
        table.append((TransportError, KAFKA_HINT))
    what = next((h for t, h in table if isinstance(exc, t)), "see the message above.")
    text = message or (exc.message if isinstance(exc, SagaError) else str(exc))
    raise click.ClickException(f"{text}\nWhat to do: {what}")


def settings() -> Settings:
    """The settings of this process (environment, prefix SAGA_)."""
    return Settings()
