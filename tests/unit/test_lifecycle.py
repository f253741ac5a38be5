"""``saga.lifecycle.awaiting``: where a task waits, through every await."""

from __future__ import annotations

import asyncio

from saga.lifecycle import awaiting


async def test_awaiting_follows_every_await_down_to_the_future() -> None:
    gate = asyncio.Event()

    async def inner() -> None:
        await gate.wait()

    async def outer() -> None:
        await inner()

    task = asyncio.create_task(outer())
    await asyncio.sleep(0)
    where = awaiting(task)
    names = [part.split(" (")[0] for part in where.split(" > ")]
    assert names[:3] == ["outer", "inner", "wait"], where
    assert "test_lifecycle.py:" in where
    gate.set()
    await task
    assert awaiting(task) == ""  # a finished task waits nowhere
