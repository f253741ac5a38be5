"""The HTTP API (aiohttp): start, inspect and operate sagas; health, readiness, OpenAPI.

Build it with :func:`create_app` and serve it with :func:`serve` (``saga api`` does both).
"""

from saga.access import ANONYMOUS, ApiConfig, Principal, Role, check_bind, parse_tokens
from saga.api._app import ROUTES, Route, create_app
from saga.api._openapi import openapi_document
from saga.api._serve import serve

__all__ = [
    "ANONYMOUS",
    "ROUTES",
    "ApiConfig",
    "Principal",
    "Role",
    "Route",
    "check_bind",
    "create_app",
    "openapi_document",
    "parse_tokens",
    "serve",
]
