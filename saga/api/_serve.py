"""Serve the API until asked to stop (used by ``saga api``; a coordinator may host it too)."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from saga.access import ApiConfig, check_bind

log = logging.getLogger("saga.api")


async def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    config: ApiConfig,
    stop: asyncio.Event,
) -> None:
    """Serve ``app`` on ``host:port`` until ``stop`` is set, then shut down cleanly.

    Raises:
        saga.errors.ConfigError: ``host`` is reachable from other machines and no token
            is configured.
    """
    check_bind(host, config)
    runner = web.AppRunner(app, access_log=log)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        if config.auth_enabled:
            log.info("API listening on http://%s:%d (%d token(s))", host, port, len(config.tokens))
        else:
            log.warning(
                "API listening on http://%s:%d WITHOUT authentication (loopback only); "
                "set SAGA_API_TOKENS to require bearer tokens",
                host,
                port,
            )
        await stop.wait()
    finally:
        await runner.cleanup()
