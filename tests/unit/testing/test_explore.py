"""saga.testing.explore and `saga explore`: a definition's failure space within a bound."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from saga.cli import cli
from saga.definition import (
    RetryPolicy,
    SagaBuilder,
    SagaDefinition,
    compensatable,
    dump_yaml,
    pivot,
    retriable,
    wait,
)
from saga.definition.examples.order_placement import ORDER_PLACEMENT
from saga.engine import CompensationStatus, Decision, transition
from saga.testing import PROPERTIES, explore

TWICE = RetryPolicy(max_attempts=2, initial_delay_ms=100, jitter=0)
ONCE = RetryPolicy(max_attempts=1)


def two_step(*, pivot_timeout: int | None = 1_000, a_timeout: int | None = 1_000) -> SagaDefinition:
    """``a`` (compensatable) then the pivot ``p`` with two attempts."""
    return (
        SagaBuilder("two_step")
        .add(
            compensatable(
                "a",
                participant="sa",
                command="a.do",
                compensation="a.undo",
                retry=ONCE,
                compensation_retry=ONCE,
                timeout_ms=a_timeout,
            ),
            pivot("p", participant="sp", command="p.do", retry=TWICE, timeout_ms=pivot_timeout),
        )
        .build()
    )


def test_a_pivot_with_bounded_retries_ends_stuck_when_it_times_out_twice() -> None:
    report = explore(two_step())
    assert report.complete
    assert report.ok, report.format()
    labels = {o.label for o in report.outcomes}
    assert labels == {
        "completed",
        "compensated",
        "stuck on a (compensation)",
        "stuck on p (forward)",
    }
    stuck = report.outcome("stuck on p (forward)")
    assert stuck is not None
    assert stuck.path == (
        "the saga starts",
        "a: succeeds (attempt 1)",
        "p: times out (attempt 1)",
        "p: retry due (attempt 2)",
        "p: times out (attempt 2)",
    )
    compensated = report.outcome("compensated")
    assert compensated is not None
    assert compensated.path == ("the saga starts", "a: fails for good (attempt 1)")
    completed = report.outcome("completed")
    assert completed is not None
    assert len(completed.path) == 3
    # The outcomes come shortest path first.
    assert [len(o.path) for o in report.outcomes] == sorted(len(o.path) for o in report.outcomes)


def test_the_attempt_bound_keeps_later_attempts_successful() -> None:
    forever = (
        SagaBuilder("forever")
        .add(
            pivot("p", participant="sp", command="p.do", retry=ONCE, timeout_ms=100),
            retriable(
                "r",
                participant="sr",
                command="r.do",
                retry=RetryPolicy(max_attempts=None, initial_delay_ms=10, jitter=0),
                timeout_ms=100,
            ),
        )
        .build()
    )
    small, large = explore(forever, max_attempts=1), explore(forever, max_attempts=3)
    assert small.ok
    assert large.ok
    assert small.states < large.states
    assert small.cut_at_attempts > 0
    # The retriable step never gives up: no outcome is stuck on it.
    assert {o.label for o in large.outcomes} == {"completed", "compensated", "stuck on p (forward)"}


def test_a_step_without_a_timeout_can_make_no_progress() -> None:
    report = explore(two_step(a_timeout=None))
    broken = report.violation("no_progress")
    assert broken is not None, report.format()
    assert broken.path == ("the saga starts", "a: reply lost (attempt 1); the step has no timeout")
    assert "running with nothing in flight" in broken.message
    assert not report.ok


def test_wait_steps_and_the_deadline_are_explored() -> None:
    d = (
        SagaBuilder("approval", deadline_ms=60_000)
        .add(
            compensatable(
                "a", participant="sa", command="a.do", compensation="a.undo", timeout_ms=100
            ),
            wait("approve", signal="ok", timeout_ms=1_000),
            pivot("p", participant="sp", command="p.do", timeout_ms=100),
        )
        .build()
    )
    report = explore(d, max_attempts=1)
    assert report.ok, report.format()
    paths = [" / ".join(o.path) for o in report.outcomes]
    completed = report.outcome("completed")
    assert completed is not None
    assert "approve: signal 'ok' arrives" in completed.path
    assert any("approve: signal times out" in p or "the saga deadline passes" in p for p in paths)
    deadline = explore(d, max_attempts=1, depth=3)
    assert deadline.cut_at_depth > 0


def test_the_built_in_definition_has_no_broken_property() -> None:
    report = explore(ORDER_PLACEMENT, max_attempts=2)
    assert report.ok, report.format()
    assert report.outcome("stuck on confirm_order (forward)") is not None
    assert report.outcome("completed") is not None
    assert "no broken property" in report.format()


# -- step conditions ----------------------------------------------------------------------


def express(*, ship_timeout: int | None = 1_000, gift_when: str | None = None) -> SagaDefinition:
    """``a``, then the pivot ``ship`` only ``when: express`` (and an optional ``gift``)."""
    steps = [
        compensatable("a", participant="sa", command="a.do", compensation="a.undo", timeout_ms=100),
        pivot(
            "ship",
            participant="sp",
            command="ship.do",
            retry=ONCE,
            timeout_ms=ship_timeout,
            when="express",
        ),
    ]
    if gift_when is not None:
        steps.append(
            retriable("gift", participant="sg", command="gift.do", timeout_ms=100, when=gift_when)
        )
    return SagaBuilder("express").add(*steps).build()


def test_a_step_condition_is_tried_both_ways_by_default() -> None:
    report = explore(express(), max_attempts=1)
    assert report.ok, report.format()
    assert report.conditions == ("express",)
    assert "conditions tried both ways: express" in report.format()
    stuck = report.outcome("stuck on ship (forward)")  # only when ship runs
    assert stuck is not None
    assert stuck.path[0] == "the saga starts (express: true)"
    completed = report.outcome("completed")
    assert completed is not None  # the shortest completion skips ship
    assert completed.path == ("the saga starts (express: false)", "a: succeeds (attempt 1)")
    # Evaluated over the input instead, only the branch that input takes is walked.
    over_empty = explore(express(), max_attempts=1, conditions="input")
    assert over_empty.conditions == ()
    assert over_empty.outcome("stuck on ship (forward)") is None
    over_express = explore(express(), max_attempts=1, conditions="input", input={"express": True})
    found = over_express.outcome("stuck on ship (forward)")
    assert found is not None
    assert found.path[0] == "the saga starts"


def test_a_broken_property_in_a_branch_the_input_does_not_take_is_found() -> None:
    d = express(ship_timeout=None)  # ship's reply can be lost, and nothing would notice
    assert explore(d, max_attempts=1, conditions="input").ok  # {} skips ship: not seen
    broken = explore(d, max_attempts=1).violation("no_progress")
    assert broken is not None
    assert broken.path[0] == "the saga starts (express: true)"
    assert broken.path[-1] == "ship: reply lost (attempt 1); the step has no timeout"


def test_steps_with_the_same_condition_share_one_choice() -> None:
    shared = explore(express(gift_when="express"), max_attempts=1)
    assert shared.conditions == ("express",)
    assert shared.ok, shared.format()
    both = explore(express(gift_when="gift"), max_attempts=1)
    assert both.conditions == ("express", "gift")
    assert both.states > shared.states
    starts = {o.path[0] for o in both.outcomes}
    assert "the saga starts (express: false; gift: false)" in starts


def test_too_many_conditions_to_try_both_ways_is_refused_with_what_to_do() -> None:
    d = (
        SagaBuilder("many")
        .add(
            *(
                compensatable(
                    f"s{i}",
                    participant="sa",
                    command=f"s{i}.do",
                    compensation=f"s{i}.undo",
                    timeout_ms=100,
                    when=f"c{i}",
                )
                for i in range(13)
            )
        )
        .build()
    )
    with pytest.raises(ValueError, match=r"13 distinct step conditions.*conditions='input'"):
        explore(d)
    assert explore(d, conditions="input", max_states=100).conditions == ()


def test_saga_explore_conditions_on_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "express.yaml"
    path.write_text(dump_yaml(express()))
    res = CliRunner().invoke(cli, ["explore", str(path), "--max-attempts", "1", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["conditions_tried_both_ways"] == ["express"]
    assert "stuck on ship (forward)" in {o["outcome"] for o in report["outcomes"]}
    res = CliRunner().invoke(
        cli, ["explore", str(path), "--max-attempts", "1", "--conditions", "input", "--json"]
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["conditions_tried_both_ways"] == []
    assert "stuck on ship (forward)" not in {o["outcome"] for o in report["outcomes"]}


# -- an operator acts too -----------------------------------------------------------------


def test_with_operators_every_stuck_saga_can_be_ended_and_no_property_breaks() -> None:
    without = explore(two_step())
    report = explore(two_step(), operators=1)
    assert report.complete
    assert report.ok, report.format()  # marking compensated and aborting are exempt
    assert report.states > without.states
    assert "aborted" not in {o.label for o in without.outcomes}
    aborted = report.outcome("aborted")
    assert aborted is not None
    assert aborted.path[-1] == "an operator aborts the saga"
    # Stuck is still an outcome, and the operator's way out of it was walked.
    assert report.outcome("stuck on p (forward)") is not None
    assert "at most 1 operator action)" in report.format().splitlines()[0]


def test_operator_actions_are_bounded_per_path() -> None:
    # A retry gives the step a fresh budget: without the bound there is no end.
    one, two = (explore(two_step(), max_attempts=1, operators=n) for n in (1, 2))
    assert one.complete
    assert two.complete
    assert one.states < two.states


def test_an_operator_skips_a_waiting_wait_step() -> None:
    d = (
        SagaBuilder("approval")
        .add(
            compensatable(
                "a", participant="sa", command="a.do", compensation="a.undo", timeout_ms=100
            ),
            wait("approve", signal="ok", timeout_ms=1_000),
        )
        .build()
    )
    report = explore(d, max_attempts=1, operators=1)
    assert report.ok, report.format()
    done, alone = report.outcome("completed"), explore(d, max_attempts=1).outcome("completed")
    assert done is not None
    assert alone is not None
    assert done.end_states > alone.end_states  # also completed by the operator's skip


def test_an_engine_that_breaks_on_an_operator_verb_is_found_only_with_operators() -> None:
    def broken(state: Any, event: Any, definition: Any, now: Any, **kw: Any) -> Decision:
        if getattr(event, "type", "") == "operator_skip_step":
            raise AssertionError("skip broke")
        return transition(state, event, definition, now, **kw)

    assert _run_with(broken).ok
    report = explore(two_step(), max_attempts=1, engine=broken, operators=1)
    error = report.violation("engine_error")
    assert error is not None
    assert error.path[-1].startswith("an operator skips ")


def test_saga_explore_with_operators_on_the_command_line() -> None:
    res = CliRunner().invoke(
        cli, ["explore", "order_placement", "--max-attempts", "1", "--operators", "1", "--json"]
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["bounds"]["operators"] == 1
    assert "aborted" in {o["outcome"] for o in report["outcomes"]}
    assert report["ok"] is True


# -- each property is detected (with engines that break it on purpose) -------------------


def _run_with(engine: Any, definition: SagaDefinition | None = None) -> Any:
    return explore(definition or two_step(), max_attempts=1, engine=engine)


def _tampered(
    edit: Callable[[Decision], Decision], definition: SagaDefinition | None = None
) -> Any:
    """Explore with the real engine whose every decision goes through ``edit``."""

    def engine(state: Any, event: Any, defn: Any, now: Any, **kw: Any) -> Decision:
        return edit(transition(state, event, defn, now, **kw))

    return _run_with(engine, definition)


def test_an_applied_duplicate_or_late_reply_is_reported() -> None:
    def forgetful(decision: Decision) -> Decision:
        if decision.outcome == "ignored" and decision.state is not None:
            changed = decision.state.model_copy(update={"context": {"seen": True}})
            return decision.model_copy(update={"outcome": "applied", "state": changed})
        return decision

    report = _tampered(forgetful)
    duplicate = report.violation("duplicate_applied")
    assert duplicate is not None
    assert duplicate.path[-1] == "a: the same reply again (attempt 1)"
    late = report.violation("late_reply_applied")
    assert late is not None
    assert late.path[-2:] == ("a: times out (attempt 1)", "a: late success reply to attempt 1")


def test_a_compensation_of_the_pivot_or_of_a_running_step_is_reported() -> None:
    def undo_everything(decision: Decision) -> Decision:
        commands = []
        for cmd in decision.commands:
            commands.append(cmd)
            if cmd.envelope.kind.value == "command" and cmd.envelope.step == "p":
                undo = cmd.envelope.model_copy(update={"kind": "compensation"})
                commands.append(cmd.model_copy(update={"envelope": undo}))
        return decision.model_copy(update={"commands": tuple(commands)})

    report = _tampered(undo_everything)
    pivot_undone = report.violation("pivot_compensated")
    assert pivot_undone is not None
    assert pivot_undone.path[-1] == "a: succeeds (attempt 1)"
    early = report.violation("compensation_before_done")
    assert early is not None
    assert "p was compensated while its command was running" in early.message


def test_a_compensated_saga_that_skipped_or_reordered_compensations_is_reported() -> None:
    three = (
        SagaBuilder("three")
        .add(
            *(
                compensatable(n, participant="s", command=f"{n}.do", compensation=f"{n}.undo")
                for n in ("a", "b")
            ),
            pivot("p", participant="sp", command="p.do", retry=ONCE),
        )
        .build()
    )

    def sloppy(decision: Decision) -> Decision:
        after = decision.state
        if after is not None and after.status == "compensated" and after.compensation_order:
            steps = dict(after.steps)
            steps["a"] = steps["a"].model_copy(update={"compensation": CompensationStatus.NONE})
            changed = after.model_copy(update={"steps": steps, "compensation_order": ("a", "b")})
            return decision.model_copy(update={"state": changed})
        return decision

    report = _tampered(sloppy, three)
    left = report.violation("left_uncompensated")
    assert left is not None
    assert "a took effect and was not compensated" in left.message
    order = report.violation("compensation_order")
    assert order is not None
    assert order.path[-1] == "a (compensation): succeeds (attempt 1)"


def test_an_engine_that_raises_is_reported_with_the_path() -> None:
    def broken(state: Any, event: Any, definition: Any, now: Any, **kw: Any) -> Decision:
        if getattr(event, "type", "") == "timer_fired":
            raise AssertionError("status change running --x--> ? is not in the table")
        return transition(state, event, definition, now, **kw)

    report = _run_with(broken)
    error = report.violation("engine_error")
    assert error is not None
    assert error.path[-1] == "a: times out (attempt 1)"
    assert set(PROPERTIES) >= {v.property for v in report.violations}


# -- the command --------------------------------------------------------------------------


def test_saga_explore_prints_the_outcomes_of_the_built_in_definition() -> None:
    res = CliRunner().invoke(cli, ["explore", "order_placement", "--max-attempts", "2"])
    assert res.exit_code == 0, res.output
    assert "stuck on confirm_order (forward)" in res.output
    assert "confirm_order: times out (attempt 1)" in res.output
    assert "no broken property" in res.output


def test_saga_explore_json_of_a_file_and_exit_1_on_a_broken_property(tmp_path: Path) -> None:
    path = tmp_path / "d.yaml"
    path.write_text(dump_yaml(two_step(a_timeout=None)))
    res = CliRunner().invoke(cli, ["explore", str(path), "--json", "--depth", "10"])
    assert res.exit_code == 1, res.output
    report = json.loads(res.output)
    assert report["ok"] is False
    assert report["bounds"] == {"max_attempts": 3, "depth": 10, "operators": 0}
    assert {v["property"] for v in report["violations"]} == {"no_progress"}
    assert {o["outcome"] for o in report["outcomes"]} >= {"completed", "compensated"}


def test_saga_explore_names_the_known_definitions() -> None:
    res = CliRunner().invoke(cli, ["explore", "nope"])
    assert res.exit_code != 0
    assert "no definition called 'nope'" in res.output
    assert "order_placement" in res.output
    res = CliRunner().invoke(cli, ["explore", "order_placement", "--input", "[1]"])
    assert res.exit_code != 0
    assert "JSON object" in res.output
