"""A tiny TCP proxy that can make a server unavailable for a while (outage tests).

Put it between a process and PostgreSQL: point the process at ``127.0.0.1:<proxy.port>``;
:meth:`TcpProxy.cut` drops every open connection and refuses new ones (they are
accepted and closed at once, like a server that is down), :meth:`TcpProxy.restore`
lets connections through again.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum

from saga.lifecycle import AsyncResource


class State(enum.Enum):
    """Lifecycle of a :class:`TcpProxy`."""

    UNOPENED = "unopened"
    RUNNING = "running"
    DRAINING = "draining"
    CLOSED = "closed"


class TcpProxy(AsyncResource):
    """Forward ``127.0.0.1:<port>`` to ``target_host:target_port``; an async context manager."""

    def __init__(self, target_host: str, target_port: int, *, listen_port: int = 0) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self._listen_port = listen_port
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._up = True
        self._state = State.UNOPENED
        self.connections = 0
        """Connections forwarded so far."""
        self.refused = 0
        """Connections refused while cut."""

    @property
    def port(self) -> int:
        """The port the proxy listens on."""
        if self._server is None:
            raise RuntimeError("the proxy is not running")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def up(self) -> bool:
        """Whether connections go through."""
        return self._up

    async def _open(self) -> None:
        if self._state is not State.UNOPENED:
            raise RuntimeError(f"the proxy cannot be opened: it is {self._state.value}")
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self._listen_port)
        self._state = State.RUNNING

    async def _close(self, exc: BaseException | None) -> None:
        self._state = State.DRAINING
        if self._server is not None:
            self._server.close()
        self._drop_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        self._state = State.CLOSED

    def cut(self) -> None:
        """Drop every open connection and refuse new ones until :meth:`restore`."""
        self._up = False
        self._drop_all()

    def restore(self) -> None:
        """Let connections through again."""
        self._up = True

    def _drop_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._up or self._state is not State.RUNNING:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._writers.update((writer, up_writer))
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(_pipe(reader, up_writer))
                tg.create_task(_pipe(up_reader, writer))
        except* (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            writer.transport.abort()
