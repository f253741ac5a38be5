"""``saga dlq list|show|replay|discard``: the dead-letter topic for operators.

A dead letter is named ``PARTITION:OFFSET`` of the DLQ topic (``saga.dlq``). ``replay``
sends it back to the topic it was read from; ``discard`` marks it as needing nothing
more. Kafka cannot delete a record, so both are remembered in the database (with who
and why, also in the saga's audit log when the record belongs to one) and ``list``
hides handled dead letters unless ``--all``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from saga.cli import _options as opt
from saga.cli._common import fail, settings
from saga.cli._sagas import _actor
from saga.dlq import DeadLetter, DeadLetterHandled, DeadLetterNotFound, DeadLetters, parse_ref
from saga.errors import SagaError

T = TypeVar("T")

json_option = opt.json()


def _run(work: Callable[[DeadLetters], Awaitable[T]]) -> T:
    from saga.store import SqlStore, create_engine

    s = settings()

    async def main() -> T:
        engine = create_engine(s.database_url)
        try:
            return await work(DeadLetters(s.kafka_bootstrap_servers, s.topics, SqlStore(engine)))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except (DeadLetterNotFound, DeadLetterHandled) as exc:
        fail(exc, [(SagaError, "`saga dlq list --all` lists the dead letters.")])
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    except SagaError as exc:
        fail(exc)


def _ref(value: str) -> tuple[int, int]:
    try:
        return parse_ref(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="REF") from None


def to_json(record: DeadLetter) -> dict[str, Any]:
    """A dead letter as JSON (what ``--json`` prints)."""
    handled = record.handled
    return {
        "ref": record.ref,
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp.isoformat(),
        "reason": record.reason,
        "original_topic": record.original_topic,
        "original_partition": record.original_partition,
        "original_offset": record.original_offset,
        "consumer": record.consumer,
        "saga_id": record.saga_id,
        "type": record.message_type,
        "key": record.key.decode("utf-8", "replace") if record.key is not None else None,
        "headers": {k: v.decode("utf-8", "replace") for k, v in record.original_headers},
        "payload": record.payload,
        "handled": None
        if handled is None
        else {
            "action": handled.action,
            "actor": handled.actor,
            "reason": handled.reason,
            "at": handled.handled_at.isoformat(),
        },
    }


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 1)] + "…"


@click.group("dlq")
def dlq() -> None:
    """The dead-letter topic: list, show, replay or discard dead letters."""


@dlq.command("list")
@click.option("--all", "include_handled", is_flag=True, help="Also replayed/discarded ones.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@json_option
def list_(include_handled: bool, limit: int, as_json: bool) -> None:
    """List dead letters, newest first (handled ones hidden unless --all)."""
    records = _run(lambda d: d.recent(limit=limit, include_handled=include_handled))
    if as_json:
        click.echo(json.dumps([to_json(r) for r in records], indent=2, ensure_ascii=False))
        return
    if not records:
        click.echo("no dead letters" + ("" if include_handled else " to handle"))
        return
    width = shutil.get_terminal_size((80, 24)).columns
    for r in records:
        origin = f"{r.original_topic}[{r.original_partition}]@{r.original_offset}"
        state = f"  {r.handled.action} by {r.handled.actor}" if r.handled else ""
        click.echo(_fit(f"{r.ref:<8} {r.timestamp:%Y-%m-%d %H:%M:%S}  {origin}{state}", width))
        click.echo(_fit(f"    {r.reason}", width))
    click.echo(
        f"{len(records)} dead letter(s); `saga dlq show REF`, then "
        "`saga dlq replay REF --reason R` or `saga dlq discard REF --reason R`"
    )


@dlq.command("show")
@click.argument("ref", metavar="REF")
@json_option
def show(ref: str, as_json: bool) -> None:
    """Show the dead letter REF (PARTITION:OFFSET): why, where from, headers, payload."""
    partition, offset = _ref(ref)
    r = _run(lambda d: d.get(partition, offset))
    if as_json:
        click.echo(json.dumps(to_json(r), indent=2, ensure_ascii=False))
        return
    body = to_json(r)
    rows = [
        ("dead letter", f"{r.topic} {r.ref}"),
        ("parked at", f"{r.timestamp:%Y-%m-%d %H:%M:%S} UTC"),
        ("reason", r.reason),
        ("from", f"{r.original_topic} partition {r.original_partition} offset {r.original_offset}"),
        ("by", r.consumer or ""),
        ("saga", r.saga_id or "(none named)"),
        ("type", r.message_type or ""),
        ("key", body["key"] or ""),
    ]
    if r.handled:
        h = r.handled
        rows.append(("handled", f"{h.action} by {h.actor} at {h.handled_at:%Y-%m-%d %H:%M:%S}"))
        rows.append(("because", h.reason))
    for name, value in rows:
        click.echo(f"{name:<12} {value}")
    for name, value in body["headers"].items():
        click.echo(f"{'header':<12} {name}={value}")
    click.echo("payload:")
    payload = r.payload
    text = payload if isinstance(payload, str) else json.dumps(payload, indent=2)
    click.echo("\n".join(f"  {line}" for line in str(text).splitlines()))


@dlq.command("replay")
@click.argument("ref", metavar="REF")
@click.option("--reason", required=True, metavar="R", help="Why (written to the audit log).")
@click.option("--again", is_flag=True, help="Replay it even if it was handled before.")
@json_option
def replay(ref: str, reason: str, again: bool, as_json: bool) -> None:
    """Send the dead letter REF back to the topic it was read from."""
    partition, offset = _ref(ref)
    r = _run(
        lambda d: d.replay(partition, offset, actor=_actor(), reason=reason.strip(), again=again)
    )
    if as_json:
        click.echo(json.dumps(to_json(r), indent=2, ensure_ascii=False))
        return
    click.echo(f"replayed {r.ref} to {r.original_topic}")


@dlq.command("discard")
@click.argument("ref", metavar="REF")
@click.option("--reason", required=True, metavar="R", help="Why (written to the audit log).")
@json_option
def discard(ref: str, reason: str, as_json: bool) -> None:
    """Mark the dead letter REF as needing nothing more (hidden from `saga dlq list`)."""
    partition, offset = _ref(ref)
    r = _run(lambda d: d.discard(partition, offset, actor=_actor(), reason=reason.strip()))
    if as_json:
        click.echo(json.dumps(to_json(r), indent=2, ensure_ascii=False))
        return
    click.echo(f"discarded {r.ref} (the record stays in {r.topic}; lists hide it)")
