"""Inbox retention settings: validated where they are given, read from the environment."""

from __future__ import annotations

from datetime import timedelta

import pytest

from saga.coordinator import RuntimeConfig
from saga.errors import ConfigError
from saga.inbox import DEFAULT_PRUNE_INTERVAL, DEFAULT_PRUNE_LIMIT, describe
from saga.participant import ParticipantConfig
from saga.settings import Settings


def test_defaults_follow_the_topic_every_five_minutes() -> None:
    runtime = RuntimeConfig(database_url="sqlite+aiosqlite://", bootstrap_servers="b:9092")
    participant = ParticipantConfig(name="p", bootstrap_servers="b:9092")
    for config in (runtime, participant):
        assert config.inbox_retention is None
        assert config.inbox_prune_interval == DEFAULT_PRUNE_INTERVAL == timedelta(minutes=5)
        assert config.inbox_prune_limit == DEFAULT_PRUNE_LIMIT


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("inbox_retention", timedelta(0)),
        ("inbox_prune_interval", timedelta(0)),
        ("inbox_prune_limit", 0),
    ],
)
def test_unusable_settings_are_refused(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        RuntimeConfig(database_url="sqlite+aiosqlite://", bootstrap_servers="b", **{field: value})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=field):
        ParticipantConfig(name="p", bootstrap_servers="b", **{field: value})  # type: ignore[arg-type]


def test_the_retention_setting_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SAGA_INBOX_RETENTION_S", raising=False)
    assert Settings().inbox_retention_s is None
    monkeypatch.setenv("SAGA_INBOX_RETENTION_S", "3600")
    assert Settings().inbox_retention_s == 3600.0
    monkeypatch.setenv("SAGA_INBOX_RETENTION_S", "0")
    with pytest.raises(ValueError, match="greater than 0"):
        Settings()


def test_retentions_are_described_in_plain_units() -> None:
    assert describe(timedelta(days=7)) == "7 d"
    assert describe(timedelta(hours=1)) == "1 h"
    assert describe(timedelta(minutes=90)) == "90 min"
    assert describe(timedelta(seconds=1.5)) == "1.5 s"
    assert describe(None) == "forever"
