"""The API with a running coordinator and relay (real Kafka): signals and operator
commands written by the API reach the coordinator, which applies them and audits them
with the caller's identity."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from _api_helpers import APPROVAL
from _scripted import fast_runtime_config, looping
from aiohttp.test_utils import TestClient, TestServer

from saga.api import ApiConfig, Principal, Role, create_app
from saga.coordinator import CoordinatorRuntime
from saga.topics import Topics

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]

HEADERS = {"Authorization": "Bearer op"}


@pytest.fixture
async def client(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> AsyncIterator[TestClient[Any, Any]]:
    topics = Topics(prefix=topic_prefix)
    config = fast_runtime_config(database_url, kafka_bootstrap, topics, partitions=2)
    async with CoordinatorRuntime(config, [APPROVAL]) as runtime, looping(runtime):
        app = create_app(
            runtime.store,
            runtime.definitions,
            topics,
            ApiConfig(tokens={"op": Principal(name="otto", role=Role.OPERATOR)}),
        )
        async with TestClient(TestServer(app)) as c:
            yield c


async def _saga_when(
    client: TestClient[Any, Any], saga_id: str, done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        saga: dict[str, Any] = await (
            await client.get(f"/v1/sagas/{saga_id}", headers=HEADERS)
        ).json()
        if done(saga):
            return saga
        if loop.time() > deadline:
            raise AssertionError(f"saga never got there: {saga['status']} {saga['steps']}")
        await asyncio.sleep(0.05)


async def _start(client: TestClient[Any, Any]) -> str:
    resp = await client.post("/v1/sagas", json={"type": "approval"}, headers=HEADERS)
    assert resp.status == 201
    return str((await resp.json())["saga_id"])


async def test_a_signal_sent_through_the_api_moves_the_saga_on(
    client: TestClient[Any, Any],
) -> None:
    saga_id = await _start(client)
    resp = await client.post(
        f"/v1/sagas/{saga_id}/signals",
        json={"name": "approved", "data": {"by": "boss"}},
        headers=HEADERS,
    )
    assert resp.status == 202
    saga = await _saga_when(client, saga_id, lambda s: s["steps"][0]["status"] == "succeeded")
    assert saga["steps"][1]["status"] == "running", "the pivot's command was sent"
    kinds = [r["kind"] for r in saga["timeline"]]
    assert kinds.index("operator.requested") < kinds.index("signal.received")

    # Past the pivot the saga only goes forward: abort is now refused up front.
    resp = await client.post(f"/v1/sagas/{saga_id}/abort", json={"reason": "x"}, headers=HEADERS)
    assert resp.status == 409


async def test_an_abort_through_the_api_is_applied_and_audited_with_the_caller(
    client: TestClient[Any, Any],
) -> None:
    saga_id = await _start(client)
    resp = await client.post(
        f"/v1/sagas/{saga_id}/abort", json={"reason": "customer cancelled"}, headers=HEADERS
    )
    assert resp.status == 202
    saga = await _saga_when(client, saga_id, lambda s: s["status"] == "compensated")
    assert saga["abort_reason"] == "customer cancelled"
    [applied] = [r for r in saga["timeline"] if r["kind"] == "event.operator_abort"]
    assert applied["actor"] == "otto"
    assert saga["timeline_intact"] is True
