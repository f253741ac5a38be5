"""``saga start|status|list|signal|abort|retry-step|skip-step|mark-compensated|resume``.

Every verb talks to the database directly through :class:`saga.operations.SagaOperations`,
the same code the HTTP API runs. Output is a readable table, or JSON with ``--json``.
Errors print what went wrong and what to do next, and exit with status 1.
"""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, NoReturn, TypeVar
from uuid import UUID

import click
from pydantic import BaseModel
from rich import box
from rich.console import Console
from rich.table import Table

from saga.cli import _options as opt
from saga.cli._common import fail, load_definitions, settings
from saga.engine import SagaStatus
from saga.errors import (
    DefinitionNotFound,
    InvalidCommand,
    SagaError,
    SagaNotFound,
    TransitionError,
)
from saga.hints import Hints
from saga.ids import MIN_FRAGMENT, resolve_saga_id, short_id
from saga.operations import (
    Accepted,
    SagaDetail,
    SagaOperations,
    SagaPage,
    StartResult,
    Verb,
    decode_cursor,
)
from saga.settings import Settings

T = TypeVar("T")


class SagaRef(click.ParamType):
    """A saga id, or a unique prefix or suffix of one (at least 4 hex digits)."""

    name = "saga_id"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        """Accept a UUID or a piece of one; which saga it is gets resolved later."""
        text = str(value).strip().lower()
        try:
            return str(UUID(text))
        except ValueError:
            pass
        digits = text.replace("-", "")
        if len(digits) < MIN_FRAGMENT or not all(c in "0123456789abcdef-" for c in text):
            self.fail(
                f"{value!r} is not a saga id, nor its first or last {MIN_FRAGMENT}+ hex digits",
                param,
                ctx,
            )
        return text


SAGA_REF = SagaRef()


async def resolve(ops: SagaOperations, ref: str) -> UUID:
    """The saga ``ref`` names (a full id is taken as it is)."""
    return await resolve_saga_id(ops.store, ref)


json_option = opt.json()


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
    hints: Hints = (
        (SagaNotFound, "list the sagas with `saga list`."),
        (DefinitionNotFound, "register it: set SAGA_DEFINITIONS (YAML files or module:attr)."),
        (InvalidCommand, f"check the step and signal names with `saga status {saga_id}`."),
        (TransitionError, f"look at the saga's status and steps with `saga status {saga_id}`."),
    )
    missing = isinstance(exc, SagaNotFound) and exc.saga_id
    fail(exc, hints, message=f"no saga with id {exc.saga_id}" if missing else None)


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


NOISE = frozenset({"decision"})
"""Detail keys left out of one-line views (the decision's bookkeeping)."""

_EVENT_KEYS = ("code", "message", "reason", "name")


def _value(key: str, value: Any) -> str:
    if key in ("message_id", "causation_id") and isinstance(value, str) and len(value) == 36:
        return short_id(value)
    if key.endswith("hash") and isinstance(value, str) and len(value) > 12:
        return value[:12]
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


def brief_parts(detail: dict[str, Any], *, actor: str | None = None) -> list[str]:
    """``key=value`` texts of an audit record's detail, for one-line views.

    The decision bookkeeping is left out, the raw event of an ``event.*`` record is
    reduced to its code, message or reason, and ids and hashes are shortened.
    """
    parts = [f"by {actor}"] if actor else []
    for k, v in sorted(detail.items()):
        if k in NOISE or v in ("", None, [], {}):
            continue
        if k == "event" and isinstance(v, dict):
            parts += [f"{e}={_value(e, v[e])}" for e in _EVENT_KEYS if v.get(e) not in ("", None)]
            continue
        parts.append(f"{k}={_value(k, v)}")
    return parts


def _brief(detail: dict[str, Any], width: int = 200, *, actor: str | None = None) -> str:
    """An audit record's detail on one line (the table cuts it to the terminal)."""
    return _fit(" ".join(brief_parts(detail, actor=actor)), width)


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _error(code: str, message: str) -> str:
    return f"{code}: {message}" if message else code


def _widths(rows: Sequence[Sequence[str]], caps: tuple[int, ...]) -> list[int]:
    """Widths of the leading columns: their longest cell (or header), at most ``caps``."""
    return [
        max(1, min(cap, max((len(r[i]) for r in rows), default=1))) for i, cap in enumerate(caps)
    ]


def _rest(total: int, fixed: Sequence[int]) -> int:
    """What is left of ``total`` columns for the last column of a :func:`_table`."""
    return max(total - sum(fixed) - 2 * len(fixed) - 1, 10)


def _columns(
    table: Table, heads: Sequence[str], fixed: Sequence[int], last: str, total: int
) -> int:
    """Add the leading columns (``fixed`` wide) and a last one that takes what is left.

    Returns the last column's width.
    """
    for name, width in zip(heads, fixed, strict=True):
        table.add_column(name, width=width + 1, no_wrap=True, overflow="ellipsis")
    rest = _rest(total, fixed)
    table.add_column(last, width=rest + 1, no_wrap=True, overflow="ellipsis")
    return rest


def _fill(
    table: Table,
    heads: Sequence[str],
    fixed: Sequence[int],
    rows: Sequence[Sequence[str]],
    total: int,
) -> None:
    """Add the columns (the last head takes what is left) and rows, the last cell cut."""
    rest = _columns(table, heads[:-1], fixed, heads[-1], total)
    for row in rows:
        table.add_row(*row[:-1], _fit(row[-1], rest))


