"""saga.testing.SagaTest: a definition run in memory against plain Python handlers."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from contracts import InventoryReserved, ReserveInventory
from saga.definition import (
    OnTimeout,
    RetryPolicy,
    SagaBuilder,
    SagaDefinition,
    compensatable,
    pivot,
    retriable,
    wait,
)
from saga.definition.examples.order_placement import ORDER_PLACEMENT
from saga.engine import TimerKind
from saga.participant import CommandContext, Mode, Participant, ParticipantConfig
from saga.testing import (
    NO_REPLY,
    T0,
    Call,
    OperatorRejected,
    PermanentError,
    RetriableError,
    SagaTest,
    SagaTestError,
)

ORDER = {
    "order_id": "o-1",
    "customer_id": "c-1",
    "lines": [{"sku": "sku-apple", "quantity": 2}],
    "total_cents": 4200,
    "currency": "EUR",
    "shipping_address": {"city": "London"},
}

FAST = RetryPolicy(max_attempts=2, initial_delay_ms=100, jitter=0)


def small(*, deadline_ms: int | None = None, pivot_retry: RetryPolicy = FAST) -> SagaDefinition:
    """``a -> b -> p (pivot) -> r (retriable)``, every step with a timeout."""
    return (
        SagaBuilder("small", deadline_ms=deadline_ms)
        .add(
            compensatable(
                "a",
                participant="sa",
                command="a.do",
                compensation="a.undo",
                input={"id": "id"},
                output={"a_ref": "ref"},
                compensation_input={"ref": "a_ref"},
                retry=FAST,
                compensation_retry=FAST,
                timeout_ms=1_000,
            ),
            compensatable(
                "b",
                participant="sb",
                command="b.do",
                compensation="b.undo",
                retry=FAST,
                compensation_retry=FAST,
                timeout_ms=1_000,
            ),
            pivot("p", participant="sp", command="p.do", retry=pivot_retry, timeout_ms=1_000),
            retriable(
                "r",
                participant="sr",
                command="r.do",
                retry=RetryPolicy(max_attempts=None, initial_delay_ms=100, jitter=0),
                timeout_ms=1_000,
            ),
        )
        .build()
    )


def approval(on_timeout: OnTimeout = OnTimeout.FAIL) -> SagaDefinition:
    return (
        SagaBuilder("approval")
        .add(
            compensatable("a", participant="sa", command="a.do", compensation="a.undo"),
            wait(
                "approve",
                signal="approved",
                timeout_ms=60_000,
                on_timeout=on_timeout,
                output={"by": "who"},
            ),
            pivot("p", participant="sp", command="p.do"),
        )
        .build()
    )


# -- outcomes ---------------------------------------------------------------------------


def test_the_happy_path_completes_with_the_mapped_outputs() -> None:
    t = SagaTest(ORDER_PLACEMENT)
    t.handle("inventory.reserve", lambda p: {"reservation_id": f"r-{p['order_id']}"})
    t.handle("payments.authorize", lambda p: {"authorization_id": "auth-1"})
    t.handle("shipping.schedule", lambda p: {"shipment_id": "s-1", "carrier": "dhl"})
    result = t.run(ORDER)
    result.assert_status("completed")
    assert result.completed == [
        "reserve_inventory",
        "authorize_payment",
        "confirm_order",
        "schedule_shipping",
    ]
    assert result.compensated == []
    assert result.context["reservation_id"] == "r-o-1"
    assert result.context["carrier"] == "dhl"
    assert result.sent == [
        "inventory.reserve@1",
        "payments.authorize@1",
        "orders.confirm@1",
        "shipping.schedule@1",
    ]
    assert result.elapsed_ms == 0
    assert result.is_terminal
    assert not result.stalled
    assert "saga.completed" in result.lifecycle


def test_a_permanent_failure_compensates_in_reverse_order() -> None:
    undone: list[dict[str, Any]] = []
    t = SagaTest(ORDER_PLACEMENT)
    t.handle("inventory.reserve", lambda p: {"reservation_id": "r-1"})
    t.fail("payments.authorize", code="payment.declined")
    t.handle("inventory.release", lambda p: undone.append(p))
    result = t.run(ORDER)
    assert result.status == "compensated"
    assert result.compensated == ["reserve_inventory"]
    assert result.failure == "payment.declined"
    assert undone == [{"order_id": "o-1", "reservation_id": "r-1"}]
    assert "event.compensation_succeeded" in result.timeline_kinds
    result.assert_timeline(
        ("step.failed", "authorize_payment"), ("compensation.sent", "reserve_inventory")
    )
    result.assert_compensated_in_reverse_order()


def test_a_handler_raises_the_sdk_failure_types() -> None:
    def authorize(payload: dict[str, Any]) -> dict[str, Any]:
        raise PermanentError("payment.declined", "over the limit")

    t = SagaTest(ORDER_PLACEMENT).handle("payments.authorize", authorize)
    result = t.run(ORDER)
    assert result.status == "compensated"
    failed = result.entries("event.step_failed", "authorize_payment")[0]
    assert failed.detail["event"]["message"] == "over the limit"


def test_a_retriable_error_is_retried_under_the_policy_then_succeeds() -> None:
    def authorize(payload: dict[str, Any], call: Call) -> dict[str, Any]:
        if call.attempt < 3:
            raise RetriableError("payments.unavailable", retry_after_ms=1_500)
        return {"authorization_id": f"auth@{call.attempt}"}

    result = SagaTest(ORDER_PLACEMENT).handle("authorize_payment", authorize).run(ORDER)
    assert result.status == "completed"
    assert result.attempts("authorize_payment") == 3
    assert result.context["authorization_id"] == "auth@3"
    assert result.elapsed_ms >= 3_000  # retry_after_ms is a lower bound of each back-off


def test_async_handlers_and_none_outputs() -> None:
    async def reserve(payload: dict[str, Any]) -> dict[str, Any]:
        return {"reservation_id": "r-async"}

    async def release(payload: dict[str, Any], call: Call) -> None:
        assert call.compensation

    t = SagaTest(ORDER_PLACEMENT).handle("inventory.reserve", reserve)
    t.handle("inventory.release", release).fail("payments.authorize", code="x")
    result = t.run(ORDER)
    assert result.status == "compensated"
    assert result.context["reservation_id"] == "r-async"


async def test_async_handlers_inside_an_async_test() -> None:
    async def reserve(payload: dict[str, Any]) -> dict[str, Any]:
        return {"reservation_id": "r-in-loop"}

    result = SagaTest(ORDER_PLACEMENT).handle("inventory.reserve", reserve).run(ORDER)
    assert result.context["reservation_id"] == "r-in-loop"


def test_an_unexpected_exception_is_a_retriable_handler_exception() -> None:
    calls = []

    def confirm(payload: dict[str, Any]) -> dict[str, Any]:
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("boom")
        return {}

    result = SagaTest(ORDER_PLACEMENT).handle("orders.confirm", confirm).run(ORDER)
    assert result.status == "completed"
    assert result.attempts("confirm_order") == 2
    assert [type(e) for e in result.handler_errors] == [KeyError]


def test_pydantic_outputs_and_bad_outputs() -> None:
    class Out(BaseModel):
        reservation_id: str

    t = SagaTest(ORDER_PLACEMENT).handle("inventory.reserve", lambda p: Out(reservation_id="m"))
    assert t.run(ORDER).context["reservation_id"] == "m"
    bad = SagaTest(ORDER_PLACEMENT).handle("inventory.reserve", lambda p: 42)
    with pytest.raises(SagaTestError, match="returned int"):
        bad.run(ORDER)


def test_strict_mode_names_the_unhandled_command() -> None:
    t = SagaTest(ORDER_PLACEMENT, strict=True)
    t.handle("inventory.reserve", lambda p: {})
    with pytest.raises(SagaTestError, match=r"payments\.authorize"):
        t.run(ORDER)


def test_unknown_names_are_refused_with_the_known_message_types() -> None:
    t = SagaTest(ORDER_PLACEMENT)
    with pytest.raises(SagaTestError, match=r"inventory\.release"):
        t.handle("inventory.reserv", lambda p: {})
    with pytest.raises(SagaTestError, match="attempts are counted from 1"):
        t.fail("inventory.reserve", attempts=0)
    with pytest.raises(SagaTestError, match="start the saga first"):
        t.resume()


# -- scripted faults --------------------------------------------------------------------


def test_fail_only_the_nth_attempt() -> None:
    t = SagaTest(small())
    t.fail("a", code="a.busy", retriable=True, attempts=1)
    result = t.run({"id": 1})
    assert result.status == "completed"
    assert result.sent[:2] == ["a.do@1", "a.do@2"]
    assert result.elapsed_ms == 100  # the back-off, on the fake clock


def test_retries_exhausted_compensate_what_completed() -> None:
    t = SagaTest(small()).fail("b.do", code="b.busy", retriable=True)
    result = t.run({"id": 1})
    assert result.status == "compensated"
    assert result.attempts("b") == 2
    assert result.compensated == ["a"]


def test_a_timeout_makes_the_outcome_unknown_so_it_is_compensated() -> None:
    t = SagaTest(small()).timeout("b.do").fail("p.do", code="p.no")
    result = t.run({"id": 1})
    assert result.status == "compensated"
    assert result.step("b").status == "timed_out"
    assert result.compensated == ["b", "a"]  # b timed out last, so it is undone first
    assert result.elapsed_ms == 1_000 + 100 + 1_000
    result.assert_compensated_in_reverse_order()


def test_a_late_reply_after_the_timeout_is_ignored() -> None:
    t = SagaTest(small()).timeout("a.do", attempts=1, late_reply=True)
    result = t.run({"id": 1})
    assert result.status == "completed"
    ignored = result.entries("event.ignored", "a")
    assert len(ignored) == 1
    assert ignored[0].at == T0 + timedelta(milliseconds=1_001)
    assert result.attempts("a") == 2


def test_the_pivot_timing_out_on_every_attempt_ends_stuck() -> None:
    result = SagaTest(small()).timeout("p.do").run({"id": 1})
    assert result.status == "stuck"
    assert (result.stuck_step, result.stuck_in) == ("p", "forward")
    assert result.last_error == "saga.timeout"


def test_never_answering_a_step_without_a_timeout_stalls() -> None:
    seen: list[int] = []
    t = SagaTest(approval()).handle("a.do", lambda p: seen.append(1))
    t.never_answer("a.do")
    result = t.run({})
    assert result.status == "running"
    assert result.stalled
    assert seen == []  # the participant never saw the command
    with pytest.raises(SagaTestError, match="has no timeout_ms"):
        SagaTest(approval()).timeout("a.do")


def test_no_reply_from_a_handler_lets_the_step_time_out() -> None:
    def b(payload: dict[str, Any], call: Call) -> Any:
        return NO_REPLY if call.attempt == 1 else {}

    result = SagaTest(small()).handle("b.do", b).run({"id": 1})
    assert result.status == "completed"
    assert result.attempts("b") == 2
    assert "event.timer_fired" in result.timeline_kinds


def test_duplicate_replies_are_ignored() -> None:
    t = SagaTest(small()).duplicate("a.do", copies=2).duplicate("a.undo")
    t.fail("b.do", code="b.no")
    result = t.run({"id": 1})
    assert result.status == "compensated"
    assert len(result.entries("event.ignored", "a")) == 3
    assert result.compensated == ["a"]


def test_a_delayed_reply_moves_the_clock() -> None:
    result = SagaTest(small()).delay("a.do", 250).run({"id": 1})
    assert result.status == "completed"
    assert result.entries("step.succeeded", "a")[0].at == T0 + timedelta(milliseconds=250)


def test_a_reply_later_than_the_timeout_counts_as_a_timeout() -> None:
    t = SagaTest(small()).delay("a.do", 1_500, attempts=1)
    result = t.run({"id": 1})
    assert result.status == "completed"
    assert result.attempts("a") == 2
    assert result.elapsed_ms == 1_100  # run() stops with the saga; the late reply is due later
    assert result.entries("event.ignored", "a") == []
    result = t.advance(1_000)
    assert len(result.entries("event.ignored", "a")) == 1


def test_the_saga_deadline_compensates_before_the_pivot() -> None:
    t = SagaTest(small(deadline_ms=500)).delay("b.do", 900)
    result = t.run({"id": 1})
    assert result.status == "compensated"
    assert result.failure == "saga.deadline_exceeded"
    assert result.compensated == ["b", "a"]  # b is awaited, then undone


def test_a_failing_compensation_is_retried_then_stuck() -> None:
    t = SagaTest(small()).fail("b.do", code="b.no").fail("a.undo", code="x", retriable=True)
    result = t.run({"id": 1})
    assert result.status == "stuck"
    assert (result.stuck_step, result.stuck_in) == ("a", "compensation")
    assert result.attempts("a", compensation=True) == 2


def test_a_paused_participant_gets_its_command_when_resumed() -> None:
    t = SagaTest(small()).pause("sb")
    result = t.run({"id": 1})
    assert result.status == "running"
    assert result.stalled
    assert result.sent == ["a.do@1"]
    result = t.unpause("sb")
    assert result.status == "completed"


# -- the clock --------------------------------------------------------------------------


def test_advance_and_fire_next_timer() -> None:
    t = SagaTest(small()).delay("a.do", 300)
    t.start({"id": 1})
    assert [(k, s) for k, s, _, _ in t.pending_timers] == [(TimerKind.STEP_TIMEOUT, "a")]
    t.advance(200)
    assert t.now == T0 + timedelta(milliseconds=200)
    assert t.result.step("a").status == "running"
    t.advance(100)
    assert t.result.step("a").status == "succeeded"
    fired = t.fire_next_timer()  # nothing answers b: its timeout
    assert fired is None or fired.timer is TimerKind.STEP_TIMEOUT
    assert t.run().status == "completed"


def test_fire_next_timer_jumps_to_a_timeout() -> None:
    t = SagaTest(small()).never_answer("a.do", attempts=1)
    t.start({"id": 1})
    fired = t.fire_next_timer()
    assert fired is not None
    assert (fired.timer, fired.step) == (TimerKind.STEP_TIMEOUT, "a")
    assert t.now == T0 + timedelta(seconds=1)
    assert t.result.step("a").status == "retry_scheduled"
    assert t.run().status == "completed"


def test_a_step_that_fails_forever_hits_the_event_limit() -> None:
    t = SagaTest(small(), max_events=200).fail("r.do", code="r.busy", retriable=True)
    with pytest.raises(SagaTestError, match="does not settle"):
        t.run({"id": 1})


# -- signals ----------------------------------------------------------------------------


def test_a_signal_scheduled_before_the_start() -> None:
    t = SagaTest(approval()).signal("approved", {"who": "ann"}, after_ms=5_000)
    result = t.run({})
    assert result.status == "completed"
    assert result.context["by"] == "ann"
    assert result.elapsed_ms == 5_000


def test_a_missing_signal_times_out_and_compensates_or_continues() -> None:
    assert SagaTest(approval()).run({}).status == "compensated"
    result = SagaTest(approval(OnTimeout.CONTINUE)).run({})
    assert result.status == "completed"
    assert result.step("approve").status == "skipped"
    assert result.elapsed_ms == 60_000
    with pytest.raises(SagaTestError, match="waits for signal"):
        SagaTest(approval()).signal("nope")


# -- operator verbs ---------------------------------------------------------------------


def test_resume_a_stuck_pivot() -> None:
    t = SagaTest(small()).timeout("p.do", attempts=[1, 2])
    assert t.run({"id": 1}).status == "stuck"
    result = t.resume("the orders service is back")
    assert result.status == "completed"
    assert result.attempts("p") == 3
    assert "operator.action" in result.lifecycle


def test_retry_skip_abort_and_mark_compensated() -> None:
    t = SagaTest(small()).timeout("p.do", attempts=[1, 2])
    t.run({"id": 1})
    assert t.retry_step("p").status == "completed"

    t = SagaTest(small()).timeout("p.do")
    t.run({"id": 1})
    result = t.skip_step("p")
    assert result.status == "completed"
    assert result.step("p").status == "skipped"

    t = SagaTest(small()).timeout("p.do")
    t.run({"id": 1})
    result = t.abort("give up")  # stuck before the pivot passed: abort compensates
    assert result.status == "compensated"
    assert result.compensated == ["b", "a"]

    t = SagaTest(small()).fail("b.do", code="no").fail("a.undo", code="x")
    t.run({"id": 1})
    assert t.abort("give up").status == "aborted"  # stuck compensating: abort ends it

    t = SagaTest(small()).fail("b.do", code="no").fail("a.undo", code="x")
    assert t.run({"id": 1}).status == "stuck"
    assert t.mark_compensated().status == "compensated"


def test_an_illegal_operator_verb_is_rejected() -> None:
    t = SagaTest(small())
    t.run({"id": 1})
    with pytest.raises(OperatorRejected, match="resume rejected"):
        t.resume()
    assert t.result.timeline_kinds[-1] == "operator.rejected"


def test_the_saga_starts_once() -> None:
    t = SagaTest(small())
    t.run({"id": 1})
    with pytest.raises(SagaTestError, match="already started"):
        t.start({"id": 2})


# -- assertions -------------------------------------------------------------------------


def test_assertions_show_the_timeline_when_they_fail() -> None:
    result = SagaTest(small()).run({"id": 1})
    result.assert_timeline("saga.started", ("step.succeeded", "p"), "status.changed")
    with pytest.raises(AssertionError, match=r"timeline lacks .*\n.*status completed"):
        result.assert_timeline(("step.succeeded", "p"), ("command.sent", "a"))
    with pytest.raises(AssertionError, match="expected status 'compensated'"):
        result.assert_status("compensated")
    assert "running -> completed" in result.format_timeline()


# -- the SDK's handler objects ----------------------------------------------------------


def test_handlers_of_an_sdk_participant() -> None:
    inventory = Participant(
        ParticipantConfig(name="inventory", bootstrap_servers="unused:9092", mode=Mode.SIMPLE)
    )

    @inventory.command("inventory.reserve")
    async def reserve(cmd: ReserveInventory, ctx: CommandContext) -> InventoryReserved:
        assert ctx.step == "reserve_inventory"
        assert not ctx.is_compensation
        return InventoryReserved(reservation_id=f"res-{cmd.order_id}", order_id=cmd.order_id)

    result = SagaTest(ORDER_PLACEMENT).use(inventory).run(ORDER)
    assert result.status == "completed"
    assert result.context["reservation_id"] == "res-o-1"

    # A payload that does not fit the handler's model fails permanently, as in the SDK.
    result = SagaTest(ORDER_PLACEMENT).use(inventory).run({**ORDER, "lines": "oops"})
    assert result.status == "compensated"
    assert result.failure == "participant.invalid_command"
