"""Wake relays on PostgreSQL ``NOTIFY`` of their outbox channel (LISTEN on a dedicated connection).

Notifications are only a hint: the relay also polls (``fallback_poll_ms``), so a
notification lost while this connection was down delays rows, never strands them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import URL

from saga.errors import StoreUnavailable
from saga.retry import Backoff
from saga.store import NOTIFY_CHANNEL

log = logging.getLogger("saga.relay")

_LISTEN_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


@contextmanager
def _translate(operation: str) -> Iterator[None]:
    try:
        yield
    except _LISTEN_ERRORS as exc:
        raise StoreUnavailable(f"{operation}: {type(exc).__name__}: {exc}") from exc


def asyncpg_dsn(url: URL) -> str:
    """A DSN asyncpg understands, from a SQLAlchemy ``postgresql+asyncpg`` URL."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class Notifier:
    """Keeps a LISTEN connection open (reconnecting with back-off) and calls ``on_notify``.

    ``on_notify`` gets each notification's payload (the lane written), and ``""`` after
    every (re)connect: rows written while nobody listened were never announced.
    """

    def __init__(
        self,
        dsn: str,
        on_notify: Callable[[str], None],
        *,
        resolve_channel: Callable[[], Awaitable[str]],
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
    ) -> None:
        self._dsn = dsn
        self._notify = on_notify
        self._channel = f"{NOTIFY_CHANNEL}.*"  # for messages until the name is resolved
        self._resolve = resolve_channel
        self._backoff = Backoff(backoff_initial_s, backoff_max_s)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self._notify(payload)

    async def run(self) -> None:
        """Listen until cancelled."""
        while True:
            try:
                await self._listen_once()
            except StoreUnavailable as exc:
                delay = self._backoff.next_delay()
                log.warning("LISTEN %s failed, retrying in %.1fs: %s", self._channel, delay, exc)
                await asyncio.sleep(delay)
            else:
                self._backoff.reset()

    async def _listen_once(self) -> None:
        self._channel = await self._resolve()  # inside the retry loop: the database may be down
        closed = asyncio.Event()
        with _translate(f"LISTEN {self._channel}"):
            conn = await asyncpg.connect(self._dsn, timeout=10)
        try:
            conn.add_termination_listener(lambda _conn: closed.set())
            with _translate(f"LISTEN {self._channel}"):
                await conn.add_listener(self._channel, self._on_notify)
            # Rows written while we were not listening were never announced.
            self._notify("")
            log.debug("listening on %s", self._channel)
            await closed.wait()
            log.warning("the LISTEN connection was closed; reconnecting")
        finally:
            if not conn.is_closed():
                conn.terminate()
