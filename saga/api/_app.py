"""The aiohttp application: routes, handlers and :func:`create_app`.

Handlers only parse and validate the request, call :class:`saga.operations.SagaOperations`
(the same code the CLI runs) and render the result; errors become the JSON error model
in :mod:`saga.api._errors`. :data:`ROUTES` is the one list of routes: the app registers
it, the auth middleware reads each route's role from it, and a test checks that the
OpenAPI document in :mod:`saga.api._openapi` describes exactly these routes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar
from uuid import UUID

from aiohttp import web
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from saga.access import ApiConfig, Role
from saga.api._auth import make_auth_middleware, principal_of
from saga.api._errors import ApiProblem, Handler, error_middleware, invalid
from saga.api._health import ReadinessProbe, database_ping, kafka_metadata
from saga.api._models import (
    MAX_VERSION,
    DefinitionList,
    Health,
    ListSagasQuery,
    OperatorRequest,
    SignalRequest,
    StartSagaRequest,
)
from saga.api._openapi import openapi_document
from saga.console import setup_console
from saga.coordinator import DefinitionCache
from saga.operations import SagaOperations, Verb
from saga.store import SqlStore
from saga.telemetry import Telemetry
from saga.topics import Topics

log = logging.getLogger("saga.api")

OPS = web.AppKey("ops", SagaOperations)
"""The operations the handlers call."""
READINESS = web.AppKey("readiness", ReadinessProbe)
"""The cached readiness probe."""
TELEMETRY = web.AppKey("telemetry", Telemetry)
"""The process's telemetry (``/metrics`` renders its Prometheus registry)."""

IDEMPOTENCY_KEY_MAX = 200
"""Longest ``Idempotency-Key`` header accepted (the column's size)."""

M = TypeVar("M", bound=BaseModel)
_UUID = TypeAdapter(UUID)
_VERSION: TypeAdapter[int] = TypeAdapter(Annotated[int, Field(ge=1, le=MAX_VERSION)])


# -- request parsing ----------------------------------------------------------------------


async def _body(request: web.Request, model: type[M]) -> M:
    raw = await request.read()
    data: Any = {}
    if raw.strip():
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiProblem(400, "invalid_json", f"the body is not valid JSON: {exc}") from exc
        except RecursionError as exc:
            raise ApiProblem(400, "invalid_json", "the body is nested too deeply") from exc
    if not isinstance(data, dict):
        raise ApiProblem(422, "invalid_request", "the body must be a JSON object")
    _refuse_nul(data, "body")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid(exc, "body") from exc


def _refuse_nul(data: Any, where: str) -> None:
    """Refuse NUL characters: PostgreSQL cannot store them in text or JSONB."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise ApiProblem(422, "invalid_request", f"the {where} contains a NUL character")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _saga_id(request: web.Request) -> UUID:
    try:
        return _UUID.validate_python(request.match_info["saga_id"])
    except ValidationError as exc:
        raise invalid(exc, "path.saga_id") from exc


def _query(request: web.Request) -> ListSagasQuery:
    repeated = sorted({k for k in request.query if len(request.query.getall(k)) > 1})
    if repeated:
        raise ApiProblem(
            422, "invalid_request", f"query parameter {repeated[0]!r} is given more than once"
        )
    _refuse_nul(dict(request.query), "query")
    try:
        query = ListSagasQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        raise invalid(exc, "query") from exc
    return query.model_copy(
        update={
            "created_from": _utc(query.created_from),
            "created_to": _utc(query.created_to),
        }
    )


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _json(
    model: BaseModel, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=model.model_dump_json().encode(),
        content_type="application/json",
        headers=headers,
    )


# -- handlers -----------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    """The process is alive."""
    return _json(Health())


async def readyz(request: web.Request) -> web.Response:
    """The database and Kafka answer (cached briefly)."""
    result = await request.app[READINESS].check()
    return _json(result, 200 if result.status == "ready" else 503)


async def prometheus_metrics(request: web.Request) -> web.Response:
    """Prometheus exposition of the process's metrics (gauges are sampled first)."""
    telemetry = request.app[TELEMETRY]
    await telemetry.refresh()
    body, content_type = telemetry.prometheus_text()
    return web.Response(body=body, headers={"Content-Type": content_type})


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document."""
    return web.json_response(openapi_document())


async def list_definitions(request: web.Request) -> web.Response:
    """Every registered definition."""
    return _json(DefinitionList(items=await request.app[OPS].list_definitions()))


async def get_definition(request: web.Request) -> web.Response:
    """One definition with its Mermaid graph."""
    try:
        version = _VERSION.validate_python(request.match_info["version"], strict=False)
    except ValidationError as exc:
        raise invalid(exc, "path.version") from exc
    name = request.match_info["name"]
    _refuse_nul(name, "path")
    return _json(await request.app[OPS].get_definition(name, version))


async def start_saga(request: web.Request) -> web.Response:
    """Start a saga (201), or return the one an earlier start with the same key made (200)."""
    body = await _body(request, StartSagaRequest)
    key = request.headers.get("Idempotency-Key")
    if key is not None:
        key = key.strip()
        if not key or len(key) > IDEMPOTENCY_KEY_MAX or "\x00" in key:
            raise ApiProblem(
                422,
                "invalid_request",
                f"Idempotency-Key must have 1 to {IDEMPOTENCY_KEY_MAX} characters",
            )
    result = await request.app[OPS].start(
        body.type,
        body.input,
        version=body.version,
        idempotency_key=key,
        correlation_id=body.correlation_id,
        actor=principal_of(request).name,
    )
    location = f"/v1/sagas/{result.saga_id}"
    return _json(result, 201 if result.created else 200, {"Location": location})


async def list_sagas(request: web.Request) -> web.Response:
    """A page of sagas, filtered."""
    q = _query(request)
    page = await request.app[OPS].list_sagas(
        saga_type=q.type,
        status=q.status,
        created_from=q.created_from,
        created_to=q.created_to,
        limit=q.limit,
        cursor=q.cursor,
    )
    return _json(page)


async def get_saga(request: web.Request) -> web.Response:
    """One saga: status, steps, context and timeline."""
    return _json(await request.app[OPS].get_saga(_saga_id(request)))


async def send_signal(request: web.Request) -> web.Response:
    """Deliver a signal to the saga's coordinator (202)."""
    saga_id = _saga_id(request)
    body = await _body(request, SignalRequest)
    accepted = await request.app[OPS].signal(
        saga_id, body.name, body.data, actor=principal_of(request).name
    )
    return _json(accepted, 202)


