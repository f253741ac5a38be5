"""The store contract on PostgreSQL (a fresh schema per test), plus NOTIFY."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from saga.store import SagaStore

from .store_contract import SqlStoreContract, message

pytestmark = pytest.mark.postgres


class TestPostgresStore(SqlStoreContract):
    @pytest.fixture
    async def store_url(self, postgres_url: str) -> AsyncIterator[str]:
        schema = f"t_{uuid.uuid4().hex[:12]}"
        admin = create_async_engine(postgres_url)
        try:
            async with admin.begin() as conn:
                await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            sep = "&" if "?" in postgres_url else "?"
            yield f"{postgres_url}{sep}search_path={schema}"
        finally:
            async with admin.begin() as conn:
                await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            await admin.dispose()

    @pytest.fixture
    def unreachable_url(self) -> str:
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        return f"postgresql+asyncpg://saga@127.0.0.1:{port}/saga"

    async def test_enqueue_notifies_the_relay_once_per_shard_at_commit(
        self, store: SagaStore, postgres_url: str
    ) -> None:
        url = make_url(postgres_url)
        conn = await asyncpg.connect(
            host=url.host,
            port=url.port,
            user=url.username,
            password=url.password,
            database=url.database,
        )
        # Other tests may write to the same channel: watch only for
        # the two shard numbers of this test.
        a, b = (f":{n}" for n in random.sample(range(10_000, 1_000_000), 2))
        got: asyncio.Queue[str] = asyncio.Queue()

        def on_notify(*args: Any) -> None:
            if args[-1] in {a, b}:  # the lane's payload, "<owner_topic>:<shard>"
                got.put_nowait(args[-1])

        try:
            from saga.store import outbox_channel

            await conn.add_listener(await outbox_channel(store.engine, ""), on_notify)
            async with store.transaction() as tx:
                await tx.enqueue([message(shard=int(b[1:])), message(shard=int(a[1:]))])
                await tx.enqueue([message(shard=int(b[1:]))])
                await asyncio.sleep(0.2)
                assert got.empty(), "notifications are delivered at commit only"
            payloads = [await asyncio.wait_for(got.get(), 5)]
            await asyncio.sleep(0.2)
            while not got.empty():
                payloads.append(got.get_nowait())
            assert sorted(payloads) == sorted([a, b])  # once per lane
        finally:
            await conn.close()

    async def test_a_lane_is_announced_only_on_the_channel_of_its_owner_topic(
        self, store: SagaStore, postgres_url: str
    ) -> None:
        # A notification wakes every process that listens on its channel: a participant
        # must not be woken by the coordinator's rows, nor by another participant's.
        url = make_url(postgres_url)
        conn = await asyncpg.connect(
            host=url.host, port=url.port, user=url.username, database=url.database
        )
        got: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

        def on_notify(_conn: Any, _pid: int, channel: str, payload: str) -> None:
            got.put_nowait((channel, payload))

        try:
            from saga.store import outbox_channel

            mine = await outbox_channel(store.engine, "payments.commands")
            theirs = await outbox_channel(store.engine, "saga.replies")
            assert mine != theirs
            assert len(mine.encode()) < 64, "PostgreSQL truncates longer channel names"
            await conn.add_listener(mine, on_notify)
            async with store.transaction() as tx:
                await tx.enqueue(
                    [
                        dataclasses.replace(message(shard=3), owner_topic="saga.replies"),
                        dataclasses.replace(message(shard=4), owner_topic="payments.commands"),
                    ]
                )
            assert await asyncio.wait_for(got.get(), 5) == (mine, "payments.commands:4")
            await asyncio.sleep(0.3)
            assert got.empty(), "the coordinator's lane was announced to a participant"
        finally:
            await conn.close()
