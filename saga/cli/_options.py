"""Click options that several CLI commands take: ``@opt.number(...)``, ``@opt.folder(...)``."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from saga.relay import RelayMode

F = TypeVar("F", bound=Callable[..., Any])


def number(
    *decls: str,
    default: float | None,
    help: str | None = None,
    minimum: float = 1,
    **extra: Any,
) -> Callable[[F], F]:
    """A number of at least ``minimum`` whose default ``--help`` shows.

    A float ``default`` makes it a float option, else (an int or None) an integer one.
    """
    kind: click.ParamType = (
        click.FloatRange(min=minimum)
        if isinstance(default, float)
        else click.IntRange(min=int(minimum))
    )
    return click.option(
        *decls, type=kind, default=default, show_default=default is not None, help=help, **extra
    )


def json(help: str = "Print JSON (for scripts).") -> Callable[[F], F]:
    """``--json`` (the parameter ``as_json``)."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def keep(help: str) -> Callable[[F], F]:
    """``--keep``: leave what a run made (schemas, topics, files) in place."""
    return click.option("--keep", is_flag=True, help=help)


def folder(name: str, help: str, default_name: str | None = None) -> Callable[[F], F]:
    """A folder option (``--workdir``...); ``default_name`` is a folder in the temp folder."""
    default = None if default_name is None else Path(tempfile.gettempdir()) / default_name
    return click.option(
        name,
        type=click.Path(path_type=Path),
        default=default,
        show_default=default is not None,
        help=help,
    )


def relay_mode(*decls: str) -> Callable[[F], F]:
    """The relay's delivery mode (read its value with :func:`as_relay_mode`)."""
    return click.option(
        *decls,
        type=click.Choice(["exactly_once", "at_least_once"]),
        default="exactly_once",
        show_default=True,
    )


def as_relay_mode(value: str) -> RelayMode:
    """The value of a :func:`relay_mode` option as the relay's mode."""
    return "at_least_once" if value == "at_least_once" else "exactly_once"
