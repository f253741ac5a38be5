"""``saga explore NAME|FILE``: walk a definition's failure space within a bound.

The engine is pure, so every interleaving of successes, failures, timeouts, late and
duplicate replies, signals and the deadline can be tried without any server (see
:func:`saga.testing.explore`). Prints every reachable outcome with its shortest event
sequence and every broken property; exits 1 when a property breaks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from saga.cli import _options as opt
from saga.cli._common import fail, load_definitions, settings
from saga.definition import SagaDefinition, load_file
from saga.errors import SagaError


def _find(name: str, version: int | None) -> SagaDefinition:
    """A definition from a file path, SAGA_DEFINITIONS or the built-ins (like ``graph``)."""
    from saga.cli._definitions import builtin_definitions

    try:
        if Path(name).is_file():
            return load_file(Path(name))
        candidates = [*load_definitions(settings().definitions), *builtin_definitions()]
    except SagaError as exc:
        fail(exc)
    matches = [
        d for d in candidates if d.name == name and (version is None or d.version == version)
    ]
    if not matches:
        known = ", ".join(sorted({d.name for d in candidates})) or "none"
        raise click.ClickException(
            f"no definition called {name!r}"
            + (f" with version {version}" if version is not None else "")
            + f". Known here: {known}. Set SAGA_DEFINITIONS or pass a YAML file."
        )
    return max(matches, key=lambda d: d.version)


@click.command("explore")
@click.argument("name")
@click.option("--version", "version", type=int, default=None, help="Definition version.")
@opt.number(
    "--max-attempts",
    default=3,
    help="Try failures and timeouts up to this attempt of each step; later ones succeed.",
)
@opt.number("--depth", default=60, help="The longest event sequence tried.")
@click.option("--input", "input_json", default="{}", help="The start input, as JSON.")
@click.option("--no-duplicates", is_flag=True, help="Do not deliver replies twice.")
@click.option("--no-late-replies", is_flag=True, help="Do not deliver replies after a timeout.")
@opt.number(
    "--max-states",
    default=500_000,
    help="Stop after this many distinct states (the report then says partial).",
)
@opt.number(
    "--operators",
    default=0,
    minimum=0,
    help="Let an operator act too (resume, retry, skip, mark compensated, abort), at most"
    " this many times per path.",
)
@click.option(
    "--conditions",
    type=click.Choice(["both", "input"]),
    default="both",
    show_default=True,
    help="both: try every step condition (`when`) true and false; input: evaluate them"
    " over --input.",
)
@opt.json("Print the report as JSON.")
def explore(
    name: str,
    version: int | None,
    max_attempts: int,
    depth: int,
    input_json: str,
    no_duplicates: bool,
    no_late_replies: bool,
    max_states: int,
    operators: int,
    conditions: str,
    as_json: bool,
) -> None:
    """Try every way a saga of NAME (or a YAML/JSON file) can go, within a bound.

    Prints each reachable outcome (completed, compensated, stuck on a step) with the
    shortest event sequence that leads to it, and every broken property: a
    compensation before its step finished, a compensated pivot, a saga that can make
    no progress, a step that took effect left uncompensated, compensations out of
    order. With --operators N an operator also acts, up to N times per path, so the
    paths that start from a stuck saga are tried too. Every step condition is tried
    both ways unless --conditions input. Exits 1 when a property breaks.
    """
    from saga.testing import explore as run_explore

    definition = _find(name, version)
    try:
        start_input: Any = json.loads(input_json)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--input") from exc
    if not isinstance(start_input, dict):
        raise click.BadParameter("the start input is a JSON object", param_hint="--input")
    interactive = sys.stderr.isatty()

    def progress(states: int, queued: int, at_depth: int) -> None:
        line = f"explored {states} states, {queued} queued, depth {at_depth}"
        if interactive:
            click.echo(f"\r{line}", nl=False, err=True)
        else:
            click.echo(line, err=True)

    try:
        report = run_explore(
            definition,
            input=start_input,
            max_attempts=max_attempts,
            depth=depth,
            duplicates=not no_duplicates,
            late_replies=not no_late_replies,
            max_states=max_states,
            progress=progress,
            operators=operators,
            conditions="input" if conditions == "input" else "both",
        )
    except ValueError as exc:  # a bound explore refuses: too many conditions
        raise click.ClickException(str(exc)) from exc
    if interactive and report.states >= 5000:
        click.echo("", err=True)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(report.format())
    if not report.ok:
        raise SystemExit(1)
