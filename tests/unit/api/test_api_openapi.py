from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from openapi_spec_validator import validate

from saga.api import ROUTES, create_app, openapi_document
from saga.coordinator import DefinitionCache
from saga.store import SqlStore, create_engine
from saga.topics import Topics


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[web.Application]:
    # The app is only inspected, never served: the database is never opened.
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}")
    try:
        store = SqlStore(engine)
        yield create_app(store, DefinitionCache(store), Topics())
    finally:
        await engine.dispose()


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = openapi_document()
    assert doc["openapi"] == "3.1.0"
    validate(doc)


def test_every_schema_reference_resolves() -> None:
    doc = openapi_document()
    refs = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', str(doc).replace("'", '"')))
    assert refs
    assert refs <= set(doc["components"]["schemas"])


def test_the_document_describes_exactly_the_registered_routes(app: web.Application) -> None:
    registered = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD"
        and route.resource is not None
        # The operator console's pages are HTML for browsers, not part of the REST API.
        and not route.resource.canonical.startswith("/ui")
    }
    doc = openapi_document()
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    assert registered == documented
    assert registered == {(r.method, r.path) for r in ROUTES}


def test_public_routes_are_exactly_the_unsecured_ones() -> None:
    doc = openapi_document()
    for route in ROUTES:
        op = doc["paths"][route.path][route.method.lower()]
        assert (op["security"] == []) == (route.role is None), route.path


def test_the_document_is_a_fresh_copy() -> None:
    doc = openapi_document()
    doc["paths"].clear()
    assert openapi_document()["paths"]
