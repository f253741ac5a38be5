"""The invariant checker of a chaos run: nothing lost, duplicated or misordered.

Theory of operation
-------------------
After a run, when every process is stopped, :func:`collect_evidence` reads the
coordinator's database (sagas, audit log, outbox), the services' database (outbox) and
every topic of the deployment with a ``read_committed`` consumer. :func:`check_invariants`
is pure: it turns that evidence into the figures below, each of which must be 0.

``lost``
    Sagas the driver started that are missing from the database, or are neither final
    (``completed``, ``compensated``, ``aborted``) nor ``stuck`` (parked for an operator,
    visibly) after the quiet period.
``duplicate_commands``
    Extra copies of command and compensation messages, by message id, across all
    ``<participant>.commands`` topics (a message id seen ``n`` times counts ``n - 1``).
``duplicate_messages``
    The same on the replies and events topics: replies (and timers, signals) published
    twice, lifecycle events published twice. The copies a
    :class:`saga.testing.FaultInjector` adds on purpose carry its header and are not
    counted.
``misordered_compensations``
    Sagas whose compensation messages (ordered by ``occurred_at``, first occurrence of
    each step) are not the reverse of the completion order recorded in the saga state,
    restricted to steps that have a compensation; a compensated saga must have sent
    every one of them, and its recorded ``compensation_order`` must agree. A completed
    saga must have sent none.
``phantom_compensations``
    Compensation messages for a (saga, step) whose command was never published, or
    whose step the saga state says was never sent.
``unpublished_outbox``
    Outbox rows (both databases) never marked published, plus rows marked published
    whose message is not on their topic.
``inconsistent_effects``
    Sagas whose business effects, read from the participants' own tables, disagree
    with their outcome: a completed order placement must hold exactly one stock
    reservation, one payment authorization, one confirmed order and one shipment; a
    compensated one none of them (released, voided, or never made).
``audit_breaks``
    Problems found by the full audit verification (:func:`saga.audit.verify_all`: the
    hash chains, and the tail of each chain against its saga's revision).
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from aiokafka import AIOKafkaConsumer
from sqlalchemy import select

from contracts import ContractDecodeError, Envelope, MessageKind
from saga.kafka import close_quietly, topic_partitions, translate_kafka_errors
from saga.store import create_engine
from saga.store.tables import outbox, sagas
from saga.testing import INJECTED_HEADER

FINAL: Final = frozenset({"completed", "compensated", "aborted"})
"""Statuses after which a saga never changes by itself."""
PARKED: Final = frozenset({"stuck"})
"""Statuses that wait for an operator: visible, so not lost."""

FIGURES: Final = (
    "sagas",
    "lost",
    "duplicate_commands",
    "misordered_compensations",
    "phantom_compensations",
    "unpublished_outbox",
    "audit_breaks",
    "duplicate_messages",
    "inconsistent_effects",
)
"""The keys of :meth:`InvariantReport.figures`, in print order."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TopicMessage:
    """One committed record of a deployment topic."""

    topic: str
    partition: int
    offset: int
    envelope: Envelope | None
    """The decoded envelope (``None`` when the value is not one, e.g. on the DLQ)."""
    injected: bool = False
    """A copy a fault injector added on purpose (its header is on the record)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class SagaSnapshot:
    """What the checker needs of one saga row."""

    saga_id: str
    saga_type: str
    status: str
    completion_order: tuple[str, ...] = ()
    compensation_order: tuple[str, ...] = ()
    sent_steps: frozenset[str] = frozenset()
    business_key: str | None = None
    """The order id of an order placement (from its context)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Effects:
    """The business effects of one order, read from the example services' tables."""

    reservation: str | None = None
    """Status of the stock reservation (``held``, ``released``, ``cancelled``) or None."""
    authorization: str | None = None
    """Status of the payment authorization (``authorized``, ``voided``, ...) or None."""
    order: str | None = None
    """Status of the order row (``confirmed``) or None."""
    shipment: bool = False
    """Whether a shipment was scheduled."""


