"""The bench saga and its participants.

The saga has ``steps`` compensatable steps spread round-robin over three participants
(``bench1``, ``bench2``, ``bench3``). Each command carries an opaque ``pad`` string of
the configured size. A participant handles a command by inserting ONE row into its own
table (``bench_<participant>_rows``) in transactional mode — inside the SDK's batch
transaction, so the row, the inbox entry, the reply (outbox) and the offset commit
together — and replies. A saga whose input names a step in ``fail`` gets a permanent
failure from that step, so every completed step before it is compensated (each
compensation inserts a row as well).

Each row also records the two timestamps the harness derives the step latency from:
``command_at``, the command envelope's ``occurred_at`` (the coordinator's clock when it
began applying the batch that consumed the previous reply), and ``read_at``, the
participant's wall clock when the handler started (see :mod:`saga.bench._run`).
"""

from __future__ import annotations

import time
from typing import Final

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.dml import Insert

from saga.definition import RetryPolicy, SagaBuilder, SagaDefinition, compensatable
from saga.participant import CommandContext, HandlerResult, Participant, PermanentError
from saga.store.tables import BigId

SAGA_TYPE: Final = "bench"
"""Name of the bench saga definition."""
PARTICIPANTS: Final = ("bench1", "bench2", "bench3")
"""The three bench participants."""
STEP_TIMEOUT_MS: Final = 120_000
"""Generous: a benchmark measures, it does not exercise timeouts."""


class BenchCommand(BaseModel):
    """Payload of every bench command and compensation."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    pad: str = ""
    """Opaque payload of the configured size."""
    fail: str = ""
    """Name of the step that fails for good in this saga ('' for none)."""


def participant_of(index: int) -> str:
    """The participant of the ``index``-th step (0-based)."""
    return PARTICIPANTS[index % len(PARTICIPANTS)]


def step_name(index: int) -> str:
    """The name of the ``index``-th step (0-based)."""
    return f"s{index + 1}"


def bench_definition(steps: int = 3) -> SagaDefinition:
    """The bench saga with ``steps`` compensatable steps (version = number of steps)."""
    builder = SagaBuilder(SAGA_TYPE, version=steps)
    specs = [
        compensatable(
            step_name(i),
            participant=participant_of(i),
            command=f"{participant_of(i)}.write",
            compensation=f"{participant_of(i)}.undo",
            input={"pad": "pad", "fail": "fail"},
            retry=RetryPolicy(max_attempts=1),
            timeout_ms=STEP_TIMEOUT_MS,
        )
        for i in range(steps)
    ]
    return builder.add(*specs).build()


def rows_table(participant: str, metadata: MetaData | None = None) -> Table:
    """The table a bench participant writes one row per handled command into."""
    return Table(
        f"bench_{participant}_rows",
        metadata if metadata is not None else MetaData(),
        Column("id", BigId, primary_key=True),
        Column("saga_id", String(36), nullable=False),
        Column("step", String(64), nullable=False),
        Column("attempt", Integer, nullable=False),
        Column("kind", String(16), nullable=False),
        Column("command_at", Float, nullable=False, comment="envelope occurred_at (epoch s)"),
        Column("read_at", Float, nullable=False, comment="handler start (epoch s)"),
        Column("payload", Text, nullable=False),
    )


async def create_rows_table(engine: AsyncEngine, participant: str) -> Table:
    """Create the participant's rows table if missing; return it."""
    table = rows_table(participant)
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: table.metadata.create_all(c, checkfirst=True))
    return table


def register_handlers(participant: Participant, table: Table) -> None:
    """Register the bench write/undo handlers of ``participant`` (one row per command)."""
    name = participant.name
    # Built once: SQLAlchemy then finds the compiled statement in its cache by identity,
    # where a statement built per command (``insert().values(...)``) is compiled and
    # keyed anew each time.
    insert = table.insert()

    async def write(cmd: BenchCommand, ctx: CommandContext) -> HandlerResult:
        await _insert(insert, cmd, ctx, "command")
        if cmd.fail and cmd.fail == ctx.step:
            raise PermanentError("bench.failed", f"step {ctx.step} fails by request")
        return None

    async def undo(cmd: BenchCommand, ctx: CommandContext) -> HandlerResult:
        await _insert(insert, cmd, ctx, "compensation")
        return None

    participant.register(f"{name}.write", write, model=BenchCommand)
    participant.register(f"{name}.undo", undo, model=BenchCommand)


async def _insert(insert: Insert, cmd: BenchCommand, ctx: CommandContext, kind: str) -> None:
    read_at = time.time()
    await ctx.db.execute(
        insert,
        {
            "saga_id": str(ctx.saga_id),
            "step": ctx.step or "",
            "attempt": ctx.attempt,
            "kind": kind,
            "command_at": ctx.envelope.occurred_at.timestamp(),
            "read_at": read_at,
            "payload": cmd.pad,
        },
    )
