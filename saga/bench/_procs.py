"""The processes of a run: started as subprocesses, measured through /proc, stopped by PID."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from saga.errors import ConfigError
from saga.process import wait_for_exit

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_times(pid: int) -> tuple[float, float]:
    """``(user, system)`` CPU seconds of one process so far (zeros once it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0, 0.0
    # The command name (field 2) may hold spaces: split after its closing parenthesis.
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[11]) / _TICK, int(fields[12]) / _TICK


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far (0.0 once it is gone)."""
    return sum(cpu_times(pid))


def peak_rss_mb(pid: int) -> float:
    """Peak resident set size (VmHWM) of one process, in MiB (0.0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def machine_cpu() -> tuple[float, float]:
    """``(busy, total)`` CPU seconds of the whole machine so far (all cores), from /proc/stat."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return 0.0, 0.0
    ticks = [int(x) for x in first[1:9]]  # user nice system idle iowait irq softirq steal
    total = sum(ticks)
    idle = ticks[3] + ticks[4]
    return (total - idle) / _TICK, total / _TICK


INFRASTRUCTURE = {"postgres": "postgres", "java": "kafka"}
"""Process names (``comm``) of the shared servers on this machine -> report name."""


def infrastructure_cpu() -> dict[str, float]:
    """CPU seconds so far of every PostgreSQL and Kafka (java) process on the machine.

    Shared servers: the figures include other users' load, and backends that exited
    between two readings are missed. Read them as an order of magnitude.
    """
    out = dict.fromkeys(INFRASTRUCTURE.values(), 0.0)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            raw = stat.read_text()
        except OSError:
            continue
        name = INFRASTRUCTURE.get(raw[raw.index("(") + 1 : raw.rindex(")")])
        if name is not None:
            fields = raw[raw.rindex(")") + 2 :].split()
            out[name] += (int(fields[11]) + int(fields[12])) / _TICK
    return out


@dataclass
class Worker:
    """One started process."""

    role: str
    """Name in the report, e.g. ``coordinator`` or ``participant:bench1``."""
    proc: subprocess.Popen[bytes]
    log: Path
    """Where its stdout and stderr go."""
    cpu_marks: dict[str, float] = field(default_factory=dict)
    """CPU seconds at named moments (``start``/``end`` of each phase)."""
    kernel_marks: dict[str, float] = field(default_factory=dict)
    """The system (kernel) part of ``cpu_marks``: syscalls, the network stack, page faults."""
    profiler: subprocess.Popen[bytes] | None = None
    stopped: bool = False
    """Whether the harness stopped it (it is not expected to run any more)."""

    @property
    def pid(self) -> int:
        """Its process id."""
        return self.proc.pid

    def mark(self, name: str) -> None:
        """Remember its CPU seconds now under ``name``."""
        user, system = cpu_times(self.pid)
        self.cpu_marks[name] = user + system
        self.kernel_marks[name] = system

    def tail(self, lines: int = 30) -> str:
        """The end of its log (for error messages)."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Workers:
    """Starts worker processes, waits for READY, measures and stops them by PID."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[Worker] = []
        self._files: list[IO[bytes]] = []

    def spawn(self, role: str, argv: list[str], *, env: dict[str, str] | None = None) -> Worker:
        """Start ``argv`` (stdout and stderr to a log file in the work directory)."""
        log = self.workdir / f"{role.replace(':', '-')}.log"
        out = log.open("wb")
        self._files.append(out)
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
        worker = Worker(role=role, proc=proc, log=log)
        self.started.append(worker)
        return worker

    def spawn_role(self, role: str, worker_role: str, config: dict[str, Any]) -> Worker:
        """Start ``python -m saga.bench WORKER_ROLE CONFIG`` as ``role``."""
        argv = [sys.executable, "-m", "saga.bench", worker_role, json.dumps(config)]
        return self.spawn(role, argv)

    async def wait_ready(self, workers: list[Worker], timeout_s: float = 120.0) -> None:
        """Wait until each worker printed READY.

        Raises:
            ConfigError: A worker exited or did not get ready in time (its log is quoted).
        """
        deadline = time.monotonic() + timeout_s
        pending = list(workers)
        while pending:
            for w in list(pending):
                if b"READY" in w.log.read_bytes():
                    pending.remove(w)
                elif w.proc.poll() is not None:
                    raise ConfigError(
                        f"bench process {w.role} exited with {w.proc.returncode}:\n{w.tail()}"
                    )
            if pending and time.monotonic() > deadline:
                raise ConfigError(
                    f"bench process {pending[0].role} not ready:\n{pending[0].tail()}"
                )
            if pending:
                await asyncio.sleep(0.1)

    def check_alive(self) -> None:
        """Raise if a worker died.

        Raises:
            ConfigError: A worker exited (its log is quoted).
        """
        for w in self.started:
            if w.proc.poll() is not None and not w.stopped:
                raise ConfigError(
                    f"bench process {w.role} exited with {w.proc.returncode}:\n{w.tail()}"
                )

    def mark(self, name: str) -> None:
        """Mark every worker's CPU seconds under ``name``."""
        for w in self.started:
            w.mark(name)

    def start_profilers(self, directory: Path, phase: str) -> bool:
        """Attach ``py-spy record`` to every worker; False when py-spy is not installed."""
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(exe).exists():
            return False
        directory.mkdir(parents=True, exist_ok=True)
        for w in self.started:
            out = directory / f"{phase}-{w.role.replace(':', '-')}.txt"
            w.profiler = subprocess.Popen(
                [
                    exe,
                    "record",
                    "--pid",
                    str(w.pid),
                    "--format",
                    "raw",
                    "--rate",
                    "50",
                    "--nonblocking",
                    "-o",
                    str(out),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        return True

    async def stop_profilers(self) -> None:
        """Stop the profilers (SIGINT makes py-spy write its file)."""
        for w in self.started:
            if w.profiler is not None and w.profiler.poll() is None:
                w.profiler.send_signal(signal.SIGINT)
        for w in self.started:
            if w.profiler is not None:
                await wait_for_exit(w.profiler, 20.0)
                w.profiler = None

    async def stop(self, workers: list[Worker] | None = None, timeout_s: float = 20.0) -> None:
        """SIGTERM the workers (all by default), SIGKILL those still running after a while."""
        targets = workers if workers is not None else list(self.started)
        for w in targets:
            w.stopped = True
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        for w in targets:
            if not await wait_for_exit(w.proc, timeout_s):
                w.proc.kill()
                await wait_for_exit(w.proc, 5.0)
            if w.profiler is not None and w.profiler.poll() is None:
                w.profiler.kill()
                await wait_for_exit(w.profiler, 5.0)

    async def close(self) -> None:
        """Stop everything and close the log files."""
        await self.stop()
        for f in self._files:
            f.close()
        self._files.clear()
