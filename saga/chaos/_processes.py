"""OS processes the chaos controller starts, kills and restarts, always by PID.

Each :class:`ManagedProcess` remembers the one process it started (a fresh one after
each restart) and only ever signals that PID. Output goes to a log file per process,
appended across restarts with a marker line, so a failed run can be read afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from saga.process import wait_for_exit


class ManagedProcess:
    """One restartable OS process (coordinator, relay, participants, ...)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        log_path: Path,
        cwd: Path | None = None,
    ) -> None:
        """Describe the process; nothing runs until :meth:`start`.

        Args:
            name: Short name for progress lines and the log marker.
            argv: The command line.
            env: The complete environment of the process.
            log_path: File that receives stdout and stderr (appended).
            cwd: Working directory.
        """
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.cwd = cwd
        self.starts = 0
        self.kills = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """PID of the running process, if any."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def alive(self) -> bool:
        """Whether the process this object started is still running."""
        return self.pid is not None

    @property
    def returncode(self) -> int | None:
        """Exit status of the last process (``None`` while it runs or before the start)."""
        return None if self._proc is None else self._proc.poll()

    def start(self) -> int:
        """Start the process (it must not be running); return its PID."""
        if self.alive:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n==== {time.strftime('%H:%M:%S')} start #{self.starts + 1}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.starts += 1
        return self._proc.pid

    async def kill(self) -> None:
        """SIGKILL the process (if it runs) and reap it."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGKILL)
        self.kills += 1
        await wait_for_exit(proc, 30.0)

    async def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the process, wait up to ``grace_s`` seconds, then SIGKILL it."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        if not await wait_for_exit(proc, grace_s):
            os.kill(proc.pid, signal.SIGKILL)
            await wait_for_exit(proc, 30.0)

    def stop_now(self) -> None:
        """Synchronous last resort for clean-up paths: SIGKILL by PID and reap."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the process's log."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""
