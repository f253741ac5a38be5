"""``/readyz`` against real dependencies: a reachable and an unreachable database and
Kafka. Unreachable means a closed port on the loopback address."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from saga.api import ApiConfig, create_app
from saga.api._health import ReadinessProbe
from saga.coordinator import DefinitionCache
from saga.errors import StoreUnavailable
from saga.store import SqlStore, create_engine, upgrade
from saga.topics import Topics


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def _serve(
    url: str, config: ApiConfig, *, migrate: bool
) -> AsyncIterator[TestClient[Any, Any]]:
    engine = create_engine(url)
    try:
        if migrate:
            await upgrade(engine)
        store = SqlStore(engine)
        app = create_app(store, DefinitionCache(store), Topics(), config)
        async with TestClient(TestServer(app)) as client:
            yield client
    finally:
        await engine.dispose()


@pytest.fixture
async def healthy(database_url: str, kafka_bootstrap: str) -> AsyncIterator[TestClient[Any, Any]]:
    config = ApiConfig(kafka_bootstrap_servers=kafka_bootstrap, readiness_ttl_s=0)
    async with _serve(database_url, config, migrate=True) as client:
        yield client


@pytest.mark.kafka
@pytest.mark.postgres
async def test_ready_when_database_and_kafka_answer(healthy: TestClient[Any, Any]) -> None:
    resp = await healthy.get("/readyz")
    body = await resp.json()
    assert resp.status == 200, body
    assert body["status"] == "ready"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["kafka"] == {**body["checks"]["kafka"], "ok": True, "detail": ""}


async def test_not_ready_when_kafka_and_the_database_are_unreachable(tmp_path: Path) -> None:
    config = ApiConfig(
        kafka_bootstrap_servers=f"127.0.0.1:{_closed_port()}",
        readiness_timeout_s=1.5,
    )
    url = f"postgresql+asyncpg://saga@127.0.0.1:{_closed_port()}/saga"
    async with _serve(url, config, migrate=False) as client:
        resp = await client.get("/readyz")
        body = await resp.json()
        assert resp.status == 503, body
        assert body["status"] == "not_ready"
        assert body["checks"]["database"]["ok"] is False
        assert body["checks"]["kafka"]["ok"] is False
        assert (await client.get("/healthz")).status == 200
        # A request that needs the database is a 503 JSON error, not a 500.
        resp = await client.get("/v1/definitions")
        assert resp.status == 503
        assert (await resp.json())["error"]["code"] == "store_unavailable"
        assert resp.headers["Retry-After"]


async def test_results_are_cached_and_checks_time_out() -> None:
    calls = 0

    async def slow() -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(10)

    async def down() -> None:
        raise StoreUnavailable("db down")

    probe = ReadinessProbe({"slow": slow, "db": down, "off": None}, timeout_s=0.1, ttl_s=60)
    first, second = await asyncio.gather(probe.check(), probe.check())
    assert first is second
    assert calls == 1
    assert first.status == "not_ready"
    assert first.checks["slow"].detail.startswith("no answer within")
    assert first.checks["db"].detail == "store_unavailable: db down"
    assert first.checks["off"].ok is True
