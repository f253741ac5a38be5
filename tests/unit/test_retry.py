"""Start-up through an outage: retry what is retriable, fail at once on the rest."""

from __future__ import annotations

import asyncio
import logging

import pytest

from saga.errors import ConfigError, ProducerFenced, StoreUnavailable, TransportError
from saga.retry import Backoff, Startup, retry_while_unavailable


class Flaky:
    """An action that fails with the given errors, then returns ``"open"``."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "open"


async def test_retriable_errors_are_retried_until_the_action_succeeds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    action = Flaky(StoreUnavailable("connect failed: refused"), TransportError("no broker"))
    with caplog.at_level(logging.WARNING, logger="saga.retry"):
        result = await retry_while_unavailable(
            action, what="start-up", stop=asyncio.Event(), initial=0.01, maximum=0.02
        )
    assert result == "open"
    assert action.calls == 3
    warnings = [r.getMessage() for r in caplog.records]
    assert "start-up: database unavailable (attempt 1)" in warnings[0]
    assert "connect failed: refused" in warnings[0]
    assert "start-up: Kafka unavailable (attempt 2)" in warnings[1]


@pytest.mark.parametrize("error", [ConfigError("bad url"), ProducerFenced("fenced")])
async def test_a_non_retriable_error_fails_at_once(error: Exception) -> None:
    action = Flaky(error)
    with pytest.raises(type(error)):
        await retry_while_unavailable(action, what="start-up", stop=asyncio.Event(), initial=0.01)
    assert action.calls == 1


async def test_stop_ends_the_wait_with_the_last_error() -> None:
    action = Flaky(*(StoreUnavailable(f"refused {n}") for n in range(1000)))
    stop = asyncio.Event()
    waiting = asyncio.create_task(
        retry_while_unavailable(action, what="start-up", stop=stop, initial=30, maximum=30)
    )
    await asyncio.sleep(0.05)
    assert not waiting.done(), "gave up without being asked to"
    stop.set()
    with pytest.raises(StoreUnavailable, match="refused 0"):
        await asyncio.wait_for(waiting, 1)  # the 30 s wait ended at once
    assert action.calls == 1


async def test_stopped_before_the_first_attempt_tries_once() -> None:
    stop = asyncio.Event()
    stop.set()
    action = Flaky(StoreUnavailable("refused"))
    with pytest.raises(StoreUnavailable):
        await retry_while_unavailable(action, what="start-up", stop=stop)
    assert action.calls == 1
    assert await retry_while_unavailable(Flaky(), what="start-up", stop=stop) == "open"


def test_backoff_doubles_up_to_its_maximum_with_jitter_and_resets() -> None:
    backoff = Backoff(1.0, 5.0)
    delays = [backoff.next_delay() for _ in range(5)]
    for delay, nominal in zip(delays, [1, 2, 4, 5, 5], strict=True):
        assert 0.8 * nominal <= delay <= nominal
    backoff.reset()
    assert backoff.next_delay() <= 1.0


async def test_startup_says_what_it_waits_for_until_it_succeeds() -> None:
    gate = asyncio.Event()

    async def action() -> str:
        if not gate.is_set():
            raise StoreUnavailable("connect failed: refused")
        return "open"

    startup = Startup("participant p start-up", asyncio.Event())
    assert startup.waiting_for is None
    opening = asyncio.create_task(startup(action))
    await asyncio.sleep(0.05)
    assert startup.waiting_for == "database unavailable (attempt 1): connect failed: refused"
    gate.set()
    assert await asyncio.wait_for(opening, 2) == "open"
    assert startup.waiting_for is None


async def test_a_startup_that_gives_up_waits_no_more() -> None:
    async def action() -> str:
        raise StoreUnavailable("connect failed: refused")

    stop = asyncio.Event()
    startup = Startup("participant p start-up", stop)
    opening = asyncio.create_task(startup(action))
    await asyncio.sleep(0.05)
    assert startup.waiting_for is not None
    stop.set()
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(opening, 2)
    assert startup.waiting_for is None
