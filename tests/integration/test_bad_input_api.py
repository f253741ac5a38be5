"""The HTTP API under schemathesis, against its own OpenAPI document: never a 5xx.

The API runs in a thread of its own (aiohttp ``TestServer`` on 127.0.0.1, SQLite store
with a few sagas in it); schemathesis generates requests from ``openapi_document()``,
valid and invalid, and every answer must be below 500 and, for documented operations,
match the documented status codes and schemas where schemathesis can tell.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import schemathesis
from _api_helpers import DEFINITIONS
from hypothesis import HealthCheck, settings

from saga.api import create_app, openapi_document
from saga.coordinator import DefinitionCache, start_saga
from saga.store import SqlStore, create_engine, upgrade
from saga.topics import Topics

schema = schemathesis.openapi.from_dict(openapi_document())


class ApiThread:
    """Serve the API from a thread with its own event loop until :meth:`close`."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.url = ""
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def __enter__(self) -> ApiThread:
        self._thread.start()
        if not self._ready.wait(60) or self._error is not None:
            raise RuntimeError(f"the API did not start: {self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except Exception as exc:  # reported to the test thread
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        from aiohttp.test_utils import TestServer

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        engine = create_engine(f"sqlite+aiosqlite:///{self.db}")
        try:
            await upgrade(engine)
            store = SqlStore(engine)
            definitions = DefinitionCache(store)
            await definitions.register(DEFINITIONS)
            topics = Topics(prefix="schemathesis.")
            await store.register_partitions(topics.coordinator_group, topics.replies, 3)
            for n in range(3):
                await start_saga(
                    store,
                    definitions,
                    topics,
                    "booking",
                    {"order_id": f"o-{n}"},
                    now=datetime.now(UTC),
                )
            server = TestServer(create_app(store, definitions, topics), host="127.0.0.1")
            async with server:
                self.url = str(server.make_url("")).rstrip("/")
                self._ready.set()
                await self._stop.wait()
        finally:
            await engine.dispose()


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with ApiThread(tmp_path_factory.mktemp("api") / "saga.db") as api:
        yield api.url


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_no_request_makes_the_api_fail_with_a_server_error(
    case: schemathesis.Case, api_url: str
) -> None:
    response = case.call(base_url=api_url, timeout=10)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    )
