"""``saga outbox``: the rows Kafka refused for good (``quarantined``, ``requeue``, ``discard``).

A relay moves an outbox row that Kafka keeps refusing (over the size limit, a topic
that does not exist) to the quarantine table, so that the rows behind it go out. These
commands show such rows and, once the cause is fixed, send them again.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from saga.cli import _options as opt
from saga.cli._common import fail, settings
from saga.errors import SagaError
from saga.relay import Quarantine
from saga.store import create_engine

T = TypeVar("T")

database_option = click.option(
    "--database-url",
    default=None,
    help="The database whose outbox to look at (default: SAGA_DATABASE_URL, the "
    "coordinator's; give a service's database for its replies).",
)


def _with_quarantine(url: str | None, work: Callable[[Quarantine], Awaitable[T]]) -> T:
    async def run() -> T:
        engine = create_engine(url or settings().database_url)
        try:
            return await work(Quarantine(engine))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except SagaError as exc:
        fail(exc)


def _refuse_missing(asked: tuple[str, ...], done: list[str]) -> None:
    missing = sorted(set(asked) - set(done))
    if missing:
        raise click.ClickException(
            f"not in the quarantine: {', '.join(missing)}\n"
            "What to do: `saga outbox quarantined` lists the rows there."
        )


@click.group("outbox")
def outbox() -> None:
    """Outbox rows that Kafka refused for good, and what to do with them."""


@outbox.command("quarantined")
@database_option
@opt.json()
def quarantined(database_url: str | None, as_json: bool) -> None:
    """List the quarantined rows, oldest first, with Kafka's reason."""
    rows = _with_quarantine(database_url, lambda q: q.rows())
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "message_id": r.message_id,
                        "topic": r.topic,
                        "lane": f"{r.owner_topic}[{r.shard}]",
                        "payload_bytes": r.payload_bytes,
                        "attempts": r.attempts,
                        "reason": r.reason,
                        "quarantined_at": r.quarantined_at.isoformat(),
                    }
                    for r in rows
                ],
                indent=2,
            )
        )
        return
    if not rows:
        click.echo("no quarantined outbox rows")
        return
    for r in rows:
        when = r.quarantined_at.strftime("%Y-%m-%d %H:%M:%S")
        click.echo(f"{r.message_id}  {when}  {r.topic}  {r.payload_bytes} bytes")
        click.echo(f"    refused {r.attempts} times: {r.reason}")
    click.echo(
        f"{len(rows)} quarantined; fix the cause, then `saga outbox requeue MESSAGE_ID`"
        " (or --all) sends them again"
    )


@outbox.command("requeue")
@database_option
@click.argument("message_ids", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Requeue every quarantined row.")
def requeue(database_url: str | None, message_ids: tuple[str, ...], everything: bool) -> None:
    """Put quarantined rows back at the end of their outbox lanes (the relay sends them)."""
    if bool(message_ids) == everything:
        raise click.UsageError("name the MESSAGE_IDS to requeue, or pass --all")
    wanted = None if everything else list(message_ids)
    moved = _with_quarantine(database_url, lambda q: q.requeue(wanted))
    for message_id in moved:
        click.echo(f"requeued {message_id}")
    _refuse_missing(message_ids, moved)
    if not moved:
        click.echo("no quarantined outbox rows")


@outbox.command("discard")
@database_option
@click.argument("message_ids", nargs=-1, required=True)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def discard(database_url: str | None, message_ids: tuple[str, ...], yes: bool) -> None:
    """Delete quarantined rows for good: their messages are never sent."""
    if not yes:
        click.confirm(f"Delete {len(message_ids)} quarantined row(s) for good?", abort=True)
    gone = _with_quarantine(database_url, lambda q: q.discard(list(message_ids)))
    for message_id in gone:
        click.echo(f"discarded {message_id}")
    _refuse_missing(message_ids, gone)
