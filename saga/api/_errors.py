"""The API's error model: every error is ``{"error": {"code", "message", "details"}}``.

:data:`STATUS_OF` maps the saga error tree onto HTTP statuses (first ``isinstance``
match wins); :func:`error_middleware` turns saga errors, aiohttp's HTTP errors and
anything unexpected (a 500, logged) into that JSON shape. Bad input is always a 4xx.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from saga.api._models import ErrorDetail, ErrorResponse
from saga.errors import (
    ConcurrencyConflict,
    DefinitionConflict,
    DefinitionError,
    DefinitionNotFound,
    DuplicateMessage,
    InvalidCommand,
    InvalidInput,
    NotReady,
    SagaError,
    SagaNotFound,
    StoreUnavailable,
    TransitionError,
    TransportError,
)

log = logging.getLogger("saga.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATUS_OF: tuple[tuple[type[SagaError], int], ...] = (
    (SagaNotFound, 404),
    (DefinitionNotFound, 404),
    (InvalidCommand, 422),
    (TransitionError, 409),
    (DefinitionError, 422),
    (InvalidInput, 422),
    (DefinitionConflict, 409),
    (DuplicateMessage, 409),
    # Another writer changed the row first: the caller may simply retry.
    (ConcurrencyConflict, 409),
    (StoreUnavailable, 503),
    (NotReady, 503),
    (TransportError, 503),
)
"""``(saga error, HTTP status)``; the first match wins; anything else is a 500."""

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
}


class ApiProblem(Exception):
    """An HTTP error with a stable code, raised by handlers and turned into JSON."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """The JSON error response."""
    body = ErrorResponse(error=ErrorDetail(code=code, message=message, details=details))
    return web.Response(
        status=status,
        body=body.model_dump_json().encode(),
        content_type="application/json",
        headers=headers,
    )


def invalid(exc: ValidationError, where: str) -> ApiProblem:
    """A 422 naming each invalid field of the body, query or path (``where``)."""
    details = [
        {
            "loc": [where, *(str(p) for p in err["loc"])],
            "msg": err["msg"],
            "type": err["type"],
        }
        for err in exc.errors(include_url=False, include_input=False)
    ]
    first = details[0]
    field = ".".join(first["loc"][1:]) or where
    return ApiProblem(
        422, "invalid_request", f"invalid {where}: {field}: {first['msg']}", details=details
    )


def saga_error_status(exc: SagaError) -> int:
    """The HTTP status of a saga error (500 when it is not in :data:`STATUS_OF`)."""
    return next((status for kind, status in STATUS_OF if isinstance(exc, kind)), 500)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error into the JSON error model; log the unexpected ones."""
    try:
        return await handler(request)
    except ApiProblem as exc:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return error_response(exc.status, code, exc.reason, None, headers)
    except SagaError as exc:
        status = saga_error_status(exc)
        details = {
            k: v
            for k, v in {
                "saga_id": exc.saga_id,
                "step": exc.step,
                "path": getattr(exc, "path", None),
            }.items()
            if v
        }
        if status >= 500:
            log.error("%s %s failed: %s", request.method, request.path, exc, exc_info=exc)
        retry = {"Retry-After": "1"} if status == 503 else None
        message = exc.message if status < 500 or exc.retriable else "internal error"
        return error_response(status, exc.code, message, details or None, retry)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, "internal_error", "internal error; see the server log")
