"""``saga start|status|list|signal|abort|retry-step|skip-step|mark-compensated|resume``.

Every verb talks to the database directly through :class:`saga.operations.SagaOperations`,
the same code the HTTP API runs. Output is a readable table, or JSON with ``--json``.
Errors print what went wrong and what to do next, and exit with status 1.
"""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, NoReturn, TypeVar
from uuid import UUID

import click
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from saga.cli._common import load_definitions, settings
from saga.cli._settings import Settings
from saga.engine import SagaStatus
from saga.errors import (
    ConfigError,
    DefinitionError,
    DefinitionNotFound,
    InvalidCommand,
    SagaError,
    SagaNotFound,
    StoreUnavailable,
    TransitionError,
)
from saga.operations import (
    Accepted,
    SagaDetail,
    SagaOperations,
    SagaPage,
    StartResult,
    Verb,
    decode_cursor,
)

T = TypeVar("T")

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")


def _actor() -> str:
    """The audit log's name for whoever runs the CLI: ``cli:<login name>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except OSError:  # no login name (e.g. a container without a passwd entry)
        return "cli"


@asynccontextmanager
async def open_operations(s: Settings) -> AsyncIterator[SagaOperations]:
    """Operations over the database of ``s`` (definitions in SAGA_DEFINITIONS registered)."""
    from saga.coordinator import DefinitionCache
    from saga.store import SqlStore, create_engine

    engine = create_engine(s.database_url)
    try:
        store = SqlStore(engine)
        cache = DefinitionCache(store)
        extra = load_definitions(s.definitions)
        if extra:
            await cache.register(extra)
        yield SagaOperations(store, cache, s.topics)
    finally:
        await engine.dispose()


def _run(call: Callable[[SagaOperations], Awaitable[T]]) -> T:
    async def main() -> T:
        async with open_operations(settings()) as ops:
            return await call(ops)

    try:
        return asyncio.run(main())
    except SagaError as exc:
        _fail(exc)


def _fail(exc: SagaError) -> NoReturn:
    saga_id = exc.saga_id or "ID"
    hints: list[tuple[type[SagaError], str]] = [
        (SagaNotFound, "list the sagas with `saga list`."),
        (DefinitionNotFound, "register it: set SAGA_DEFINITIONS (YAML files or module:attr)."),
        (InvalidCommand, f"check the step and signal names with `saga status {saga_id}`."),
        (TransitionError, f"look at the saga's status and steps with `saga status {saga_id}`."),
        (
            StoreUnavailable,
            "check SAGA_DATABASE_URL, that the database is up, and run `saga db upgrade`.",
        ),
        (DefinitionError, "fix the field named above (`saga lint FILE` checks a definition)."),
        (ConfigError, "check the SAGA_* environment variables (`saga --help`)."),
    ]
    hint = next((h for kind, h in hints if isinstance(exc, kind)), "see the message above.")
    message = exc.message
    if isinstance(exc, SagaNotFound) and exc.saga_id:
        message = f"no saga with id {exc.saga_id}"
    raise click.ClickException(f"{message}\nWhat to do: {hint}")


def _json_arg(value: str | None, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint=what) from exc
    if not isinstance(data, dict):
        raise click.BadParameter("must be a JSON object, e.g. '{\"k\": 1}'", param_hint=what)
    return data


def _print_json(model: BaseModel) -> None:
    click.echo(model.model_dump_json(indent=2))


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""


def _brief(detail: dict[str, Any], width: int = 100) -> str:
    """``key=value`` pairs of an audit record's detail, empty values left out."""
    parts = [
        f"{k}={v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)}"
        for k, v in sorted(detail.items())
        if v not in ("", None, [], {})
    ]
    text = " ".join(parts)
    return text if len(text) <= width else text[: width - 1] + "…"


# -- start / status / list ----------------------------------------------------------------


@click.command("start")
@click.argument("saga_type", metavar="TYPE")
@click.option("--input", "input_json", default=None, metavar="JSON", help="Start input (object).")
@click.option("--idempotency-key", default=None, metavar="K", help="Repeat-safe start key.")
@click.option("--version", type=click.IntRange(min=1), default=None, help="Definition version.")
@json_option
def start(
    saga_type: str,
    input_json: str | None,
    idempotency_key: str | None,
    version: int | None,
    as_json: bool,
) -> None:
    """Start a saga of TYPE (the latest registered version unless --version)."""
    saga_input = _json_arg(input_json, "--input")
    result: StartResult = _run(
        lambda ops: ops.start(
            saga_type,
            saga_input,
            version=version,
            idempotency_key=idempotency_key,
            actor=_actor(),
        )
    )
    if as_json:
        _print_json(result)
    elif result.created:
        click.echo(f"started saga {result.saga_id}")
    else:
        click.echo(f"saga {result.saga_id} was already started with this idempotency key")


