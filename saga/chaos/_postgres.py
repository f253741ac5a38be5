"""A PostgreSQL cluster of the chaos run's own, which the monkey SIGKILLs and restarts.

It reuses ``deploy/local/infra.py`` (``pg_up(directory, port)`` and ``pg_down``), so it
needs a source checkout, and it runs durable like the local PostgreSQL (``fsync``,
``synchronous_commit`` and ``full_page_writes`` on). The shared local PostgreSQL (port
15432) is never touched here.

* :meth:`DedicatedPostgres.claim` picks ``<state>/postgres-chaos-<port>`` (``<state>``:
  the directory the local infrastructure keeps its servers in) on the first port from
  25432 that no other run holds (an exclusive lock file) and nothing else listens on;
  ``initdb`` runs the first time, later runs reuse the cluster.
* :meth:`DedicatedPostgres.crash` SIGKILLs the postmaster by the PID in its
  ``postmaster.pid`` (a process this object started), waits until its backends noticed
  and exited (a new postmaster refuses to start while they hold the old shared
  memory), and :meth:`DedicatedPostgres.start` starts it again: crash recovery replays
  the WAL, and every committed transaction is there.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import time
from pathlib import Path
from typing import IO, Final

from saga.chaos._broker import _port_open, _run_infra, load_infra
from saga.errors import ConfigError

FIRST_PORT: Final = 25432
"""The first port :meth:`DedicatedPostgres.claim` tries."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _children(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (from ``/proc``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry.name))
    return found


class DedicatedPostgres:
    """A durable single PostgreSQL cluster of one's own (own directory and port).

    Example::

        pg = DedicatedPostgres.claim()
        await pg.start()
        await pg.crash()        # SIGKILL the postmaster; its backends exit
        await pg.start()        # crash recovery, same data
        await pg.stop()
    """

    def __init__(self, directory: Path, *, port: int) -> None:
        """Describe the cluster; nothing runs until :meth:`start`.

        Args:
            directory: Holds ``data/``, ``server.log`` and the socket.
            port: Its port on 127.0.0.1.
        """
        self.directory = directory
        self.port = port
        self._lock: IO[bytes] | None = None
        self._started = False

    @classmethod
    def claim(cls, first_port: int = FIRST_PORT, *, tries: int = 20) -> DedicatedPostgres:
        """A cluster under the local state directory on the first free port from ``first_port``.

        The port is held (a lock file beside the directory) until :meth:`stop`, so two
        runs on one machine never share a cluster.

        Raises:
            ConfigError: No free port among ``tries`` ports.
        """
        state = Path(load_infra().STATE)
        state.mkdir(parents=True, exist_ok=True)
        for port in range(first_port, first_port + tries):
            directory = state / f"postgres-chaos-{port}"
            lock = (state / f"postgres-chaos-{port}.lock").open("ab")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                lock.close()
                continue
            pg = cls(directory, port=port)
            # A postmaster left by an earlier run of ours is reused; anything else on
            # the port belongs to someone else.
            if _port_open(port) and pg.pid is None:
                lock.close()
                continue
            pg._lock = lock
            return pg
        raise ConfigError(f"no free port for a dedicated PostgreSQL in {first_port}+{tries}")

    @property
    def url(self) -> str:
        """``postgresql+asyncpg://saga@127.0.0.1:<port>/saga``."""
        return f"postgresql+asyncpg://saga@127.0.0.1:{self.port}/saga"

    @property
    def pid(self) -> int | None:
        """PID of the postmaster while it runs (first line of ``postmaster.pid``)."""
        try:
            pid = int((self.directory / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if _alive(pid) else None

    async def start(self, *, timeout_s: float = 120.0) -> None:
        """Start the cluster (``initdb`` the first time) and wait until it serves.

        Right after :meth:`crash` a start may be refused while the old backends still
        exit; it is retried until ``timeout_s``.

        Raises:
            ConfigError: It did not start in time (the last error, with the log's path).
        """
        deadline = time.monotonic() + timeout_s
        code = f"print(infra.pg_up({str(self.directory)!r}, {self.port}))"
        while True:
            try:
                await _run_infra(code, max(5.0, deadline - time.monotonic()))
            except (ConfigError, TimeoutError) as exc:
                if time.monotonic() > deadline:
                    raise ConfigError(
                        f"the dedicated PostgreSQL did not start: {exc}; "
                        f"read {self.directory}/server.log"
                    ) from exc
                await asyncio.sleep(1.0)
                continue
            self._started = True
            return

    async def crash(self, *, timeout_s: float = 30.0) -> int | None:
        """SIGKILL the postmaster; return its PID (``None`` if it was not running).

        Waits until the postmaster and the processes it had started are gone (they
        notice their parent's death and exit by themselves; they are not signalled).
        """
        pid = self.pid
        if pid is None or not self._started:
            return None
        children = _children(pid)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout_s
        while any(_alive(p) for p in [pid, *children]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"PostgreSQL processes {children} outlived the postmaster")
            await asyncio.sleep(0.05)
        # Until its new parent reaps it, the dead postmaster's PID still answers
        # kill(pid, 0), and a new postmaster takes the lock file for a live one.
        for _ in range(200):  # 10 s; the start retries after that anyway
            if not _exists(pid):
                break
            await asyncio.sleep(0.05)
        return pid

    async def stop(self, *, timeout_s: float = 120.0) -> None:
        """Stop the cluster (``pg_ctl stop -m fast``) and release the port."""
        try:
            if self._started or self.pid is not None:
                await _run_infra(f"infra.pg_down({str(self.directory)!r})", timeout_s)
        finally:
            self._started = False
            if self._lock is not None:
                with contextlib.suppress(OSError):
                    self._lock.close()
                self._lock = None
