"""The console's pages over HTTP on both databases (SQLite and PostgreSQL): filters that
use the saga input, counts, the sagas that need attention, sessions, roles and CSRF."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from _console_seed import seed
from aiohttp.test_utils import TestClient, TestServer

from saga.api import ApiConfig, Principal, Role, create_app
from saga.console import CONSOLE, _data
from saga.coordinator import DefinitionCache
from saga.ids import short_id
from saga.store import SqlStore, create_engine, upgrade
from saga.topics import Topics

pytestmark = [pytest.mark.postgres]

TOKENS = {
    "op-token": Principal(name="otto", role=Role.OPERATOR),
    "view-token": Principal(name="vera", role=Role.VIEWER),
}


@pytest.fixture
async def world(database_url: str, topic_prefix: str) -> AsyncIterator[tuple[Any, dict[str, Any]]]:
    engine = create_engine(database_url)
    try:
        await upgrade(engine)
        store = SqlStore(engine)
        topics = Topics(prefix=topic_prefix)
        ids = await seed(store, topics)
        app = create_app(store, DefinitionCache(store), topics, ApiConfig(tokens=TOKENS))
        async with TestClient(TestServer(app)) as client:
            yield client, ids
    finally:
        await engine.dispose()


async def _sign_in(client: TestClient[Any, Any], token: str) -> str:
    resp = await client.post(
        "/ui/sign-in", data={"token": token, "next": "/ui/sagas"}, allow_redirects=False
    )
    assert resp.status == 303, await resp.text()
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Path=/ui/" in cookie
    assert token not in cookie
    page = await (await client.get("/ui/sagas")).text()
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found
    return found[1]


def _rows(page: str) -> list[str]:
    return re.findall(r'<tr data-saga="([0-9a-f-]+)"', page)


async def test_filters_counts_and_id_search(world: tuple[Any, dict[str, Any]]) -> None:
    client, ids = world
    await _sign_in(client, "view-token")
    page = await (await client.get("/ui/sagas")).text()
    assert set(_rows(page)) == set(ids.values())
    assert 'data-status="stuck">stuck <b>2</b>' in page

    by_key = await (await client.get("/ui/sagas?key=order_id%3Dorder-compensated")).text()
    assert _rows(by_key) == [ids["compensated"]]
    typed = await (await client.get("/ui/sagas?type=booking&version=1&status=stuck")).text()
    assert set(_rows(typed)) == {ids["stuck"], ids["stuck2"]}
    assert _rows(await (await client.get("/ui/sagas?version=2")).text()) == []
    assert _rows(await (await client.get("/ui/sagas?from=2999-01-01")).text()) == []

    first = await (await client.get("/ui/sagas?status=running")).text()
    assert len(_rows(first)) == 3

    found = await client.get(f"/ui/sagas?q={short_id(ids['aborted'])}", allow_redirects=False)
    assert found.status == 303
    assert found.headers["Location"] == f"/ui/sagas/{ids['aborted']}"
    bad = await (await client.get("/ui/sagas?version=x&from=soon&key=nokey")).text()
    assert "version must be a number" in bad
    assert "not a date/time" in bad
    assert "field=value" in bad


async def test_pages_by_cursor(world: tuple[Any, dict[str, Any]]) -> None:
    client, ids = world
    await _sign_in(client, "view-token")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        listing = await _data.list_sagas(
            client.app[CONSOLE].store, _data.SagaFilter(), limit=4, cursor=cursor
        )
        seen += [r.saga_id for r in listing.rows]
        pages += 1
        if listing.next_cursor is None:
            break
        cursor = listing.next_cursor
    assert pages == 3
    assert sorted(seen) == sorted(ids.values())
    page = await (await client.get("/ui/sagas")).text()
    assert 'rel="next"' not in page  # 25 per page: one page here


async def test_attention_lists_stuck_and_paused_work(world: tuple[Any, dict[str, Any]]) -> None:
    client, ids = world
    await _sign_in(client, "op-token")
    page = await (await client.get("/ui/attention")).text()
    assert {ids["stuck"], ids["stuck2"], ids["deferred"]} <= set(_rows(page))
    assert "waits for paused payments" in page
    assert f'href="/ui/sagas/{ids["stuck"]}/actions/retry-compensation?step=reserve"' in page
    dry = await (await client.get(f"/ui/sagas/{ids['stuck']}/actions/abort")).text()
    assert 'data-outcome="applied"' in dry
    refused = await (await client.get(f"/ui/sagas/{ids['completed']}/actions/abort")).text()
    assert 'data-outcome="rejected"' in refused


async def test_sessions_roles_and_csrf(world: tuple[Any, dict[str, Any]]) -> None:
    client, ids = world
    resp = await client.get("/ui/attention", allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == "/ui/sign-in?next=/ui/attention"
    wrong = await client.post("/ui/sign-in", data={"token": "nope"})
    assert wrong.status == 401
    # A bearer token in the URL signs nobody in.
    assert (await client.get("/ui/sagas?token=op-token", allow_redirects=False)).status == 303

    csrf = await _sign_in(client, "view-token")
    target = f"/ui/sagas/{ids['stuck']}/actions/mark-compensated"
    forged = await client.post(target, data={"csrf": csrf, "reason": "viewer"})
    assert forged.status == 403
    assert "this needs the operator role" in await forged.text()

    csrf = await _sign_in(client, "op-token")
    assert (await client.post(target, data={"reason": "no csrf"})).status == 403
    empty = await client.post(target, data={"csrf": csrf, "reason": " "})
    assert empty.status == 422
    sent = await client.post(
        target, data={"csrf": csrf, "reason": "undone by hand"}, allow_redirects=False
    )
    assert sent.status == 303
    api = await client.get(
        f"/v1/sagas/{ids['stuck']}", headers={"Authorization": "Bearer op-token"}
    )
    detail = await api.json()
    [asked] = [r for r in detail["timeline"] if r["detail"].get("verb") == "mark_compensated"]
    assert asked["actor"] == "otto"
    assert asked["detail"]["reason"] == "undone by hand"

    page = await client.get(f"/ui/sagas/{ids['stuck']}")
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    out = await client.post("/ui/sign-out", data={"csrf": csrf}, allow_redirects=False)
    assert out.status == 303
    assert (await client.get("/ui/sagas", allow_redirects=False)).status == 303


async def test_assets_are_served_from_the_package(world: tuple[Any, dict[str, Any]]) -> None:
    client, _ = world
    for path in ("/ui/static/htmx.min.js", "/ui/static/console.css", "/ui/static/htmx.LICENSE"):
        resp = await client.get(path)
        assert resp.status == 200, path
    await _sign_in(client, "view-token")
    page = await (await client.get("/ui/overview")).text()
    assert not re.search(r'(src|href)="https?://', page), "nothing from elsewhere"
    # The breakers as the coordinators reported them to the database.
    assert re.search(r'data-participant="payments" data-state="open"', page)
    assert re.search(r'data-participant="inventory" data-state="closed"', page)
    assert "host-a:4242:5e1f0c2a" in page
