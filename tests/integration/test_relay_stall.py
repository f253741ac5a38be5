"""A relay batch that runs far longer than any of its steps may is reported as stalled.

Real sockets, no Kafka: the bootstrap address is a server that accepts connections and
never answers, so the relay's first batch waits in its connect.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from test_relay import create_tables

from saga.relay import RelayConfig, RelayPool
from saga.store import create_engine
from saga.topics import Topics


async def test_a_batch_that_runs_too_long_is_logged_with_where_it_waits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    peers: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'saga.db'}")
    await create_tables(engine)
    failures: list[BaseException] = []
    pool = RelayPool(
        engine,
        f"127.0.0.1:{port}",
        Topics(prefix="stall."),
        "stall.owner",
        RelayConfig(stalled_after_ms=400, producer_per="lane"),  # no group drives this pool
        on_failure=failures.append,
    )
    caplog.set_level(logging.WARNING, logger="saga.relay")
    try:
        async with pool:
            pool.follow(frozenset({0}))
            async with asyncio.timeout(20):
                while not pool.stalled():  # noqa: ASYNC110 (what is polled is the point)
                    await asyncio.sleep(0.05)
                while "stalled?" not in caplog.text:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            [(shard, _, where)] = pool.stalled()
            assert shard == 0
            assert "publish_once" in where, where
            assert "_connect" in where, where
            warnings = [r.getMessage() for r in caplog.records if "stalled?" in r.getMessage()]
            assert len(warnings) == 1, "once per batch"
            assert "stall.owner[0]" in warnings[0]
            assert "_connect" in warnings[0]
            for peer in peers:  # the relay's connections fail now, and it can stop
                peer.close()
            server.close()
    finally:
        server.close()
        await engine.dispose()
    assert not failures
