"""The invariant checker catches each kind of violation (pure: no Kafka, no database)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from contracts import Envelope, MessageKind
from saga.chaos import (
    Effects,
    Evidence,
    OutboxSnapshot,
    SagaSnapshot,
    TopicMessage,
    check_invariants,
    format_faults,
    parse_faults,
    snapshot_saga,
)
from saga.errors import ConfigError
from saga.testing import ReplyFaults

T0 = datetime(2026, 1, 1, tzinfo=UTC)
UNDOABLE = {"order": frozenset({"reserve", "pay"})}
TOPICS = {"inventory.commands", "payments.commands", "orders.commands"}
TOPIC_OF = {
    "reserve": "inventory.commands",
    "pay": "payments.commands",
    "confirm": "orders.commands",
}


def message(
    saga_id: UUID, step: str, kind: MessageKind, at: int, *, message_id: UUID | None = None
) -> TopicMessage:
    env = Envelope(
        message_id=message_id or uuid4(),
        saga_id=saga_id,
        saga_type="order",
        saga_version=1,
        step=step,
        kind=kind,
        type=f"{step}.{kind.value}",
        occurred_at=T0 + timedelta(seconds=at),
    )
    return TopicMessage(topic=TOPIC_OF[step], partition=0, offset=at, envelope=env)


def cmd(saga_id: UUID, step: str, at: int) -> TopicMessage:
    return message(saga_id, step, MessageKind.COMMAND, at)


def comp(saga_id: UUID, step: str, at: int) -> TopicMessage:
    return message(saga_id, step, MessageKind.COMPENSATION, at)


def saga(
    sid: UUID, status: str, done: tuple[str, ...], undone: tuple[str, ...] = ()
) -> SagaSnapshot:
    return SagaSnapshot(
        saga_id=str(sid),
        saga_type="order",
        status=status,
        completion_order=done,
        compensation_order=undone,
        sent_steps=frozenset(done),
    )


def check(sagas: list[SagaSnapshot], messages: list[TopicMessage], **kw: object) -> dict[str, int]:
    evidence = Evidence(
        sagas=sagas,
        messages=messages,
        outbox=kw.pop("outbox", []),  # type: ignore[arg-type]
        audit_problems=kw.pop("audit_problems", []),  # type: ignore[arg-type]
        effects=kw.pop("effects", None),  # type: ignore[arg-type]
    )
    started = kw.pop("started", [s.saga_id for s in sagas])
    report = check_invariants(
        evidence,
        started=started,
        compensatable=UNDOABLE,
        commands_topics=TOPICS,  # type: ignore[arg-type]
    )
    return report.figures()


def test_a_clean_run_has_only_zeros() -> None:
    a, b = uuid4(), uuid4()
    msgs = [
        cmd(a, "reserve", 1),
        cmd(a, "pay", 2),
        cmd(a, "confirm", 3),
        cmd(b, "reserve", 1),
        cmd(b, "pay", 2),
        comp(b, "pay", 3),
        comp(b, "reserve", 4),
    ]
    sagas = [
        saga(a, "completed", ("reserve", "pay", "confirm")),
        saga(b, "compensated", ("reserve", "pay"), ("pay", "reserve")),
    ]
    figures = check(sagas, msgs)
    assert figures == {
        "sagas": 2,
        "lost": 0,
        "duplicate_commands": 0,
        "misordered_compensations": 0,
        "phantom_compensations": 0,
        "unpublished_outbox": 0,
        "audit_breaks": 0,
        "duplicate_messages": 0,
        "inconsistent_effects": 0,
    }


def test_missing_and_unfinished_sagas_are_lost_but_stuck_ones_are_not() -> None:
    a, b, c = uuid4(), uuid4(), uuid4()
    sagas = [saga(a, "running", ()), saga(b, "stuck", ("reserve",))]
    figures = check(sagas, [], started=[str(a), str(b), str(c)])
    assert figures["lost"] == 2  # a is running, c is missing; b waits for an operator


def test_a_command_delivered_twice_counts_once_per_extra_copy() -> None:
    a = uuid4()
    first = cmd(a, "reserve", 1)
    assert first.envelope is not None
    again = message(a, "reserve", MessageKind.COMMAND, 5, message_id=first.envelope.message_id)
    thrice = message(a, "reserve", MessageKind.COMMAND, 6, message_id=first.envelope.message_id)
    figures = check([saga(a, "completed", ("reserve",))], [first, again, thrice])
    assert figures["duplicate_commands"] == 2


def test_compensations_in_completion_order_are_misordered() -> None:
    a = uuid4()
    msgs = [cmd(a, "reserve", 1), cmd(a, "pay", 2), comp(a, "reserve", 3), comp(a, "pay", 4)]
    figures = check([saga(a, "compensated", ("reserve", "pay"), ("reserve", "pay"))], msgs)
    assert figures["misordered_compensations"] == 1


def test_a_compensated_saga_that_skipped_a_compensation_is_flagged() -> None:
    a = uuid4()
    msgs = [cmd(a, "reserve", 1), cmd(a, "pay", 2), comp(a, "pay", 3)]
    figures = check([saga(a, "compensated", ("reserve", "pay"), ("pay",))], msgs)
    assert figures["misordered_compensations"] == 1


def test_a_compensation_retried_is_not_misordered() -> None:
    a = uuid4()
    msgs = [
        cmd(a, "reserve", 1),
        cmd(a, "pay", 2),
        comp(a, "pay", 3),
        comp(a, "pay", 4),
        comp(a, "reserve", 5),
    ]
    figures = check([saga(a, "compensated", ("reserve", "pay"), ("pay", "reserve"))], msgs)
    assert figures["misordered_compensations"] == 0


def test_a_compensation_of_a_step_never_sent_is_a_phantom() -> None:
    a = uuid4()
    msgs = [cmd(a, "reserve", 1), comp(a, "pay", 2), comp(a, "reserve", 3)]
    figures = check([saga(a, "compensated", ("reserve",), ("reserve",))], msgs)
    assert figures["phantom_compensations"] == 1


def test_unpublished_rows_and_rows_missing_from_their_topic_are_counted() -> None:
    a = uuid4()
    on_topic = cmd(a, "reserve", 1)
    assert on_topic.envelope is not None
    outbox = [
        OutboxSnapshot(
            database="c",
            row_id=1,
            topic="inventory.commands",
            message_id=str(on_topic.envelope.message_id),
            published=True,
        ),
        OutboxSnapshot(
            database="c",
            row_id=2,
            topic="payments.commands",
            message_id=str(uuid4()),
            published=False,
        ),
        OutboxSnapshot(
            database="s", row_id=3, topic="saga.replies", message_id=str(uuid4()), published=True
        ),
        OutboxSnapshot(database="c", row_id=4, topic="saga.dlq", message_id=None, published=True),
    ]
    figures = check([saga(a, "completed", ("reserve",))], [on_topic], outbox=outbox)
    assert figures["unpublished_outbox"] == 2


def test_every_problem_of_the_audit_verification_is_a_break() -> None:
    a = uuid4()
    problems = [f"{a} seq 2: record altered", f"{a} seq 4: records removed from the tail"]
    figures = check([saga(a, "completed", ())], [], audit_problems=problems)
    assert figures["audit_breaks"] == 2


def reply(saga_id: UUID, message_id: UUID, *, injected: bool = False) -> TopicMessage:
    env = Envelope(
        message_id=message_id,
        saga_id=saga_id,
        saga_type="order",
        saga_version=1,
        step="reserve",
        kind=MessageKind.REPLY,
        type="step.succeeded",
        occurred_at=T0,
    )
    return TopicMessage(
        topic="saga.replies", partition=0, offset=0, envelope=env, injected=injected
    )


def test_a_reply_or_event_published_twice_is_a_duplicate_unless_injected_on_purpose() -> None:
    a, mid, other = uuid4(), uuid4(), uuid4()
    msgs = [
        reply(a, mid),
        reply(a, mid, injected=True),  # the fault injector's copy: expected
        reply(a, other),
        reply(a, other),  # published twice: a bug
    ]
    figures = check([saga(a, "completed", ())], msgs)
    assert figures["duplicate_messages"] == 1
    assert figures["duplicate_commands"] == 0


def test_effects_must_match_the_outcome_in_the_participants_tables() -> None:
    done, undone, leaky, partial = uuid4(), uuid4(), uuid4(), uuid4()

    def placed(sid: UUID, status: str) -> SagaSnapshot:
        return replace(saga(sid, status, ()), business_key=f"order-{sid}")

    sagas = [
        placed(done, "completed"),
        placed(undone, "compensated"),
        placed(leaky, "compensated"),
        placed(partial, "completed"),
    ]
    full = Effects(reservation="held", authorization="authorized", order="confirmed", shipment=True)
    effects = {
        f"order-{done}": full,
        f"order-{undone}": Effects(reservation="released", authorization="voided"),
        f"order-{leaky}": Effects(reservation="held"),  # compensated, stock still held
        f"order-{partial}": replace(full, shipment=False),  # completed, never shipped
    }
    figures = check(sagas, [], effects=effects)
    assert figures["inconsistent_effects"] == 2
    # Read but empty (the services wrote nothing): every completed order is inconsistent.
    assert check(sagas, [], effects={})["inconsistent_effects"] == 2


def test_snapshot_reads_the_engine_state_json() -> None:
    state = {
        "completion_order": ["reserve", "pay"],
        "compensation_order": ["pay"],
        "steps": {"reserve": {"sent": True}, "pay": {"sent": True}, "confirm": {"sent": False}},
    }
    snap = snapshot_saga("s", "order", "compensating", state)
    assert snap.completion_order == ("reserve", "pay")
    assert snap.sent_steps == frozenset({"reserve", "pay"})


def test_fault_specs_round_trip_and_reject_nonsense_with_the_key_named() -> None:
    faults = parse_faults("seed=3,duplicate=0.1,delay_ms=200,jitter_ms=50,reorder=1")
    assert faults == ReplyFaults(
        seed=3, duplicate_rate=0.1, delay_ms=200, delay_jitter_ms=50, reorder=True
    )
    assert parse_faults(format_faults(faults)) == faults
    assert parse_faults("") == ReplyFaults()
    for bad, named in [
        ("dupe=0.1", "dupe"),
        ("duplicate=2", "duplicate_rate"),
        ("delay_ms=soon", "delay_ms"),
        ("reorder", "reorder"),
    ]:
        with pytest.raises(ConfigError, match=named):
            parse_faults(bad)
