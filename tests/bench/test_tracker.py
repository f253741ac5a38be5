"""The bench's tracker: which sagas of a phase have finished, and how long they took."""

from __future__ import annotations

import pytest

from saga.bench._phase import Tracker


def test_a_saga_that_ends_before_its_start_is_recorded_counts_when_it_is() -> None:
    tracker = Tracker()
    # The starter returns its ids only once Kafka acknowledged every start; a fast saga
    # (the bare-Kafka baselines) can finish first.
    tracker.finish("a", "completed", 10.5, [0.1])
    assert tracker.finished == {}
    tracker.start(["a", "b"], 10.0)
    assert tracker.in_flight == 1
    assert tracker.finished["a"].status == "completed"
    assert tracker.finished["a"].duration_s == pytest.approx(0.5)
    assert tracker.finished["a"].step_latencies_s == [0.1]


def test_repeats_and_the_events_of_an_earlier_phase_are_ignored() -> None:
    tracker = Tracker()
    tracker.start(["a"], 1.0)
    tracker.finish("a", "completed", 2.0)
    tracker.finish("a", "compensated", 3.0)
    assert tracker.finished["a"].status == "completed"
    tracker.finish("old", "completed", 4.0)  # a saga of the phase before
    tracker.reset()
    tracker.start(["old"], 5.0)  # an id never repeats in practice; reset forgot it
    assert tracker.finished == {}
    assert tracker.in_flight == 1
