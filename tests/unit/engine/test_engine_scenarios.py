"""Scenario tables: one row per step kind and failure mode.

Each row plays a script (see ``_engine_scenarios``) and checks the final status, the
compensations sent (first attempts, in order) and, where it matters, every message sent.
"""

from __future__ import annotations

import pytest
from _engine_scenarios import branching_saga, continue_saga, linear_saga, run

LINEAR = linear_saga()
BRANCHING = branching_saga()
CONTINUE = continue_saga()

HAPPY = ["do:a@1", "do:b@1", "do:p@1", "do:r@1"]

# (id, script, status, compensations sent in order)
LINEAR_ROWS = [
    ("happy path", "ok a; ok b; ok p; ok r", "completed", []),
    ("non-retriable failure compensates", "ok a; fail b; comp-ok a", "compensated", ["a"]),
    ("first step fails: nothing to undo", "fail a", "compensated", []),
    (
        "retriable failure retried",
        "ok a; fail b retriable; retry b; ok b; ok p; ok r",
        "completed",
        [],
    ),
    (
        "retries exhausted compensate",
        "ok a; fail b retriable; retry b; fail b retriable; comp-ok a",
        "compensated",
        ["a"],
    ),
    (
        "timed-out step is compensated too",
        "ok a; timeout b; retry b; timeout b; comp-ok b; comp-ok a",
        "compensated",
        ["b", "a"],
    ),
    ("timeout then success", "ok a; timeout b; retry b; ok b", "running", []),
    (
        "pivot failure compensates before it",
        "ok a; ok b; fail p; comp-ok b",
        "compensating",
        ["b", "a"],
    ),
    ("pivot unknown outcome is stuck", "ok a; ok b; timeout p; retry p; timeout p", "stuck", []),
    (
        "after the pivot failures are retried, never compensated",
        "ok a; ok b; ok p; fail r; retry r; timeout r; retry r; fail r; retry r; ok r",
        "completed",
        [],
    ),
    (
        "failing compensation retried then stuck",
        "ok a; fail b; comp-fail a retriable; comp-retry a; comp-fail a retriable",
        "stuck",
        ["a"],
    ),
    (
        "non-retriable compensation failure is stuck at once",
        "ok a; fail b; comp-fail a",
        "stuck",
        ["a"],
    ),
    (
        "compensation timeout retried",
        "ok a; fail b; comp-timeout a; comp-retry a; comp-ok a",
        "compensated",
        ["a"],
    ),
    (
        "stuck: operator retries the compensation",
        "ok a; fail b; comp-fail a; op-retry a; comp-ok a",
        "compensated",
        ["a"],
    ),
    (
        "stuck: operator resumes",
        "ok a; fail b; comp-fail a; resume; comp-ok a",
        "compensated",
        ["a"],
    ),
    (
        "stuck: operator skips the compensation",
        "ok a; fail b; comp-fail a; op-skip a",
        "compensated",
        ["a"],
    ),
    (
        "stuck: operator marks compensated",
        "ok a; fail b; comp-fail a; mark-compensated",
        "compensated",
        ["a"],
    ),
    ("stuck in compensation: abort ends it", "ok a; fail b; comp-fail a; abort", "aborted", ["a"]),
    (
        "stuck pivot: abort compensates what came before",
        "ok a; ok b; timeout p; retry p; timeout p; abort; comp-ok b; comp-ok a",
        "compensated",
        ["b", "a"],
    ),
    (
        "stuck pivot: operator skip goes forward",
        "ok a; ok b; timeout p; retry p; timeout p; op-skip p; ok r",
        "completed",
        [],
    ),
    (
        "stuck pivot: operator retry",
        "ok a; ok b; timeout p; retry p; timeout p; op-retry p; ok p; ok r",
        "completed",
        [],
    ),
    ("deadline awaits the in-flight step", "ok a; deadline", "compensating", []),
    (
        "deadline then late success",
        "ok a; deadline; ok b; comp-ok b; comp-ok a",
        "compensated",
        ["b", "a"],
    ),
    (
        "deadline after the pivot was sent is ignored",
        "ok a; ok b; deadline; ok p; ok r",
        "completed",
        [],
    ),
    ("operator abort before the pivot", "ok a; abort; fail b; comp-ok a", "compensated", ["a"]),
    (
        "operator abort after the pivot is rejected",
        "ok a; ok b; ok p; abort; ok r",
        "completed",
        [],
    ),
    ("stale reply ignored", "ok a; timeout b; retry b; ok b@1", "running", []),
    ("duplicate reply ignored", "ok a; again; again", "running", []),
    ("duplicate failure ignored", "ok a; fail b; again; comp-ok a; again", "compensated", ["a"]),
    (
        "events after completion ignored",
        "ok a; ok b; ok p; ok r; fail r@1; deadline",
        "completed",
        [],
    ),
]


@pytest.mark.parametrize(
    ("script", "status", "undone"),
    [pytest.param(*row[1:], id=row[0]) for row in LINEAR_ROWS],
)
def test_linear_saga(script: str, status: str, undone: list[str]) -> None:
    r = run(LINEAR, script)
    assert r.status == status
    assert r.undone() == undone


