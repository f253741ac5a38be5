"""The HTTP API against a real database (SQLite and PostgreSQL): every endpoint, auth,
bad input (always a 4xx JSON error, never a 5xx) and what lands in the outbox."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from _api_helpers import (
    DEFINITIONS,
    STUCK_IN_COMPENSATION,
    apply_events,
    envelope_of,
    outbox_rows,
)
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import update

from saga.api import ApiConfig, Principal, Role, create_app
from saga.api._app import OPS
from saga.coordinator import CONTROL_PREFIX, DefinitionCache, decode_event
from saga.definition import SagaBuilder, pivot
from saga.engine import OperatorRetryStep, SagaStatus, SignalReceived
from saga.store import SqlStore, create_engine, upgrade
from saga.store.tables import audit_log
from saga.topics import Topics

pytestmark = [pytest.mark.postgres]

VIEWER = "viewer-token"
OPERATOR = "operator-token"
TOKENS = {
    VIEWER: Principal(name="vera", role=Role.VIEWER),
    OPERATOR: Principal(name="otto", role=Role.OPERATOR),
}
AS_OPERATOR = {"Authorization": f"Bearer {OPERATOR}"}
AS_VIEWER = {"Authorization": f"Bearer {VIEWER}"}


class Env:
    def __init__(self, store: SqlStore, definitions: DefinitionCache, topics: Topics) -> None:
        self.store = store
        self.definitions = definitions
        self.topics = topics


@pytest.fixture
async def env(database_url: str, topic_prefix: str) -> AsyncIterator[Env]:
    engine = create_engine(database_url)
    try:
        await upgrade(engine)
        store = SqlStore(engine)
        cache = DefinitionCache(store)
        await cache.register(DEFINITIONS)
        topics = Topics(prefix=topic_prefix)
        await store.register_partitions(topics.coordinator_group, topics.replies, 3)
        yield Env(store, cache, topics)
    finally:
        await engine.dispose()


async def _client(env: Env, config: ApiConfig) -> TestClient[Any, Any]:
    app = create_app(env.store, env.definitions, env.topics, config)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.fixture
async def client(env: Env) -> AsyncIterator[TestClient[Any, Any]]:
    c = await _client(env, ApiConfig(tokens=TOKENS))
    try:
        yield c
    finally:
        await c.close()


async def _error(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body["error"]


async def _start(client: TestClient[Any, Any], saga_type: str = "booking", **kw: Any) -> str:
    headers = {**AS_OPERATOR, **kw.pop("headers", {})}
    resp = await client.post(
        "/v1/sagas",
        json={"type": saga_type, "input": {"order_id": "o-1"}, **kw},
        headers=headers,
    )
    assert resp.status in (200, 201), await resp.text()
    return str((await resp.json())["saga_id"])


# -- start --------------------------------------------------------------------------------


async def test_start_writes_the_saga_and_its_first_command_once_per_key(
    client: TestClient[Any, Any], env: Env
) -> None:
    body = {"type": "booking", "input": {"order_id": "o-42"}}
    headers = {**AS_OPERATOR, "Idempotency-Key": "order-42"}
    first = await client.post("/v1/sagas", json=body, headers=headers)
    assert first.status == 201
    saga_id = (await first.json())["saga_id"]
    assert first.headers["Location"] == f"/v1/sagas/{saga_id}"

    rows = await outbox_rows(env.store, topic=env.topics.commands("inventory"))
    assert len(rows) == 1
    command = envelope_of(rows[0])
    assert str(command.saga_id) == saga_id
    assert command.step == "reserve"
    assert command.payload == {"order_id": "o-42"}
    assert rows[0].key == saga_id.encode()

    again = await client.post("/v1/sagas", json=body, headers=headers)
    assert again.status == 200
    assert (await again.json()) == {"saga_id": saga_id, "created": False}
    assert len(await outbox_rows(env.store, topic=env.topics.commands("inventory"))) == 1


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"[1, 2]", 422, "invalid_request"),
        (b'{"input": {}}', 422, "invalid_request"),
        (b'{"type": "booking", "input": [1]}', 422, "invalid_request"),
        (b'{"type": "booking", "version": 0}', 422, "invalid_request"),
        (b'{"type": "booking", "surprise": 1}', 422, "invalid_request"),
        (b'{"type": "booking", "correlation_id": "nope"}', 422, "invalid_request"),
        (b'{"type": "no_such_saga"}', 404, "definition_not_found"),
        (b'{"type": "booking", "version": 7}', 404, "definition_not_found"),
    ],
)
async def test_start_rejects_bad_input_with_a_4xx(
    client: TestClient[Any, Any], body: bytes, status: int, code: str
) -> None:
    resp = await client.post(
        "/v1/sagas", data=body, headers={**AS_OPERATOR, "Content-Type": "application/json"}
    )
    await _error(resp, status, code)


async def test_start_checks_the_input_against_the_definitions_schema(env: Env) -> None:
    typed = (
        SagaBuilder(
            "typed_booking",
            input_schema={
                "type": "object",
                "required": ["order_id"],
                "properties": {"order_id": {"type": "string"}, "seats": {"type": "integer"}},
            },
        )
        .add(pivot("book", participant="hotel", command="hotel.book"))
        .build()
    )
    await env.definitions.register([typed])
    c = await _client(env, ApiConfig(tokens=TOKENS))
    try:
        resp = await c.post(
            "/v1/sagas",
            json={"type": "typed_booking", "input": {"order_id": "o-1", "seats": "two"}},
            headers=AS_OPERATOR,
        )
        error = await _error(resp, 422, "invalid_input")
        assert error["details"]["path"] == "input.seats"
        assert "'two' is not of type 'integer'" in error["message"]
        ok = await c.post(
            "/v1/sagas",
            json={"type": "typed_booking", "input": {"order_id": "o-1", "seats": 2}},
            headers=AS_OPERATOR,
        )
        assert ok.status == 201, await ok.text()
    finally:
        await c.close()


async def test_start_rejects_an_oversized_idempotency_key(client: TestClient[Any, Any]) -> None:
    resp = await client.post(
        "/v1/sagas",
        json={"type": "booking"},
        headers={**AS_OPERATOR, "Idempotency-Key": "k" * 201},
    )
    await _error(resp, 422, "invalid_request")


# -- read ---------------------------------------------------------------------------------


async def test_get_saga_shows_status_steps_context_and_timeline(
    client: TestClient[Any, Any],
) -> None:
    saga_id = await _start(client)
    resp = await client.get(f"/v1/sagas/{saga_id}", headers=AS_VIEWER)
    assert resp.status == 200
    saga = await resp.json()
    assert saga["saga_id"] == saga_id
    assert saga["status"] == "running"
    assert saga["context"] == {"order_id": "o-1"}
    assert [s["name"] for s in saga["steps"]] == ["reserve", "charge", "confirm"]
    reserve = saga["steps"][0]
    assert (reserve["kind"], reserve["status"], reserve["attempt"]) == (
        "compensatable",
        "running",
        1,
    )
    assert [e["kind"] for e in reserve["executions"]] == ["command"]
    assert saga["timeline"], "the start is audited"
    assert [r["seq"] for r in saga["timeline"]] == list(range(1, len(saga["timeline"]) + 1))
    assert saga["timeline_intact"] is True


async def test_get_saga_unknown_or_malformed_id_is_a_4xx(client: TestClient[Any, Any]) -> None:
    await _error(
        await client.get(f"/v1/sagas/{uuid.uuid4()}", headers=AS_VIEWER), 404, "saga_not_found"
    )
    await _error(
        await client.get("/v1/sagas/not-a-uuid", headers=AS_VIEWER), 422, "invalid_request"
    )


async def test_list_filters_and_pages_with_an_opaque_cursor(
    client: TestClient[Any, Any],
) -> None:
    ids = [await _start(client) for _ in range(3)]
    approval = await _start(client, "approval")

    page1 = await (await client.get("/v1/sagas?type=booking&limit=2", headers=AS_VIEWER)).json()
    assert len(page1["items"]) == 2
    assert page1["next_cursor"]
    page2 = await (
        await client.get(
            "/v1/sagas",
            params={"type": "booking", "limit": "2", "cursor": page1["next_cursor"]},
            headers=AS_VIEWER,
        )
    ).json()
    assert page2["next_cursor"] is None
    listed = [s["saga_id"] for s in page1["items"] + page2["items"]]
    assert sorted(listed) == sorted(ids)

    running = await (
        await client.get("/v1/sagas?type=approval&status=running", headers=AS_VIEWER)
    ).json()
    assert [s["saga_id"] for s in running["items"]] == [approval]
    done = await (await client.get("/v1/sagas?status=completed", headers=AS_VIEWER)).json()
    assert done["items"] == []
    past = await (
        await client.get("/v1/sagas?created_to=2000-01-01T00:00:00Z", headers=AS_VIEWER)
    ).json()
    assert past["items"] == []
    since = await (
        await client.get("/v1/sagas?created_from=2000-01-01T00:00:00", headers=AS_VIEWER)
    ).json()
    assert len(since["items"]) == 4


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=501",
        "limit=ten",
        "status=sleeping",
        "created_from=yesterday",
        "cursor=garbage",
        "colour=blue",
        "type=a&type=b",
    ],
)
async def test_list_rejects_bad_query_parameters(client: TestClient[Any, Any], query: str) -> None:
    await _error(await client.get(f"/v1/sagas?{query}", headers=AS_VIEWER), 422, "invalid_request")


async def test_definitions_are_listed_and_drawn(client: TestClient[Any, Any]) -> None:
    listed = await (await client.get("/v1/definitions", headers=AS_VIEWER)).json()
    assert listed["items"] == [
        {"name": "approval", "version": 1},
        {"name": "booking", "version": 1},
    ]
    resp = await client.get("/v1/definitions/booking/1", headers=AS_VIEWER)
    assert resp.status == 200
    detail = await resp.json()
    assert detail["name"] == "booking"
    assert detail["mermaid"].startswith("flowchart")
    assert "reserve" in detail["mermaid"]
    assert [s["name"] for s in detail["definition"]["steps"]] == ["reserve", "charge", "confirm"]
    await _error(
        await client.get("/v1/definitions/booking/2", headers=AS_VIEWER),
        404,
        "definition_not_found",
    )
    await _error(
        await client.get("/v1/definitions/booking/one", headers=AS_VIEWER), 422, "invalid_request"
    )


# -- signals and operator verbs -----------------------------------------------------------


async def test_signal_is_delivered_through_the_outbox_with_the_callers_identity(
    client: TestClient[Any, Any], env: Env
) -> None:
    saga_id = await _start(client, "approval")
    resp = await client.post(
        f"/v1/sagas/{saga_id}/signals",
        json={"name": "approved", "data": {"by": "boss"}},
        headers=AS_OPERATOR,
    )
    assert resp.status == 202, await resp.text()
    accepted = await resp.json()
    assert accepted["verb"] == "signal"

    [row] = await outbox_rows(env.store, message_id=accepted["message_id"])
    assert row.topic == env.topics.replies
    assert row.key == saga_id.encode()
    envelope = envelope_of(row)
    assert envelope.kind == "signal"
    event = decode_event(envelope)
    assert event == SignalReceived(
        name="approved", data={"by": "boss"}, message_id=envelope.message_id
    )
    saga = await (await client.get(f"/v1/sagas/{saga_id}", headers=AS_VIEWER)).json()
    requested = [r for r in saga["timeline"] if r["kind"] == "operator.requested"]
    assert requested[-1]["actor"] == "otto"
    assert requested[-1]["detail"]["verb"] == "signal"
    assert requested[-1]["detail"]["message_id"] == accepted["message_id"]


async def test_signal_nobody_waits_for_is_a_422(client: TestClient[Any, Any], env: Env) -> None:
    saga_id = await _start(client, "approval")
    before = len(await outbox_rows(env.store))
    resp = await client.post(
        f"/v1/sagas/{saga_id}/signals", json={"name": "rejected"}, headers=AS_OPERATOR
    )
    await _error(resp, 422, "invalid_command")
    resp = await client.post(f"/v1/sagas/{saga_id}/signals", json={}, headers=AS_OPERATOR)
    await _error(resp, 422, "invalid_request")
    resp = await client.post(
        f"/v1/sagas/{uuid.uuid4()}/signals", json={"name": "approved"}, headers=AS_OPERATOR
    )
    await _error(resp, 404, "saga_not_found")
    assert len(await outbox_rows(env.store)) == before, "nothing was delivered"


async def test_operator_verbs_on_a_stuck_saga(client: TestClient[Any, Any], env: Env) -> None:
    saga_id = await _start(client)
    state = await apply_events(
        env.store, env.definitions, uuid.UUID(saga_id), STUCK_IN_COMPENSATION
    )
    assert state.status is SagaStatus.STUCK
    assert state.stuck_step == "reserve"

    resp = await client.post(
        f"/v1/sagas/{saga_id}/steps/reserve/retry",
        json={"reason": "release endpoint fixed"},
        headers=AS_OPERATOR,
    )
    assert resp.status == 202, await resp.text()
    accepted = await resp.json()
    [row] = await outbox_rows(env.store, message_id=accepted["message_id"])
    assert row.topic == env.topics.replies
    envelope = envelope_of(row)
    assert envelope.type.startswith(CONTROL_PREFIX)
    event = decode_event(envelope)
    assert isinstance(event, OperatorRetryStep)
    assert (event.step, event.actor, event.reason) == ("reserve", "otto", "release endpoint fixed")

    # Each verb legal on this stuck saga is accepted (the coordinator applies only one).
    for path in ("steps/reserve/skip", "resume", "mark-compensated", "abort"):
        resp = await client.post(
            f"/v1/sagas/{saga_id}/{path}", json={"reason": "ops"}, headers=AS_OPERATOR
        )
        assert resp.status == 202, (path, await resp.text())

    # The saga is stuck on reserve, not charge; no step "nope"; a reason is required.
    resp = await client.post(
        f"/v1/sagas/{saga_id}/steps/charge/retry", json={"reason": "x"}, headers=AS_OPERATOR
    )
    await _error(resp, 409, "illegal_transition")
    resp = await client.post(
        f"/v1/sagas/{saga_id}/steps/nope/skip", json={"reason": "x"}, headers=AS_OPERATOR
    )
    await _error(resp, 422, "invalid_command")
    for body in ({}, {"reason": "   "}):
        resp = await client.post(f"/v1/sagas/{saga_id}/abort", json=body, headers=AS_OPERATOR)
        await _error(resp, 422, "invalid_request")

    saga = await (await client.get(f"/v1/sagas/{saga_id}", headers=AS_VIEWER)).json()
    verbs = [r["detail"]["verb"] for r in saga["timeline"] if r["kind"] == "operator.requested"]
    assert verbs == ["start", "retry_step", "skip_step", "resume", "mark_compensated", "abort"]


async def test_illegal_verb_on_a_running_saga_is_a_409(
    client: TestClient[Any, Any], env: Env
) -> None:
    saga_id = await _start(client)
    before = len(await outbox_rows(env.store))
    for path in ("mark-compensated", "resume", "steps/reserve/retry"):
        resp = await client.post(
            f"/v1/sagas/{saga_id}/{path}", json={"reason": "why not"}, headers=AS_OPERATOR
        )
        error = await _error(resp, 409, "illegal_transition")
        assert error["details"]["saga_id"] == saga_id
    assert len(await outbox_rows(env.store)) == before
    # Abort before the pivot is legal on a running saga.
    resp = await client.post(
        f"/v1/sagas/{saga_id}/abort", json={"reason": "customer cancelled"}, headers=AS_OPERATOR
    )
    assert resp.status == 202


# -- auth ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/sagas"),
        ("GET", "/v1/definitions"),
        ("POST", "/v1/sagas"),
        ("POST", "/v1/sagas/{id}/abort"),
        ("POST", "/v1/sagas/{id}/signals"),
    ],
)
async def test_auth_needs_a_known_token(
    client: TestClient[Any, Any], method: str, path: str
) -> None:
    url = path.replace("{id}", str(uuid.uuid4()))
    resp = await client.request(method, url, json={})
    await _error(resp, 401, "unauthorized")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp = await client.request(method, url, json={}, headers={"Authorization": "Bearer nope"})
    await _error(resp, 401, "unauthorized")
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
    resp = await client.request(method, url, json={}, headers={"Authorization": "Basic abc"})
    await _error(resp, 401, "unauthorized")


async def test_viewers_read_and_operators_write(client: TestClient[Any, Any]) -> None:
    saga_id = await _start(client)
    assert (await client.get("/v1/sagas", headers=AS_VIEWER)).status == 200
    assert (await client.get(f"/v1/sagas/{saga_id}", headers=AS_VIEWER)).status == 200
    assert (await client.get("/v1/definitions", headers=AS_OPERATOR)).status == 200
    for path, body in [
        ("/v1/sagas", {"type": "booking"}),
        (f"/v1/sagas/{saga_id}/abort", {"reason": "x"}),
        (f"/v1/sagas/{saga_id}/signals", {"name": "approved"}),
        (f"/v1/sagas/{saga_id}/steps/reserve/retry", {"reason": "x"}),
    ]:
        await _error(await client.post(path, json=body, headers=AS_VIEWER), 403, "forbidden")
    resp = await client.post("/v1/sagas", json={"type": "booking"}, headers=AS_OPERATOR)
    assert resp.status == 201


async def test_health_and_docs_are_public(client: TestClient[Any, Any]) -> None:
    assert await (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status == 200
    body = await ready.json()
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["kafka"]["detail"].startswith("skipped")
    doc = await (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")


async def test_without_tokens_everyone_is_the_local_operator(env: Env) -> None:
    client = await _client(env, ApiConfig())
    try:
        saga_id = await _start(client, "approval", headers={})
        resp = await client.post(f"/v1/sagas/{saga_id}/signals", json={"name": "approved"})
        assert resp.status == 202
        saga = await (await client.get(f"/v1/sagas/{saga_id}")).json()
        requested = [r for r in saga["timeline"] if r["kind"] == "operator.requested"]
        assert [(r["actor"], r["detail"]["verb"]) for r in requested] == [
            ("local", "start"),
            ("local", "signal"),
        ]
    finally:
        await client.close()


# -- errors -------------------------------------------------------------------------------


async def test_unknown_routes_and_methods_are_json_errors(client: TestClient[Any, Any]) -> None:
    await _error(await client.get("/v2/nothing", headers=AS_VIEWER), 404, "not_found")
    resp = await client.delete("/v1/sagas", headers=AS_OPERATOR)
    await _error(resp, 405, "method_not_allowed")
    assert "GET" in resp.headers["Allow"]


async def test_an_unexpected_exception_is_a_logged_500_json(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    async def broken() -> Any:
        raise RuntimeError("boom")

    client.server.app[OPS].list_definitions = broken  # type: ignore[method-assign]
    error = await _error(
        await client.get("/v1/definitions", headers=AS_VIEWER), 500, "internal_error"
    )
    assert "boom" not in error["message"]
    assert any("boom" in (r.exc_text or "") for r in caplog.records)


async def test_a_body_over_the_limit_is_a_413(env: Env) -> None:
    client = await _client(env, ApiConfig(tokens=TOKENS, max_body_bytes=2048))
    try:
        resp = await client.post(
            "/v1/sagas",
            json={"type": "booking", "input": {"blob": "x" * 4096}},
            headers=AS_OPERATOR,
        )
        await _error(resp, 413, "request_too_large")
    finally:
        await client.close()


async def test_a_tampered_timeline_is_flagged(client: TestClient[Any, Any], env: Env) -> None:
    saga_id = await _start(client)
    async with env.store.engine.begin() as conn:
        await conn.execute(
            update(audit_log)
            .where(audit_log.c.saga_id == saga_id, audit_log.c.seq == 1)
            .values(actor="mallory")
        )
    saga = await (await client.get(f"/v1/sagas/{saga_id}", headers=AS_VIEWER)).json()
    assert saga["timeline"][0]["actor"] == "mallory"
    assert saga["timeline_intact"] is False


NASTY = [
    ("POST", "/v1/sagas", b"[" * 100_000),
    ("POST", "/v1/sagas", b'{"type": "booking", "version": 100000000000000000000}'),
    ("POST", "/v1/sagas", b'{"type": "booking", "version": 1e400}'),
    ("POST", "/v1/sagas", b'{"type": "booking", "input": {"note": "nul \\u0000 here"}}'),
    ("POST", "/v1/sagas", b'{"type": "book\\u0000ing"}'),
    ("POST", "/v1/sagas", b'{"type": "' + b"x" * 5000 + b'"}'),
    ("POST", "/v1/sagas", b"\xff\xfe not utf-8"),
    ("POST", "/v1/sagas", b"null"),
    ("POST", "/v1/sagas/{id}/abort", b'{"reason": "nul \\u0000"}'),
    ("POST", "/v1/sagas/{id}/abort", b'{"reason": 42}'),
    ("POST", "/v1/sagas/{id}/signals", b'{"name": "approved", "data": "text"}'),
    ("POST", "/v1/sagas/{id}/steps/%00/skip", b'{"reason": "x"}'),
    ("POST", "/v1/sagas/{id}/steps/" + "s" * 3000 + "/retry", b'{"reason": "x"}'),
    ("GET", "/v1/definitions/bo%00king/1", b""),
    ("GET", "/v1/definitions/booking/99999999999999999999", b""),
    ("GET", "/v1/sagas?type=%00", b""),
    ("GET", "/v1/sagas?created_from=99999-01-01", b""),
    ("GET", "/v1/sagas/%00", b""),
]


@pytest.mark.parametrize(("method", "path", "body"), NASTY)
async def test_nasty_input_is_a_4xx_json_error(
    client: TestClient[Any, Any], method: str, path: str, body: bytes
) -> None:
    saga_id = await _start(client)
    url = path.replace("{id}", saga_id)
    resp = await client.request(
        method, url, data=body, headers={**AS_OPERATOR, "Content-Type": "application/json"}
    )
    assert 400 <= resp.status < 500, (resp.status, await resp.text())
    assert (await resp.json())["error"]["code"]