def effects_problem(status: str, effects: Effects) -> str | None:
    """Why an order placement's effects disagree with its final status (None: they agree)."""
    if status == "completed":
        wanted = Effects(
            reservation="held", authorization="authorized", order="confirmed", shipment=True
        )
        return None if effects == wanted else f"completed, but {effects}"
    if status == "compensated":
        left = (
            effects.reservation == "held"
            or effects.authorization == "authorized"
            or effects.order is not None
            or effects.shipment
        )
        return f"compensated, but {effects}" if left else None
    return None


@dataclass(frozen=True, kw_only=True, slots=True)
class OutboxSnapshot:
    """What the checker needs of one outbox row."""

    database: str
    """Which database it is in (``coordinator`` or ``services``)."""
    row_id: int
    topic: str
    message_id: str | None
    """The id of the envelope in the payload (``None`` for dead letters)."""
    published: bool


@dataclass(frozen=True, kw_only=True)
class Evidence:
    """Everything a chaos run left behind, read after every process stopped."""

    sagas: list[SagaSnapshot]
    messages: list[TopicMessage]
    outbox: list[OutboxSnapshot]
    audit_problems: list[str]
    """Every problem of the full audit verification, as ``saga seq: detail``."""
    effects: Mapping[str, Effects] | None = None
    """Business effects by order id (``None`` when the services' tables were not read)."""


@dataclass(frozen=True, kw_only=True)
class InvariantReport:
    """The figures of a run; every one but ``sagas`` must be 0."""

    sagas: int
    lost: int
    duplicate_commands: int
    misordered_compensations: int
    phantom_compensations: int
    unpublished_outbox: int
    audit_breaks: int
    duplicate_messages: int = 0
    inconsistent_effects: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    """Sagas per final status (information, not an invariant)."""
    examples: dict[str, list[str]] = field(default_factory=dict)
    """A few offending ids per figure, for the post-mortem."""

    def figures(self) -> dict[str, int]:
        """The invariant figures, keyed exactly as in ``saga chaos --json``."""
        return {name: int(getattr(self, name)) for name in FIGURES}

    @property
    def ok(self) -> bool:
        """Whether every invariant holds."""
        return all(v == 0 for k, v in self.figures().items() if k != "sagas")


def snapshot_saga(
    saga_id: str, saga_type: str, status: str, state: Mapping[str, Any]
) -> SagaSnapshot:
    """Build a :class:`SagaSnapshot` from a stored row and its ``SagaState`` JSON."""
    steps: Mapping[str, Mapping[str, Any]] = state.get("steps") or {}
    context: Mapping[str, Any] = state.get("context") or {}
    key = context.get("order_id")
    return SagaSnapshot(
        business_key=str(key) if key is not None else None,
        saga_id=saga_id,
        saga_type=saga_type,
        status=status,
        completion_order=tuple(state.get("completion_order") or ()),
        compensation_order=tuple(state.get("compensation_order") or ()),
        sent_steps=frozenset(name for name, st in steps.items() if st.get("sent")),
    )