BRANCHING_ROWS = [
    (
        "parallel group, no approval needed",
        "ok a; ok c; ok b; ok p; ok r2; ok r1",
        {},
        "completed",
        [],
    ),
    (
        "failure awaits the in-flight sibling",
        "ok a; fail b; ok c; comp-ok c; comp-ok a",
        {},
        "compensated",
        ["c", "a"],
    ),
    (
        "sibling timing out while awaited is compensated",
        "ok a; fail b; timeout c; comp-ok c; comp-ok a",
        {},
        "compensated",
        ["c", "a"],
    ),
    (
        "reverse completion order, not declaration order",
        "ok a; ok c; ok b; signal-timeout approve; comp-ok b; comp-ok c; comp-ok a",
        {"big": True},
        "compensated",
        ["b", "c", "a"],
    ),
    (
        "wait step gets its signal",
        "ok a; ok b; ok c; signal approval; ok p; ok r1; ok r2",
        {"big": True},
        "completed",
        [],
    ),
    (
        "early signal is kept for the wait step",
        "signal approval; ok a; ok b; ok c; ok p; ok r1; ok r2",
        {"big": True},
        "completed",
        [],
    ),
    (
        "operator skips a waiting wait step",
        "ok a; ok b; ok c; op-skip approve; ok p; ok r1; ok r2",
        {"big": True},
        "completed",
        [],
    ),
    (
        "condition false skips the wait step",
        "ok a; ok b; ok c; signal-timeout approve",
        {},
        "running",
        [],
    ),
]


@pytest.mark.parametrize(
    ("script", "input", "status", "undone"),
    [pytest.param(*row[1:], id=row[0]) for row in BRANCHING_ROWS],
)
def test_branching_saga(
    script: str, input: dict[str, object], status: str, undone: list[str]
) -> None:
    r = run(BRANCHING, script, **input)
    assert r.status == status
    assert r.undone() == undone


@pytest.mark.parametrize(
    ("script", "status", "sent"),
    [
        pytest.param(
            "ok a; signal-timeout optional; ok b",
            "completed",
            ["do:a@1", "do:b@1"],
            id="continue on timeout",
        ),
        pytest.param(
            "ok a; signal hint; ok b", "completed", ["do:a@1", "do:b@1"], id="signal arrives"
        ),
    ],
)
def test_wait_on_timeout_continue(script: str, status: str, sent: list[str]) -> None:
    r = run(CONTINUE, script)
    assert r.status == status
    assert r.sent() == sent


@pytest.mark.parametrize(
    ("script", "sent"),
    [
        pytest.param("ok a; ok b; ok p; ok r", HAPPY, id="happy"),
        pytest.param(
            "ok a; fail b retriable; retry b; ok b",
            ["do:a@1", "do:b@1", "do:b@2", "do:p@1"],
            id="retry sends the next attempt",
        ),
        pytest.param(
            "pause svc_b; ok a; unpause svc_b; ok b",
            ["do:a@1", "do:b@1", "do:p@1"],
            id="paused participant: deferred, then sent",
        ),
        pytest.param(
            "pause svc_b; ok a; fail b@1",
            ["do:a@1"],
            id="paused participant: a reply for an unsent command is ignored",
        ),
        pytest.param(
            "ok a; fail b; comp-fail a retriable; comp-retry a; comp-ok a",
            ["do:a@1", "do:b@1", "undo:a@1", "undo:a@2"],
            id="compensation retried",
        ),
    ],
)
def test_messages_sent(script: str, sent: list[str]) -> None:
    assert run(LINEAR, script).sent() == sent


@pytest.mark.parametrize(
    ("script", "outcome"),
    [
        pytest.param("ok a; again", "ignored", id="duplicate reply"),
        pytest.param("ok a; ok a@1", "ignored", id="reply for a finished step"),
        pytest.param("ok a; ok b@2", "ignored", id="reply for a future attempt"),
        pytest.param("ok a; timeout a@1", "ignored", id="timer after the reply"),
        pytest.param("ok a; retry b", "ignored", id="retry timer nobody scheduled"),
        pytest.param("ok a; comp-ok a@1", "ignored", id="compensation reply nobody asked for"),
        pytest.param("ok zzz@1", "dead_letter", id="unknown step"),
        pytest.param("signal nope", "dead_letter", id="unknown signal"),
        pytest.param("op-retry a", "rejected", id="retry when not stuck"),
        pytest.param("mark-compensated", "rejected", id="mark compensated when running"),
        pytest.param("ok a; fail b; abort", "rejected", id="abort while compensating"),
        pytest.param(
            "ok a; fail b; comp-fail a; op-retry b", "rejected", id="retry of the wrong step"
        ),
        pytest.param("ok a; ok b; ok p; ok r; abort", "rejected", id="operator on a terminal saga"),
        pytest.param("unpause svc_a", "ignored", id="resume with nothing deferred"),
        pytest.param("start", "ignored", id="duplicate start"),
    ],
)
def test_unexpected_events_change_nothing(script: str, outcome: str) -> None:
    r = run(LINEAR, script.rsplit(";", 1)[0] if ";" in script else "")
    before = r.state
    decision = r.line(script.rsplit(";", 1)[-1].strip())
    assert decision.outcome == outcome
    assert decision.reason
    assert decision.state == before
    assert decision.commands == ()
    assert decision.timers_set == ()
    assert [e.kind for e in decision.audit] in (
        ["event.ignored"],
        ["operator.rejected"],
        ["event.dead_lettered"],
    )
