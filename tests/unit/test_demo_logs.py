"""`saga demo` keeps the Kafka client's chatter out of its output, not its errors."""

from __future__ import annotations

import logging

import pytest
from aiokafka import errors

from saga.cli._demo import _KafkaNoise, _quiet_library_logs


def _record(name: str, level: int, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_transient_group_coordinator_noise_is_dropped() -> None:
    noise = _KafkaNoise()
    lookup = "aiokafka.consumer.group_coordinator"
    assert not noise.filter(
        _record(
            lookup,
            logging.ERROR,
            "Group Coordinator Request failed: %s",
            errors.CoordinatorNotAvailableError(),
        )
    )
    assert not noise.filter(
        _record(
            lookup, logging.WARNING, "Marking the coordinator dead (node %s)for group %s.", 1, "g"
        )
    )


def test_errors_that_matter_still_pass() -> None:
    noise = _KafkaNoise()
    lookup = "aiokafka.consumer.group_coordinator"
    assert noise.filter(
        _record(
            lookup,
            logging.ERROR,
            "Group Coordinator Request failed: %s",
            errors.GroupAuthorizationFailedError(),
        )
    )
    assert noise.filter(
        _record("aiokafka.conn", logging.ERROR, "Unable to connect to %s", "b:9092")
    )
    assert noise.filter(_record("saga.coordinator", logging.WARNING, "offset commit failed"))


def test_the_demo_installs_the_filter_unless_debugging(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        _quiet_library_logs(None)
        assert root.level == logging.WARNING
        assert all(any(isinstance(f, _KafkaNoise) for f in h.filters) for h in root.handlers)
        for handler in list(root.handlers):
            root.removeHandler(handler)
        _quiet_library_logs("DEBUG")
        assert root.level == logging.DEBUG
        assert not any(isinstance(f, _KafkaNoise) for h in root.handlers for f in h.filters)
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        root.setLevel(saved[0])
        for handler in saved[1]:
            root.addHandler(handler)
