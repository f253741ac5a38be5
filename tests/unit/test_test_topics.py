"""The suite's own topic prefixes: which leftover topics count as stale."""

from __future__ import annotations

import time

import _test_topics as tt


def test_a_fresh_prefix_carries_its_creation_time_and_is_not_stale() -> None:
    prefix = tt.new_prefix()
    match = tt.PREFIX.match(f"{prefix}saga.replies")
    assert match is not None
    assert abs(int(match["created"], 16) - time.time()) < 5
    assert not tt.is_stale(f"{prefix}saga.replies", time.time())


def test_topics_of_runs_that_ended_long_ago_are_stale_and_others_are_kept() -> None:
    now = time.time()
    old = f"t{int(now - tt.STALE_AFTER_S - 60):08x}abcdef."
    recent = f"t{int(now - 60):08x}abcdef."
    assert tt.is_stale(f"{old}orders.commands", now)
    assert not tt.is_stale(f"{recent}orders.commands", now)
    # Prefixes of earlier versions of the suite carry no time: always leftovers.
    assert tt.is_stale("t0123456789.saga.dlq", now)
    assert tt.is_stale("ui01234567.saga.dlq", now)
    # Anything else on the broker is never touched.
    for name in ("saga.replies", "demo-01234567.saga.dlq", "__consumer_offsets", "tea.orders"):
        assert not tt.is_stale(name, now), name
