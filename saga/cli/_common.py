"""Helpers shared by the CLI commands: settings, definitions, logging, errors."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import NoReturn

import click

from saga.definition import SagaDefinition, load_file
from saga.errors import ConfigError
from saga.hints import Hints, explain
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


def fail(exc: Exception, hints: Hints = (), *, message: str | None = None) -> NoReturn:
    """Print a clear error and what to do next (:func:`saga.hints.explain`), then exit 1.

    Args:
        exc: The error.
        hints: The command's own hints, tried before the common ones.
        message: Shown instead of the error's own message.
    """
    raise click.ClickException(explain(exc, hints, message=message))


def settings() -> Settings:
    """The settings of this process (environment, prefix SAGA_)."""
    return Settings()
