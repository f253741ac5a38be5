"""Bearer-token authentication and role checks.

Each route declares the role it needs (``None``: public, e.g. health checks). Without
configured tokens every caller is :data:`~saga.access.ANONYMOUS` (the server then
binds to loopback only); with tokens a request needs ``Authorization: Bearer <token>``:
none or an unknown token is a 401 with ``WWW-Authenticate``, a viewer calling a write
route is a 403.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from aiohttp import web
from aiohttp.typedefs import Middleware

from saga.access import ANONYMOUS, ApiConfig, Principal, Role
from saga.api._errors import ApiProblem, Handler

PRINCIPAL = web.RequestKey("principal", Principal)
"""The authenticated caller of a request."""

RouteKey = tuple[str, str]
"""``(method, canonical path)`` of a route, e.g. ``("GET", "/v1/sagas/{saga_id}")``."""


def principal_of(request: web.Request) -> Principal:
    """The caller of ``request`` (set by the auth middleware)."""
    return request[PRINCIPAL]


def make_auth_middleware(config: ApiConfig, roles: Mapping[RouteKey, Role | None]) -> Middleware:
    """The middleware that authenticates callers and enforces each route's role."""
    tokens = [(token.encode(), principal) for token, principal in config.tokens.items()]

    def lookup(presented: str) -> Principal | None:
        given = presented.encode()
        found = None
        # Compare against every token in constant time: no early exit leaks which matched.
        for token, principal in tokens:
            if hmac.compare_digest(token, given):
                found = principal
        return found

    @web.middleware
    async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route
        if request.match_info.http_exception is not None or route.resource is None:
            return await handler(request)  # 404/405: nothing to protect
        method = "GET" if request.method == "HEAD" else request.method
        required = roles.get((method, route.resource.canonical))
        if required is None:
            return await handler(request)
        if not config.auth_enabled:
            request[PRINCIPAL] = ANONYMOUS
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise ApiProblem(
                401,
                "unauthorized",
                "send Authorization: Bearer <token>",
                headers={"WWW-Authenticate": 'Bearer realm="saga"'},
            )
        principal = lookup(presented.strip())
        if principal is None:
            raise ApiProblem(
                401,
                "unauthorized",
                "unknown token",
                headers={"WWW-Authenticate": 'Bearer realm="saga", error="invalid_token"'},
            )
        if not principal.role.allows(required):
            raise ApiProblem(
                403,
                "forbidden",
                f"{principal.name} is a {principal.role}; this needs the {required} role",
            )
        request[PRINCIPAL] = principal
        return await handler(request)

    return auth_middleware
