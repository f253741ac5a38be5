"""Every CLI failure says what went wrong and what to do next, from one table."""

from __future__ import annotations

import click
import pytest

from saga.cli._common import fail
from saga.errors import (
    ConfigError,
    DefinitionError,
    ProducerFenced,
    SagaNotFound,
    StoreUnavailable,
    TransportError,
)


def message(exc: Exception, *args: object, **kwargs: object) -> str:
    with pytest.raises(click.ClickException) as info:
        fail(exc, *args, **kwargs)  # type: ignore[arg-type]
    return info.value.message


@pytest.mark.parametrize(
    ("exc", "hint"),
    [
        (ConfigError("bad"), "check the SAGA_* environment variables"),
        (DefinitionError("bad", path="steps[0]"), "run `saga lint FILE`"),
        (StoreUnavailable("refused"), "the database of SAGA_DATABASE_URL runs"),
        (TransportError("no broker"), "the Kafka brokers of SAGA_KAFKA_BOOTSTRAP_SERVERS run"),
        (ProducerFenced("fenced"), "see the message above"),  # waiting does not help
        (ValueError("odd"), "see the message above"),
    ],
)
def test_the_hint_follows_the_error(exc: Exception, hint: str) -> None:
    text = message(exc)
    first, second = text.split("\n")
    assert first == str(exc)
    assert second.startswith("What to do: ")
    assert hint in second


def test_a_command_hint_comes_first_and_a_message_may_replace_the_error() -> None:
    exc = SagaNotFound("get saga failed", saga_id="s-1")
    hints = [(SagaNotFound, "list the sagas with `saga list`.")]
    assert message(exc, hints, message="no saga with id s-1") == (
        "no saga with id s-1\nWhat to do: list the sagas with `saga list`."
    )
    assert "SAGA_DATABASE_URL" in message(StoreUnavailable("refused"), hints)
