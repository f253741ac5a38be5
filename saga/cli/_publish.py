"""``saga publish-start``: put a start request on the starts topic from the shell.

The coordinator that owns the request's partition starts the saga once per idempotency
key (see :mod:`saga.coordinator._starter`). ``--wait`` reads the database until the saga
exists, so a script learns its id (or, from the dead-letter topic, why it was refused).
"""

from __future__ import annotations

import asyncio
import time
from uuid import UUID

import click

from contracts import StartRequest
from saga.cli._common import fail, settings
from saga.cli._sagas import _actor, _json_arg
from saga.errors import SagaError
from saga.kafka import close_quietly, idempotent_producer, translate_kafka_errors


@click.command("publish-start")
@click.argument("saga_type")
@click.option("--input", "input_json", default=None, help="The saga's input, a JSON object.")
@click.option(
    "--key", default=None, help="Kafka key (a business key); default: the saga id or request id."
)
@click.option("--version", type=click.IntRange(min=1), default=None, help="Definition version.")
@click.option(
    "--idempotency-key",
    default=None,
    help="At most one saga per key (default: one per request, `start:<request id>`).",
)
@click.option("--correlation-id", type=click.UUID, default=None)
@click.option("--saga-id", type=click.UUID, default=None, help="The new saga's id.")
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="Wait until the saga exists in the database and print its id.",
)
def publish_start(
    saga_type: str,
    input_json: str | None,
    key: str | None,
    version: int | None,
    idempotency_key: str | None,
    correlation_id: UUID | None,
    saga_id: UUID | None,
    wait: float | None,
) -> None:
    """Publish a start request for a saga of SAGA_TYPE to the starts topic."""
    s = settings()
    request = StartRequest(
        saga_type=saga_type,
        saga_version=version,
        input=_json_arg(input_json, "--input"),
        idempotency_key=idempotency_key,
        correlation_id=correlation_id,
        saga_id=saga_id,
        requested_by=_actor(),
    )
    kafka_key = (key or str(saga_id or request.message_id)).encode()
    try:
        asyncio.run(_publish(s.kafka_bootstrap_servers, s.topics.starts, kafka_key, request))
    except SagaError as exc:
        fail(exc)
    click.echo(f"published start request {request.message_id} to {s.topics.starts}")
    click.echo(f"idempotency key: {request.effective_idempotency_key}")
    if wait is None:
        return
    try:
        found = asyncio.run(_wait_for_saga(s.database_url, request.effective_idempotency_key, wait))
    except SagaError as exc:
        fail(exc)
    if found is None:
        raise click.ClickException(
            f"no saga started within {wait:g}s\nWhat to do: check that a coordinator runs"
            f" (`saga coordinator`), and read {s.topics.dlq} for a refusal (its"
            " saga.dlq.reason header says why)."
        )
    click.echo(f"saga {found}")


async def _publish(bootstrap: str, topic: str, key: bytes, request: StartRequest) -> None:
    producer = idempotent_producer(bootstrap)
    with translate_kafka_errors(f"publish a start request to {topic}"):
        try:
            await producer.start()
            await producer.send_and_wait(topic, request.to_bytes(), key=key)
        finally:
            await close_quietly(producer)


async def _wait_for_saga(database_url: str, idempotency_key: str, seconds: float) -> str | None:
    from saga.store import SqlStore, create_engine

    engine = create_engine(database_url)
    try:
        store = SqlStore(engine)
        deadline = time.monotonic() + seconds
        while True:
            found = await store.saga_id_for_key(idempotency_key)
            if found is not None or time.monotonic() >= deadline:
                return found
            await asyncio.sleep(0.2)
    finally:
        await engine.dispose()
