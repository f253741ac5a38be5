"""The OpenAPI 3.1 document of the HTTP API, served at ``/openapi.json``.

Written as data: the paths below are the contract, and request/response schemas come
from the pydantic models (``model_json_schema``), so they cannot drift from what the
handlers validate and return. A test validates the document and checks that it
describes exactly the routes the app registers.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from saga.api._models import (
    DefinitionList,
    ErrorResponse,
    Health,
    OperatorRequest,
    Readiness,
    SignalRequest,
    StartSagaRequest,
)
from saga.engine import SagaStatus
from saga.operations import Accepted, DefinitionDetail, SagaDetail, SagaPage, StartResult

API_VERSION = "1.0.0"
"""Version of the API contract (``info.version``)."""

_REQUESTS: tuple[type[BaseModel], ...] = (StartSagaRequest, SignalRequest, OperatorRequest)
_RESPONSES: tuple[type[BaseModel], ...] = (
    Accepted,
    DefinitionDetail,
    DefinitionList,
    ErrorResponse,
    Health,
    Readiness,
    SagaDetail,
    SagaPage,
    StartResult,
)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


_ERROR_TEXT = {
    "400": "Malformed JSON.",
    "401": "No token or an unknown token.",
    "403": "The caller's role may not do this.",
    "404": "No such saga or definition.",
    "409": "Illegal in the saga's current state.",
    "422": "Invalid input (the details name each field).",
    "503": "The database (or Kafka) is unavailable; retry later.",
}


def _errors(*codes: str) -> dict[str, Any]:
    return {code: _json(ErrorResponse, _ERROR_TEXT[code]) for code in codes}


_SECURED: list[dict[str, list[str]]] = [{"bearer": []}]
_PUBLIC: list[dict[str, list[str]]] = []

_SAGA_ID = {
    "name": "saga_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
}
_STEP = {"name": "step", "in": "path", "required": True, "schema": {"type": "string"}}
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "A retried start with the same key returns the same saga (200).",
    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _operator(summary: str, operation_id: str, *, step: bool = False) -> dict[str, Any]:
    return {
        "post": {
            "operationId": operation_id,
            "summary": summary,
            "tags": ["operator"],
            "security": _SECURED,
            "parameters": [_SAGA_ID, _STEP] if step else [_SAGA_ID],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref(OperatorRequest)}},
            },
            "responses": {
                "202": _json(Accepted, "Delivered to the coordinator; see the timeline."),
                **_errors("400", "401", "403", "404", "409", "422", "503"),
            },
        }
    }


_PATHS: dict[str, Any] = {
    "/healthz": {
        "get": {
            "operationId": "healthz",
            "summary": "The process is alive",
            "tags": ["health"],
            "security": _PUBLIC,
            "responses": {"200": _json(Health, "Alive.")},
        }
    },
    "/readyz": {
        "get": {
            "operationId": "readyz",
            "summary": "The database and Kafka are reachable (cached for a few seconds)",
            "tags": ["health"],
            "security": _PUBLIC,
            "responses": {
                "200": _json(Readiness, "Ready."),
                "503": _json(Readiness, "A dependency does not answer."),
            },
        }
    },
    "/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "tags": ["health"],
            "security": _PUBLIC,
            "responses": {
                "200": {
                    "description": "The OpenAPI 3.1 document.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    },
    "/v1/definitions": {
        "get": {
            "operationId": "listDefinitions",
            "summary": "List registered saga definitions",
            "tags": ["definitions"],
            "security": _SECURED,
            "responses": {
                "200": _json(DefinitionList, "Every registered name and version."),
                **_errors("401", "403", "503"),
            },
        }
    },
    "/v1/definitions/{name}/{version}": {
        "get": {
            "operationId": "getDefinition",
            "summary": "One saga definition, with a Mermaid graph",
            "tags": ["definitions"],
            "security": _SECURED,
            "parameters": [
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                {
                    "name": "version",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
                },
            ],
            "responses": {
                "200": _json(DefinitionDetail, "The definition."),
                **_errors("401", "403", "404", "422", "503"),
            },
        }
    },
    "/v1/sagas": {
        "post": {
            "operationId": "startSaga",
            "summary": "Start a saga",
            "tags": ["sagas"],
            "security": _SECURED,
            "parameters": [_IDEMPOTENCY_KEY],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref(StartSagaRequest)}},
            },
            "responses": {
                "201": _json(StartResult, "Started; Location names the saga."),
                "200": _json(StartResult, "An earlier start with this Idempotency-Key."),
                **_errors("400", "401", "403", "404", "422", "503"),
            },
        },
        "get": {
            "operationId": "listSagas",
            "summary": "List sagas, newest first",
            "tags": ["sagas"],
            "security": _SECURED,
            "parameters": [
                _query("type", {"type": "string"}, "Only sagas of this definition."),
                _query(
                    "status",
                    {"type": "string", "enum": [s.value for s in SagaStatus]},
                    "Only sagas in this status.",
                ),
                _query(
                    "created_from",
                    {"type": "string", "format": "date-time"},
                    "Created at or after (UTC when no offset).",
                ),
                _query(
                    "created_to",
                    {"type": "string", "format": "date-time"},
                    "Created before (UTC when no offset).",
                ),
                _query(
                    "limit",
                    {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
                    "Page size.",
                ),
                _query("cursor", {"type": "string"}, "The previous page's next_cursor."),
            ],
            "responses": {
                "200": _json(SagaPage, "A page of sagas."),
                **_errors("401", "403", "422", "503"),
            },
        },
    },
    "/v1/sagas/{saga_id}": {
        "get": {
            "operationId": "getSaga",
            "summary": "One saga: status, steps, context and timeline",
            "tags": ["sagas"],
            "security": _SECURED,
            "parameters": [_SAGA_ID],
            "responses": {
                "200": _json(SagaDetail, "The saga."),
                **_errors("401", "403", "404", "422", "503"),
            },
        }
    },
    "/v1/sagas/{saga_id}/signals": {
        "post": {
            "operationId": "sendSignal",
            "summary": "Send a signal to a waiting saga",
            "tags": ["sagas"],
            "security": _SECURED,
            "parameters": [_SAGA_ID],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref(SignalRequest)}},
            },
            "responses": {
                "202": _json(Accepted, "Delivered to the coordinator."),
                **_errors("400", "401", "403", "404", "409", "422", "503"),
            },
        }
    },
    "/v1/sagas/{saga_id}/abort": _operator("Abort a saga (compensates when possible)", "abort"),
    "/v1/sagas/{saga_id}/steps/{step}/retry": _operator(
        "Retry the step (or compensation) a stuck saga is stuck on", "retryStep", step=True
    ),
    "/v1/sagas/{saga_id}/steps/{step}/skip": _operator(
        "Count a stuck (or waiting) step as done", "skipStep", step=True
    ),
    "/v1/sagas/{saga_id}/mark-compensated": _operator(
        "Declare a stuck saga compensated", "markCompensated"
    ),
    "/v1/sagas/{saga_id}/resume": _operator(
        "Resume a stuck saga with a fresh retry budget", "resume"
    ),
}


def _schemas() -> dict[str, Any]:
    pairs: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        *((m, "validation") for m in _REQUESTS),
        *((m, "serialization") for m in _RESPONSES),
    ]
    _, top = models_json_schema(pairs, ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = top.get("$defs", {})
    return schemas


@functools.cache
def _document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "saga-coordinator API",
            "version": API_VERSION,
            "description": (
                "Start, inspect and operate orchestrated sagas. Signals, abort and the "
                "operator verbs are delivered to the coordinator that owns the saga and "
                "answered with 202; the saga's timeline shows the outcome."
            ),
        },
        "paths": _PATHS,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Tokens and roles (viewer, operator) from SAGA_API_TOKENS.",
                }
            },
        },
        "security": _SECURED,
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (a fresh copy the caller may change)."""
    return copy.deepcopy(_document())
