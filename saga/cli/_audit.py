"""``saga audit ID|verify|export|reconcile``: read, check and export the audit log.

* ``saga audit ID`` prints a saga's timeline (``--json`` for scripts);
* ``saga audit verify [ID|--all]`` checks hash chains and names every record that was
  altered, inserted or removed (exit 1 when anything is broken);
* ``saga audit export --since ISO --until ISO [--out FILE]`` writes JSON Lines;
* ``saga audit reconcile --auditor URL`` compares the database with the independent
  auditor's view (exit 1 on any discrepancy).

Everything streams in pages, so a large database is never loaded whole.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar
from uuid import UUID

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from saga.audit import (
    AuditProblem,
    ReconcileReport,
    auditor_view,
    count_sagas,
    export_jsonl,
    reconcile_database,
    record_to_json,
    verify_all,
    verify_saga,
)
from saga.cli import _options as opt
from saga.cli._common import fail, settings
from saga.cli._sagas import SAGA_REF, _brief, _columns, _fit, _table, _widths
from saga.errors import AuditorUnavailable, SagaError, SagaNotFound
from saga.hints import Hints
from saga.ids import resolve_saga_id
from saga.store import AuditRecord, SqlStore, create_engine

T = TypeVar("T")

json_option = opt.json()


def _fail(exc: SagaError) -> NoReturn:
    hints: Hints = (
        (SagaNotFound, "list the sagas with `saga list`."),
        (AuditorUnavailable, "check the --auditor URL and that `python -m services.audit` runs."),
    )
    fail(exc, hints)


@asynccontextmanager
async def _open_store() -> AsyncIterator[SqlStore]:
    engine = create_engine(settings().database_url)
    try:
        yield SqlStore(engine)
    finally:
        await engine.dispose()


def _run(main: Callable[[SqlStore], Awaitable[T]]) -> T:
    async def go() -> T:
        async with _open_store() as store:
            return await main(store)

    try:
        return asyncio.run(go())
    except SagaError as exc:
        _fail(exc)


def _when(value: str | None, param: str) -> datetime | None:
    if value is None:
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(
            f"not an ISO 8601 time: {value!r} (e.g. 2024-05-01T12:00:00Z)", param_hint=param
        ) from exc
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


def _revision(detail: dict[str, Any]) -> str:
    """The saga revision a decision's record produced (blank for other records)."""
    mark = detail.get("decision")
    return str(mark.get("revision", "")) if isinstance(mark, dict) else ""


def _problem_json(p: AuditProblem) -> dict[str, Any]:
    return {"saga_id": p.saga_id, "seq": p.seq, "problem": str(p.problem), "detail": p.detail}


def _print_problems(console: Console, problems: list[AuditProblem]) -> None:
    table = Table(title="audit problems", title_justify="left", header_style="bold")
    for col in ("saga", "seq", "problem", "detail"):
        table.add_column(col, overflow="fold")
    for p in problems:
        table.add_row(p.saga_id, str(p.seq), f"[bold red]{p.problem}[/]", p.detail)
    console.print(table)


