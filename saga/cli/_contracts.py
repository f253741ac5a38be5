"""``saga contracts``: generate the JSON Schema and AsyncAPI documents of every message."""

from __future__ import annotations

import json
from pathlib import Path

import click

import contracts
from contracts import MESSAGES, breaking_changes, export_files

DEFAULT_OUT = Path(contracts.__file__).resolve().parent / "schemas"
"""Where the generated documents are committed: ``contracts/schemas/``."""


@click.group("contracts")
def contracts_group() -> None:
    """Message contracts: JSON Schema and AsyncAPI."""


@contracts_group.command("export")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_OUT,
    show_default="contracts/schemas",
    help="Directory to write the documents to.",
)
@click.option("--check", is_flag=True, help="Write nothing; exit 1 when the files are stale.")
@click.option(
    "--allow-breaking",
    is_flag=True,
    help="Overwrite schemas even when a change is not backward compatible.",
)
def export(out: Path, check: bool, allow_breaking: bool) -> None:
    """Write one JSON Schema per message type, the envelope's, and asyncapi.json."""
    files = export_files(MESSAGES)
    stale = sorted(
        name
        for name, text in files.items()
        if not (out / name).is_file() or (out / name).read_text(encoding="utf-8") != text
    )
    problems = [] if allow_breaking else _breaking(out, files)
    if check:
        for name in stale:
            click.echo(f"stale: {out / name}")
        for problem in problems:
            click.echo(f"breaking: {problem}")
        raise SystemExit(1 if stale or problems else 0)
    if problems:
        for problem in problems:
            click.echo(f"breaking: {problem}", err=True)
        raise click.ClickException(
            "refusing to overwrite schemas with backward-incompatible changes "
            "(add a new message type instead, or pass --allow-breaking)"
        )
    out.mkdir(parents=True, exist_ok=True)
    for name in stale:
        (out / name).write_text(files[name], encoding="utf-8")
    click.echo(f"{len(stale)} of {len(files)} files written to {out}")


def _breaking(out: Path, files: dict[str, str]) -> list[str]:
    problems: list[str] = []
    for name, text in files.items():
        old_path = out / name
        if name == "asyncapi.json" or not old_path.is_file():
            continue
        old = json.loads(old_path.read_text(encoding="utf-8"))
        problems.extend(f"{name}: {p}" for p in breaking_changes(old, json.loads(text)))
    return problems