def _operator(verb: Verb) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        saga_id = _saga_id(request)
        body = await _body(request, OperatorRequest)
        step = request.match_info.get("step")
        accepted = await request.app[OPS].command(
            saga_id, verb, reason=body.reason, actor=principal_of(request).name, step=step
        )
        return _json(accepted, 202)

    handler.__name__ = handler.__qualname__ = verb.value
    return handler


# -- routes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One route of the API."""

    method: str
    path: str
    handler: Handler
    role: Role | None
    """The role a caller needs; ``None``: public."""


ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", healthz, None),
    Route("GET", "/readyz", readyz, None),
    Route("GET", "/openapi.json", openapi, None),
    Route("GET", "/v1/definitions", list_definitions, Role.VIEWER),
    Route("GET", "/v1/definitions/{name}/{version}", get_definition, Role.VIEWER),
    Route("POST", "/v1/sagas", start_saga, Role.OPERATOR),
    Route("GET", "/v1/sagas", list_sagas, Role.VIEWER),
    Route("GET", "/v1/sagas/{saga_id}", get_saga, Role.VIEWER),
    Route("POST", "/v1/sagas/{saga_id}/signals", send_signal, Role.OPERATOR),
    Route("POST", "/v1/sagas/{saga_id}/abort", _operator(Verb.ABORT), Role.OPERATOR),
    Route(
        "POST",
        "/v1/sagas/{saga_id}/steps/{step}/retry",
        _operator(Verb.RETRY_STEP),
        Role.OPERATOR,
    ),
    Route(
        "POST", "/v1/sagas/{saga_id}/steps/{step}/skip", _operator(Verb.SKIP_STEP), Role.OPERATOR
    ),
    Route(
        "POST",
        "/v1/sagas/{saga_id}/mark-compensated",
        _operator(Verb.MARK_COMPENSATED),
        Role.OPERATOR,
    ),
    Route("POST", "/v1/sagas/{saga_id}/resume", _operator(Verb.RESUME), Role.OPERATOR),
)
"""Every route: method, path (aiohttp syntax, which is also OpenAPI's), handler, role."""


def create_app(
    store: SqlStore,
    definitions: DefinitionCache,
    topics: Topics,
    config: ApiConfig | None = None,
    *,
    telemetry: Telemetry | None = None,
) -> web.Application:
    """Build the HTTP API.

    Args:
        store: The saga store.
        definitions: Definitions over the same store.
        topics: Topic names (signals and operator commands go to ``topics.replies``).
        config: Tokens, readiness checks and limits; no authentication when ``None``.
        telemetry: When it exports metrics to Prometheus, ``GET /metrics`` serves them
            (public, like the health checks; not part of the REST API's OpenAPI).

    The operator console (:mod:`saga.console`) is served under ``/ui/``, signing in
    with the same tokens.

    Returns:
        The application; run it with :func:`aiohttp.web.run_app` or an ``AppRunner``.
    """
    config = config or ApiConfig()
    roles = {(r.method, r.path): r.role for r in ROUTES}
    app = web.Application(
        middlewares=[error_middleware, make_auth_middleware(config, roles)],
        client_max_size=config.max_body_bytes,
    )
    app[OPS] = SagaOperations(store, definitions, topics, telemetry=telemetry)
    bootstrap = config.kafka_bootstrap_servers
    app[READINESS] = ReadinessProbe(
        {
            "database": lambda: database_ping(store),
            "kafka": (lambda: kafka_metadata(bootstrap)) if bootstrap else None,
        },
        timeout_s=config.readiness_timeout_s,
        ttl_s=config.readiness_ttl_s,
    )
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
    setup_console(app, app[OPS], config, bootstrap=bootstrap)
    if telemetry is not None and telemetry.serves_prometheus:
        app[TELEMETRY] = telemetry
        app.router.add_get("/metrics", prometheus_metrics)
    if not config.auth_enabled:
        log.warning("API authentication is off (no SAGA_API_TOKENS): serve on loopback only")
    return app