@click.command("status")
@click.argument("saga_id", type=click.UUID)
@json_option
def status(saga_id: UUID, as_json: bool) -> None:
    """Show a saga: status, steps, context and timeline."""
    detail: SagaDetail = _run(lambda ops: ops.get_saga(saga_id))
    if as_json:
        _print_json(detail)
        return
    console = Console()
    head = Table.grid(padding=(0, 2))
    head.add_row("saga", str(detail.saga_id))
    head.add_row("type", f"{detail.saga_type} v{detail.saga_version}")
    head.add_row("status", f"[bold]{detail.status}[/]")
    head.add_row("created", _when(detail.created_at))
    head.add_row("updated", _when(detail.updated_at))
    if detail.stuck_step:
        head.add_row("stuck on", f"{detail.stuck_step} ({detail.stuck_in})")
    if detail.last_error:
        head.add_row("last error", f"{detail.last_error.code}: {detail.last_error.message}")
    if detail.abort_reason:
        head.add_row("abort reason", detail.abort_reason)
    head.add_row("context", json.dumps(detail.context, sort_keys=True))
    if not detail.timeline_intact:
        head.add_row("audit", "[bold red]the timeline's hash chain does NOT verify[/]")
    console.print(head)
    steps = Table(title="steps", title_justify="left", header_style="bold")
    for col in ("step", "kind", "status", "attempt", "compensation", "last error"):
        steps.add_column(col)
    for s in detail.steps:
        err = f"{s.last_error.code}: {s.last_error.message}" if s.last_error else ""
        steps.add_row(s.name, s.kind, s.status, str(s.attempt), s.compensation, err)
    console.print(steps)
    timeline = Table(title="timeline", title_justify="left", header_style="bold")
    timeline.add_column("#", justify="right")
    timeline.add_column("time", no_wrap=True)
    timeline.add_column("what", no_wrap=True)
    for col in ("step", "actor", "detail"):
        timeline.add_column(col)
    for r in detail.timeline:
        timeline.add_row(
            str(r.seq),
            r.recorded_at.strftime("%H:%M:%S.%f")[:12],
            r.kind,
            r.step or "",
            r.actor or "",
            _brief(r.detail),
        )
    console.print(timeline)


@click.command("list")
@click.option("--type", "saga_type", default=None, metavar="T", help="Only this saga type.")
@click.option(
    "--status",
    "status_",
    type=click.Choice([s.value for s in SagaStatus]),
    default=None,
    help="Only this status.",
)
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--cursor", default=None, help="next_cursor of the previous page.")
@json_option
def list_(
    saga_type: str | None, status_: str | None, limit: int, cursor: str | None, as_json: bool
) -> None:
    """List sagas, newest first."""
    if cursor is not None:
        try:
            decode_cursor(cursor)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--cursor") from exc
    page: SagaPage = _run(
        lambda ops: ops.list_sagas(
            saga_type=saga_type,
            status=SagaStatus(status_) if status_ else None,
            limit=limit,
            cursor=cursor,
        )
    )
    if as_json:
        _print_json(page)
        return
    table = Table(header_style="bold")
    table.add_column("saga", no_wrap=True, min_width=36)  # ids must stay copyable
    table.add_column("type")
    table.add_column("status", no_wrap=True)
    table.add_column("created")
    for s in page.items:
        table.add_row(
            str(s.saga_id),
            f"{s.saga_type} v{s.saga_version}",
            str(s.status),
            _when(s.created_at),
        )
    console = Console()
    console.print(table)
    if page.next_cursor:
        console.print(f"more: saga list --cursor {page.next_cursor}")
    elif not page.items:
        console.print("no sagas")


# -- delivered commands -------------------------------------------------------------------


def _accepted(result: Accepted, as_json: bool) -> None:
    if as_json:
        _print_json(result)
        return
    click.echo(
        f"{result.verb} accepted for saga {result.saga_id} (message {result.message_id}); "
        f"the coordinator applies it: follow with `saga status {result.saga_id}`"
    )


@click.command("signal")
@click.argument("saga_id", type=click.UUID)
@click.argument("name")
@click.option("--data", "data_json", default=None, metavar="JSON", help="Signal data (object).")
@json_option
def signal(saga_id: UUID, name: str, data_json: str | None, as_json: bool) -> None:
    """Send the signal NAME to a waiting saga."""
    data = _json_arg(data_json, "--data")
    _accepted(_run(lambda ops: ops.signal(saga_id, name, data, actor=_actor())), as_json)


def _verb_command(verb: Verb, name: str, doc: str, *, step: bool = False) -> click.Command:
    def run(saga_id: UUID, reason: str, as_json: bool, step: str | None = None) -> None:
        if not reason.strip():
            raise click.BadParameter("give a reason (it is written to the audit log)")
        result = _run(
            lambda ops: ops.command(saga_id, verb, reason=reason.strip(), actor=_actor(), step=step)
        )
        _accepted(result, as_json)

    params: list[click.Parameter] = [click.Argument(["saga_id"], type=click.UUID)]
    if step:
        params.append(click.Argument(["step"]))
    params += [
        click.Option(
            ["--reason"], required=True, metavar="R", help="Why (written to the audit log)."
        ),
        click.Option(["--json", "as_json"], is_flag=True, help="Print JSON (for scripts)."),
    ]
    return click.Command(name, callback=run, params=params, help=doc)


abort = _verb_command(
    Verb.ABORT,
    "abort",
    "Abort a saga: compensate when still possible, else end a stuck saga as aborted.",
)
retry_step = _verb_command(
    Verb.RETRY_STEP,
    "retry-step",
    "Retry STEP (or its compensation) of a stuck saga with a fresh retry budget.",
    step=True,
)
skip_step = _verb_command(
    Verb.SKIP_STEP,
    "skip-step",
    "Count STEP of a stuck saga (or a waiting wait step) as done.",
    step=True,
)
mark_compensated = _verb_command(
    Verb.MARK_COMPENSATED,
    "mark-compensated",
    "Declare a stuck saga compensated (you undid the rest by hand).",
)
resume = _verb_command(
    Verb.RESUME,
    "resume",
    "Resume a stuck saga: retry what it is stuck on with a fresh retry budget.",
)

COMMANDS: tuple[click.Command, ...] = (
    start,
    status,
    list_,
    signal,
    abort,
    retry_step,
    skip_step,
    mark_compensated,
    resume,
)
"""Every saga verb, for registration on the ``saga`` group."""