def check_invariants(
    evidence: Evidence,
    *,
    started: Collection[str],
    compensatable: Mapping[str, frozenset[str]],
    commands_topics: Collection[str],
    max_examples: int = 5,
) -> InvariantReport:
    """Turn the evidence of a run into its invariant figures (pure).

    Args:
        evidence: What the run left behind.
        started: Ids of every saga the driver started.
        compensatable: Per saga type, the steps that have a compensation.
        commands_topics: The ``<participant>.commands`` topics.
        max_examples: How many offending ids to keep per figure.
    """
    examples: dict[str, list[str]] = defaultdict(list)

    def note(figure: str, what: str) -> None:
        if len(examples[figure]) < max_examples:
            examples[figure].append(what)

    by_id = {s.saga_id: s for s in evidence.sagas}
    outcomes = Counter(by_id[s].status if s in by_id else "missing" for s in started)

    lost = 0
    for sid in sorted(started):
        saga = by_id.get(sid)
        if saga is None or saga.status not in FINAL | PARKED:
            lost += 1
            note("lost", f"{sid} ({saga.status if saga else 'missing'})")

    commands = [
        m
        for m in evidence.messages
        if m.topic in commands_topics
        and m.envelope is not None
        and m.envelope.kind in (MessageKind.COMMAND, MessageKind.COMPENSATION)
    ]
    copies = Counter(str(m.envelope.message_id) for m in commands if m.envelope is not None)
    duplicate_commands = 0
    for mid, n in sorted(copies.items()):
        if n > 1:
            duplicate_commands += n - 1
            note("duplicate_commands", f"{mid} x{n}")

    sent: set[tuple[str, str | None]] = set()
    compensations: dict[str, list[tuple[datetime, str, int, int, str]]] = defaultdict(list)
    for m in commands:
        env = m.envelope
        assert env is not None
        if env.kind is MessageKind.COMMAND:
            sent.add((str(env.saga_id), env.step))
        else:
            key = (env.occurred_at, m.topic, m.partition, m.offset, env.step or "")
            compensations[str(env.saga_id)].append(key)

    phantom = 0
    misordered = 0
    for sid, items in sorted(compensations.items()):
        saga = by_id.get(sid)
        for *_, step in items:
            never_sent = (sid, step) not in sent or (
                saga is not None and step not in saga.sent_steps
            )
            if never_sent:
                phantom += 1
                note("phantom_compensations", f"{sid}/{step}")
    for sid, saga in sorted(by_id.items()):
        observed = list(dict.fromkeys(step for *_, step in sorted(compensations.get(sid, []))))
        undoable = compensatable.get(saga.saga_type, frozenset())
        expected = [s for s in reversed(saga.completion_order) if s in undoable]
        if saga.status == "completed":
            bad = bool(observed)
        elif saga.status == "compensated":
            recorded = [s for s in saga.compensation_order if s in undoable]
            bad = observed != expected or recorded != expected
        else:
            bad = observed != expected[: len(observed)]
        if bad:
            misordered += 1
            note("misordered_compensations", f"{sid}: sent {observed}, expected {expected}")

    on_topic = {
        (m.topic, str(m.envelope.message_id)) for m in evidence.messages if m.envelope is not None
    }
    unpublished = 0
    for row in evidence.outbox:
        missing = row.message_id is not None and (row.topic, row.message_id) not in on_topic
        if not row.published or missing:
            unpublished += 1
            state = "unpublished" if not row.published else "published but not on the topic"
            note("unpublished_outbox", f"{row.database} row {row.row_id} -> {row.topic}: {state}")

    for problem in evidence.audit_problems:
        note("audit_breaks", problem)

    others = Counter(
        str(m.envelope.message_id)
        for m in evidence.messages
        if m.topic not in commands_topics and m.envelope is not None and not m.injected
    )
    duplicate_messages = 0
    for mid, n in sorted(others.items()):
        if n > 1:
            duplicate_messages += n - 1
            note("duplicate_messages", f"{mid} x{n}")

    inconsistent = 0
    if evidence.effects is not None:
        for sid in sorted(started):
            saga = by_id.get(sid)
            if saga is None or saga.business_key is None:
                continue
            effects = evidence.effects.get(saga.business_key, Effects())
            wrong = effects_problem(saga.status, effects)
            if wrong is not None:
                inconsistent += 1
                note("inconsistent_effects", f"{sid} ({saga.business_key}): {wrong}")

    return InvariantReport(
        sagas=len(started),
        lost=lost,
        duplicate_commands=duplicate_commands,
        misordered_compensations=misordered,
        phantom_compensations=phantom,
        unpublished_outbox=unpublished,
        audit_breaks=len(evidence.audit_problems),
        duplicate_messages=duplicate_messages,
        inconsistent_effects=inconsistent,
        outcomes=dict(sorted(outcomes.items())),
        examples={k: v for k, v in examples.items() if v},
    )


# ----------------------------------------------------------------------------- reading


def _envelope(value: bytes | None) -> Envelope | None:
    try:
        return Envelope.from_bytes(value)
    except ContractDecodeError:
        return None


