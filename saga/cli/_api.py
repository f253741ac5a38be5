"""``saga api``: serve the HTTP API until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal

import click

from saga.cli._common import configure_logging, fail, load_definitions, settings
from saga.errors import SagaError


@click.command("api")
@click.option("--host", default=None, help="Bind address (default SAGA_API_HOST, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default SAGA_API_PORT, 8080).")
@click.option("--no-migrate", is_flag=True, help="Do not bring the database schema up to date.")
def api(host: str | None, port: int | None, no_migrate: bool) -> None:
    """Serve the HTTP API (start, inspect and operate sagas; /healthz, /readyz, /openapi.json).

    Bearer tokens come from SAGA_API_TOKENS (token:role:name,...; roles viewer and
    operator). Without tokens the API has no authentication and only binds to loopback.
    """
    from saga.api import ApiConfig, check_bind, create_app, parse_tokens, serve
    from saga.coordinator import DefinitionCache
    from saga.store import SqlStore, create_engine, upgrade
    from saga.telemetry import runtime_probe, setup

    s = settings()
    configure_logging(s.log_level)
    bind_host = host or s.api_host
    bind_port = port if port is not None else s.api_port
    try:
        config = ApiConfig(
            tokens=parse_tokens(s.api_tokens),
            kafka_bootstrap_servers=s.kafka_bootstrap_servers,
        )
        check_bind(bind_host, config)
        definitions = load_definitions(s.definitions)
        telemetry = setup(s, service_name="saga-api")
    except SagaError as exc:
        fail(exc)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        engine = create_engine(s.database_url, pool_pre_ping=True)
        try:
            if not no_migrate:
                await upgrade(engine)
            store = SqlStore(engine)
            cache = DefinitionCache(store)
            await cache.register(definitions)
            app = create_app(store, cache, s.topics, config, telemetry=telemetry)
            telemetry.add_probe(runtime_probe(store, lambda: None))  # outbox gauges
            await serve(app, host=bind_host, port=bind_port, config=config, stop=stop)
        finally:
            await engine.dispose()

    try:
        asyncio.run(main())
    except SagaError as exc:
        fail(exc)
    finally:
        telemetry.close()
