"""Request and response bodies of the HTTP API (pydantic; the OpenAPI schemas come from here).

Responses about sagas and definitions reuse the views of :mod:`saga.operations`, so the
API and the CLI's ``--json`` output have the same shape.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from saga.engine import SagaStatus
from saga.operations import DefinitionSummary, decode_cursor

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


def _cursor(value: str) -> str:
    decode_cursor(value)
    return value


Cursor = Annotated[str, StringConstraints(min_length=1, max_length=1000), AfterValidator(_cursor)]

MAX_LIMIT = 500
"""Most sagas one list request returns."""

MAX_VERSION = 2**31 - 1
"""Largest definition version (the column is a 32-bit integer)."""


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StartSagaRequest(_Body):
    """Body of ``POST /v1/sagas``."""

    type: Name
    """Name of the saga definition."""
    version: int | None = Field(default=None, ge=1, le=MAX_VERSION)
    """Definition version; the latest registered one when absent."""
    input: dict[str, Any] = Field(default_factory=dict)
    """The start input (the saga's initial context)."""
    correlation_id: UUID | None = None
    """Business correlation id; the saga id when absent."""


class SignalRequest(_Body):
    """Body of ``POST /v1/sagas/{saga_id}/signals``."""

    name: Name
    """Signal name, matched against the wait steps' ``signal``."""
    data: dict[str, Any] = Field(default_factory=dict)
    """Signal data: the wait step's output."""


class OperatorRequest(_Body):
    """Body of abort and the operator verbs: the reason is required and audited."""

    reason: Reason
    """Why; written to the audit log with the caller's name."""


class ListSagasQuery(_Body):
    """Query parameters of ``GET /v1/sagas``."""

    type: Name | None = None
    """Only sagas of this definition."""
    status: SagaStatus | None = None
    """Only sagas in this status."""
    created_from: datetime | None = None
    """Only sagas created at or after this time (ISO 8601; UTC when no offset)."""
    created_to: datetime | None = None
    """Only sagas created before this time (ISO 8601; UTC when no offset)."""
    limit: int = Field(default=50, ge=1, le=MAX_LIMIT)
    """Page size."""
    cursor: Cursor | None = None
    """Opaque cursor from the previous page's ``next_cursor``."""


class ErrorDetail(_Body):
    """What went wrong."""

    code: str
    """Stable machine-readable code, e.g. ``saga_not_found``."""
    message: str
    """Human-readable description."""
    details: Any = None
    """Extra data, e.g. the list of invalid fields."""


class ErrorResponse(_Body):
    """Every error response."""

    error: ErrorDetail


class Health(_Body):
    """Body of ``/healthz``."""

    status: Literal["ok"] = "ok"


class Check(_Body):
    """One readiness check."""

    ok: bool
    """Whether the dependency answered in time."""
    detail: str = ""
    """What failed, or ``skipped`` when the check is not configured."""
    checked_at: datetime
    """When the check actually ran (results are cached briefly)."""


class Readiness(_Body):
    """Body of ``/readyz``."""

    status: Literal["ready", "not_ready"]
    checks: dict[str, Check]
    """``database`` and ``kafka``."""


class DefinitionList(_Body):
    """Body of ``GET /v1/definitions``."""

    items: list[DefinitionSummary]