async def read_topics(
    bootstrap_servers: str, topic_names: Iterable[str], *, timeout_s: float = 120.0
) -> list[TopicMessage]:
    """Read every committed record of ``topic_names`` from the beginning to the end.

    Uses a ``read_committed`` consumer without a group; the end is the last stable
    offset of each partition when the read starts (call it when nothing writes).

    Raises:
        TimeoutError: The end was not reached within ``timeout_s``.
        TransportError: Kafka could not be reached.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    out: list[TopicMessage] = []
    try:
        with translate_kafka_errors():
            partitions = await topic_partitions(bootstrap_servers, sorted(set(topic_names)))
            await consumer.start()
            if not partitions:
                return out
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            pending = {tp for tp in partitions if ends[tp] > 0}
            async with asyncio.timeout(timeout_s):
                while pending:
                    batch = await consumer.getmany(timeout_ms=500)
                    for records in batch.values():
                        out.extend(
                            TopicMessage(
                                topic=r.topic,
                                partition=r.partition,
                                offset=r.offset,
                                envelope=_envelope(r.value),
                                injected=any(k == INJECTED_HEADER for k, _ in r.headers or ()),
                            )
                            for r in records
                        )
                    for tp in list(pending):
                        if await consumer.position(tp) >= ends[tp]:
                            pending.discard(tp)
    finally:
        await close_quietly(consumer)
    return out


async def read_database(
    url: str, *, database: str, with_sagas: bool
) -> tuple[list[SagaSnapshot], list[OutboxSnapshot], list[str]]:
    """Read the sagas and outbox rows of one database, and verify its audit log."""
    from saga.audit import verify_all

    engine = create_engine(url)
    try:
        snapshots: list[SagaSnapshot] = []
        problems: list[str] = []
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(outbox.c.id, outbox.c.topic, outbox.c.payload, outbox.c.published_at)
            )
            rows_out = [
                OutboxSnapshot(
                    database=database,
                    row_id=int(r.id),
                    topic=r.topic,
                    message_id=(
                        str(env.message_id) if (env := _envelope(r.payload)) is not None else None
                    ),
                    published=r.published_at is not None,
                )
                for r in rows
            ]
            if with_sagas:
                saga_rows = await conn.execute(
                    select(sagas.c.id, sagas.c.saga_type, sagas.c.status, sagas.c.state)
                )
                snapshots = [snapshot_saga(r.id, r.saga_type, r.status, r.state) for r in saga_rows]
        if with_sagas:
            async for page in verify_all(engine):
                problems.extend(f"{p.saga_id} seq {p.seq}: {p.detail}" for p in page.problems)
        return snapshots, rows_out, problems
    finally:
        await engine.dispose()


async def read_effects(url: str) -> dict[str, Effects]:
    """The example services' effects per order id (their own tables, one database)."""
    from services.inventory import reservations
    from services.orders import orders
    from services.payments import authorizations
    from services.shipping import shipments

    found: dict[str, dict[str, Any]] = defaultdict(dict)
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            for field_name, table in (
                ("reservation", reservations),
                ("authorization", authorizations),
                ("order", orders),
            ):
                rows = await conn.execute(select(table.c.order_id, table.c.status))
                for order_id, status in rows:
                    found[str(order_id)][field_name] = str(status)
            for (order_id,) in await conn.execute(select(shipments.c.order_id)):
                found[str(order_id)]["shipment"] = True
    finally:
        await engine.dispose()
    return {order_id: Effects(**fields) for order_id, fields in found.items()}


async def collect_evidence(
    *,
    coordinator_url: str,
    services_url: str | None,
    bootstrap_servers: str,
    topic_names: Sequence[str],
    timeout_s: float = 120.0,
) -> Evidence:
    """Read the databases and topics of a finished run (see the module docstring)."""
    saga_rows, outbox_rows, problems = await read_database(
        coordinator_url, database="coordinator", with_sagas=True
    )
    effects: dict[str, Effects] | None = None
    if services_url is not None:
        _, more, _ = await read_database(services_url, database="services", with_sagas=False)
        outbox_rows.extend(more)
        effects = await read_effects(services_url)
    messages = await read_topics(bootstrap_servers, topic_names, timeout_s=timeout_s)
    return Evidence(
        sagas=saga_rows,
        messages=messages,
        outbox=outbox_rows,
        audit_problems=problems,
        effects=effects,
    )