def _table(title: str | None = None) -> Table:
    """A table that reads at 80 columns: no vertical rules, two spaces between columns."""
    return Table(
        title=title,
        title_justify="left",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        padding=(0, 1, 0, 0),
        pad_edge=False,
        show_edge=False,
        expand=False,
    )


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
@click.argument("saga_id", type=SAGA_REF)
@json_option
def status(saga_id: str, as_json: bool) -> None:
    """Show a saga: status, steps, context and timeline (SAGA_ID may be a unique piece)."""

    async def load(ops: SagaOperations) -> SagaDetail:
        return await ops.get_saga(await resolve(ops, saga_id))

    detail: SagaDetail = _run(load)
    if as_json:
        _print_json(detail)
        return
    console = Console()
    head = Table.grid(padding=(0, 2))
    head.add_column(no_wrap=True)
    head.add_column(overflow="fold")
    head.add_row("saga", f"{detail.saga_id} ({short_id(detail.saga_id)})")
    head.add_row("type", f"{detail.saga_type} v{detail.saga_version}")
    head.add_row("status", f"[bold]{detail.status}[/]")
    head.add_row("created", _when(detail.created_at))
    head.add_row("updated", _when(detail.updated_at))
    if detail.deadline_at:
        head.add_row("deadline", _when(detail.deadline_at))
    if detail.stuck_step:
        head.add_row("stuck on", f"{detail.stuck_step} ({detail.stuck_in})")
    if detail.last_error:
        head.add_row("last error", _error(detail.last_error.code, detail.last_error.message))
    if detail.abort_reason:
        head.add_row("abort reason", detail.abort_reason)
    if detail.lock is not None:
        lock = detail.lock
        if lock.position is not None:
            where = f"waiting, number {lock.position} in line"
        elif lock.holder == str(detail.saga_id):
            where = "held"
        else:
            where = "granted, starting"
        holder = (
            f"; held by {lock.holder}" if lock.holder and lock.holder != str(detail.saga_id) else ""
        )
        head.add_row("lock", f"{lock.key} ({where}{holder})")
    head.add_row("context", _fit(json.dumps(detail.context, sort_keys=True), 200))
    if not detail.timeline_intact:
        head.add_row("audit", "[bold red]the timeline's hash chain does NOT verify[/]")
    console.print(head)
    steps = _table("steps")
    step_rows: list[Sequence[str]] = [
        (
            s.name,
            s.kind,
            s.status,
            str(s.attempt),
            s.compensation if s.compensation != "none" else "",
            _error(s.last_error.code, s.last_error.message) if s.last_error else "",
        )
        for s in detail.steps
    ]
    heads = ("step", "kind", "status", "try", "compensation")
    fixed = _widths([heads, *step_rows], (20, 13, 15, 3, 15))
    _fill(steps, (*heads, "last error"), fixed, step_rows, console.width)
    steps.columns[3].justify = "right"
    console.print(steps)
    timeline = _table("timeline")
    rows = [
        (
            str(r.seq),
            r.recorded_at.strftime("%H:%M:%S.%f")[:12],
            r.kind,
            f"{r.step}#{r.attempt}" if r.step and r.attempt and r.attempt > 1 else r.step or "",
            _brief(r.detail, actor=r.actor),
        )
        for r in detail.timeline
    ]
    fixed = _widths(rows, (4, 12, 24, 16))
    _fill(timeline, ("#", "time", "what", "step", "detail"), fixed, rows, console.width)
    timeline.columns[0].justify = "right"
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
    console = Console()
    wide = console.width >= 100
    table = _table()
    # The last 8 hex digits differ between sagas (the first 8 are the creation time);
    # every command takes them as SAGA_ID. Wide terminals get the whole id.
    table.add_column("saga", no_wrap=True)
    table.add_column("type", no_wrap=True, overflow="ellipsis")
    table.add_column("status", no_wrap=True)
    table.add_column("created", no_wrap=True)
    for s in page.items:
        table.add_row(
            str(s.saga_id) if wide else short_id(s.saga_id),
            f"{s.saga_type} v{s.saga_version}",
            str(s.status),
            _when(s.created_at),
        )
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
@click.argument("saga_id", type=SAGA_REF)
@click.argument("name")
@click.option("--data", "data_json", default=None, metavar="JSON", help="Signal data (object).")
@json_option
def signal(saga_id: str, name: str, data_json: str | None, as_json: bool) -> None:
    """Send the signal NAME to a waiting saga."""
    data = _json_arg(data_json, "--data")

    async def send(ops: SagaOperations) -> Accepted:
        return await ops.signal(await resolve(ops, saga_id), name, data, actor=_actor())

    _accepted(_run(send), as_json)


def _verb_command(verb: Verb, name: str, doc: str, *, step: bool = False) -> click.Command:
    def run(saga_id: str, reason: str, as_json: bool, step: str | None = None) -> None:
        if not reason.strip():
            raise click.BadParameter("give a reason (it is written to the audit log)")

        async def send(ops: SagaOperations) -> Accepted:
            sid = await resolve(ops, saga_id)
            return await ops.command(sid, verb, reason=reason.strip(), actor=_actor(), step=step)

        _accepted(_run(send), as_json)

    params: list[click.Parameter] = [click.Argument(["saga_id"], type=SAGA_REF)]
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