class _AuditGroup(click.Group):
    """``saga audit ID`` is short for ``saga audit show ID``."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["show", *args]
        return super().resolve_command(ctx, args)


@click.group("audit", cls=_AuditGroup)
def audit() -> None:
    """The hash-chained audit log: `saga audit ID`, verify, export, reconcile."""


# -- show -----------------------------------------------------------------------------------


@audit.command("show")
@click.argument("saga_id", type=SAGA_REF)
@json_option
def show(saga_id: str, as_json: bool) -> None:
    """Print the audit timeline of saga SAGA_ID (also: `saga audit SAGA_ID`).

    SAGA_ID may be a unique prefix or suffix of the id.
    """

    async def main(store: SqlStore) -> tuple[UUID, list[AuditRecord], list[AuditProblem]]:
        sid = await resolve_saga_id(store, saga_id)
        records = await store.audit_trail(str(sid))
        if not records and await store.get_saga(str(sid)) is None:
            raise SagaNotFound(f"no saga with id {sid}", saga_id=str(sid))
        return sid, records, await verify_saga(store, str(sid))

    sid, records, problems = _run(main)
    if as_json:
        body = {
            "saga_id": str(sid),
            "intact": not problems,
            "problems": [_problem_json(p) for p in problems],
            "records": [record_to_json(r) for r in records],
        }
        click.echo(json.dumps(body, indent=2, ensure_ascii=False))
        return
    broken = {p.seq: p.problem for p in problems}
    console = Console()
    days = {r.recorded_at.date() for r in records}
    stamp = "%H:%M:%S.%f" if len(days) <= 1 else "%Y-%m-%d %H:%M:%S.%f"
    day = f", {min(days)}" if len(days) == 1 else ""
    wide = console.width >= 110
    table = _table(f"audit trail of saga {sid}{day} (UTC)")

    def step_of(r: AuditRecord) -> str:
        if wide or not r.step or r.attempt is None:
            return r.step or ""
        return f"{r.step}#{r.attempt}"

    rows = [
        (
            str(r.seq),
            r.recorded_at.strftime(stamp)[:-3],
            r.kind,
            _revision(r.detail),
            step_of(r),
            "" if r.attempt is None else str(r.attempt),
            r.hash[:8],
            "ok" if r.seq not in broken else str(broken[r.seq]),
            _brief(r.detail, actor=r.actor),
        )
        for r in records
    ]
    # Narrow terminals: the attempt goes with the step (step#2), the chain column only
    # marks each record (the problems table below names what is wrong), no hash.
    heads = ("#", "time", "what", "rev", "step", "try", "hash", "chain")
    caps = (4, 23, 24, 4, 16, 3, 8, 9) if wide else (4, 23, 22, 3, 14, 0, 0, 1)
    keep = [i for i, cap in enumerate(caps) if cap]
    fixed = _widths(
        [[heads[i] for i in keep], *([row[i] for i in keep] for row in rows)],
        tuple(caps[i] for i in keep),
    )
    names = [heads[i] if wide or i != 7 else "" for i in keep]
    rest = _columns(table, names, fixed, "detail", console.width)
    for col in table.columns:
        if col.header in ("#", "rev", "try"):
            col.justify = "right"
    for row in rows:
        ok = row[7] == "ok"
        if wide:
            mark = "[green]ok[/]" if ok else f"[bold red]{row[7]}[/]"
        else:
            mark = "[green]✔[/]" if ok else "[bold red]✘[/]"
        cells = [mark if i == 7 else row[i] for i in keep]
        table.add_row(*cells, _fit(row[8], rest))
    console.print(table)
    if problems:
        _print_problems(console, problems)
    else:
        console.print(f"[green]{len(records)} records, hash chain intact[/]")


# -- verify ---------------------------------------------------------------------------------


@audit.command("verify")
@click.argument("saga_id", type=SAGA_REF, required=False)
@click.option("--all", "all_sagas", is_flag=True, help="Verify every saga in the database.")
@click.option(
    "--page-size", type=click.IntRange(1, 10_000), default=200, show_default=True,
    help="Sagas verified per query (--all).",
)  # fmt: skip
@json_option
def verify(saga_id: str | None, all_sagas: bool, page_size: int, as_json: bool) -> None:
    """Check hash chains: name every record altered, inserted or removed (exit 1 if any)."""
    if (saga_id is None) == (not all_sagas):
        raise click.UsageError("give a saga id or --all (not both)")
    err = Console(stderr=True)

    async def one(store: SqlStore) -> tuple[int, int, list[AuditProblem]]:
        sid = str(await resolve_saga_id(store, saga_id or ""))
        problems = await verify_saga(store, sid)
        return 1, len(await store.audit_trail(sid)), problems

    async def every(store: SqlStore) -> tuple[int, int, list[AuditProblem]]:
        total = await count_sagas(store.engine)
        sagas = records = 0
        problems: list[AuditProblem] = []
        with Progress(
            TextColumn("verifying"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("sagas · {task.fields[problems]} problems"),
            console=err,
            transient=True,
            disable=as_json or not err.is_terminal,
        ) as progress:
            task = progress.add_task("verify", total=total, problems=0)
            async for page in verify_all(store.engine, page_size=page_size):
                sagas += page.sagas
                records += page.records
                problems.extend(page.problems)
                progress.update(task, advance=page.sagas, problems=len(problems))
        return sagas, records, problems

    sagas, records, problems = _run(every if all_sagas else one)
    if as_json:
        body = {
            "sagas": sagas,
            "records": records,
            "intact": not problems,
            "problems": [_problem_json(p) for p in problems],
        }
        click.echo(json.dumps(body, indent=2))
    else:
        console = Console()
        if problems:
            _print_problems(console, problems)
        summary = f"verified {sagas} saga(s), {records} record(s): {len(problems)} problem(s)"
        console.print(f"[bold red]{summary}[/]" if problems else f"[green]{summary}[/]")
    if problems:
        sys.exit(1)


# -- export ---------------------------------------------------------------------------------


@audit.command("export")
@click.option("--since", "since_text", required=True, metavar="ISO", help="From (inclusive).")
@click.option("--until", "until_text", required=True, metavar="ISO", help="To (exclusive).")
@click.option(
    "--out", type=click.Path(dir_okay=False, writable=True), default=None,
    help="File to write (default: standard output).",
)  # fmt: skip
@click.option("--page-size", type=click.IntRange(1, 100_000), default=1000, show_default=True)
def export(since_text: str, until_text: str, out: str | None, page_size: int) -> None:
    """Write the audit records of a time range as JSON Lines, in insertion order."""
    since = _when(since_text, "--since")
    until = _when(until_text, "--until")
    if since is not None and until is not None and until <= since:
        raise click.BadParameter("must be after --since", param_hint="--until")
    with click.open_file(out or "-", "w", encoding="utf-8") as sink:

        async def main(store: SqlStore) -> int:
            return await export_jsonl(
                store, sink.write, since=since, until=until, page_size=page_size
            )

        written = _run(main)
    if out is not None:
        click.echo(f"exported {written} audit record(s) to {out}", err=True)


# -- reconcile ------------------------------------------------------------------------------


@audit.command("reconcile")
@click.option("--auditor", "auditor_url", required=True, metavar="URL", help="Auditor web view.")
@click.option(
    "--include-active", is_flag=True,
    help="Also compare sagas that neither side says have settled (expect lag).",
)  # fmt: skip
@json_option
def reconcile(auditor_url: str, include_active: bool, as_json: bool) -> None:
    """Compare the database with the auditor; list every discrepancy (exit 1 if any)."""

    async def main(store: SqlStore) -> ReconcileReport:
        view = await auditor_view(auditor_url)
        return await reconcile_database(store.engine, view, settled_only=not include_active)

    report = _run(main)
    found = report.discrepancies
    if as_json:
        body = {
            "database_sagas": report.database_sagas,
            "auditor_sagas": report.auditor_sagas,
            "discrepancies": [d.to_json() for d in found],
        }
        click.echo(json.dumps(body, indent=2))
    else:
        console = Console()
        if found:
            table = Table(title="discrepancies", title_justify="left", header_style="bold")
            for col in ("saga", "type", "what", "database", "auditor"):
                table.add_column(col, overflow="fold")
            for d in found:
                table.add_row(
                    d.saga_id,
                    d.saga_type,
                    f"[bold red]{d.kind}[/]",
                    d.database or "-",
                    d.auditor or "-",
                )
            console.print(table)
        summary = (
            f"{report.database_sagas} saga(s) in the database, {report.auditor_sagas} in the "
            f"auditor: {len(found)} discrepancy(ies)"
        )
        console.print(f"[bold red]{summary}[/]" if found else f"[green]{summary}[/]")
    if found:
        sys.exit(1)


COMMANDS: tuple[click.Command, ...] = (audit,)
