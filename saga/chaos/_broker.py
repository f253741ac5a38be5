"""Kafka brokers the chaos suite may stop: the local 3-broker cluster and a dedicated broker.

Both reuse ``deploy/local/infra.py`` (the repository's local-infrastructure script), so
they need a source checkout. The shared single-node broker on port 19092 is never
touched here.

* :func:`ensure_cluster` starts the 3-broker cluster (127.0.0.1:29092,29192,29292) when
  it is not running; :func:`restart_broker` SIGKILLs one node by the PID in its pid
  file, waits, and starts it again with the same command line (``infra.kafka_up``
  restarts only nodes that are down, then waits until the cluster serves).
* :class:`DedicatedBroker` is a single-node KRaft broker on ports of its own, in a
  directory of its own, for tests that make *the* broker unavailable for a while.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Final

from saga.errors import ConfigError
from saga.process import wait_for_exit

ROOT: Final = Path(__file__).resolve().parents[2]
INFRA: Final = ROOT / "deploy" / "local" / "infra.py"
PROBE: Final = ROOT / "deploy" / "local" / "probe_kafka.py"


def _require_infra() -> None:
    if not INFRA.exists():
        raise ConfigError(f"{INFRA} is missing: broker faults need a source checkout")


def load_infra() -> ModuleType:
    """Import ``deploy/local/infra.py`` as a module."""
    _require_infra()
    spec = importlib.util.spec_from_file_location("saga_local_infra", INFRA)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cluster_pidfiles(brokers: int = 3) -> list[Path]:
    """The pid files of the cluster's nodes (node 1 first)."""
    infra = load_infra()
    cdir: Path = infra.kafka_cluster_dir(brokers)
    return [cdir / f"node{i}" / "kafka.pid" for i in range(1, brokers + 1)]


def cluster_running(brokers: int = 3) -> bool:
    """Whether every node of the cluster has a live PID."""
    infra = load_infra()
    return all(infra.pid_alive(p) for p in cluster_pidfiles(brokers))


async def _run_infra(code: str, timeout_s: float) -> str:
    _require_infra()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        f"import sys; sys.path.insert(0, {str(INFRA.parent)!r}); import infra; {code}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise ConfigError(f"deploy/local/infra.py failed: {err.decode(errors='replace')[-2000:]}")
    return out.decode().strip()


async def ensure_cluster(brokers: int = 3, *, fresh: bool = False, timeout_s: float = 240.0) -> str:
    """Start the local cluster's nodes that are down; return its bootstrap servers.

    ``fresh``: when no node runs, start from empty storage (topics of earlier runs go).
    """
    return await _run_infra(f"print(infra.kafka_up({brokers}, fresh={fresh!r}))", timeout_s)


async def stop_cluster(brokers: int = 3, *, timeout_s: float = 120.0) -> None:
    """Stop the local cluster (every node, by the PIDs in its pid files)."""
    await _run_infra(f"infra.kafka_down({brokers})", timeout_s)


async def restart_broker(node: int, *, down_s: float = 2.0, brokers: int = 3) -> str:
    """SIGKILL cluster node ``node`` (1-based), wait ``down_s``, start it again.

    Returns the bootstrap servers once the cluster serves again.
    """
    infra = load_infra()
    pidfile = cluster_pidfiles(brokers)[node - 1]
    pid = infra.pid_alive(pidfile)
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
        for _ in range(200):
            if infra.pid_alive(pidfile) is None:
                break
            await asyncio.sleep(0.05)
    await asyncio.sleep(down_s)
    return await ensure_cluster(brokers)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _bindable(port: int) -> bool:
    """Whether a server could listen on ``port`` of 127.0.0.1 now."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ephemeral_ports() -> range:
    """The ports the kernel hands out to outgoing connections (Linux; its default else)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)


def free_port_pair(first: int = 20_000, last: int = 32_000) -> int:
    """A port ``p`` such that ``p`` and ``p + 1`` on 127.0.0.1 are free now.

    Chosen outside the kernel's ephemeral range: a port picked inside it can be taken at
    any moment by the local end of an outgoing connection (a database pool, a Kafka
    client), and then the broker fails to bind ("Address already in use").

    Raises:
        ConfigError: No such pair between ``first`` and ``last``.
    """
    return _free_ports(2, first, last)


def free_port(first: int = 32_000, last: int = 32_768) -> int:
    """A port on 127.0.0.1 that is free now, outside the ephemeral range (a test server's).

    Unlike binding port 0, which hands out a port inside the ephemeral range, the port
    stays free until the server binds it (see :func:`free_port_pair`).

    Raises:
        ConfigError: No free port between ``first`` and ``last``.
    """
    return _free_ports(1, first, last)


def _free_ports(count: int, first: int, last: int) -> int:
    """The first of ``count`` ports in a row that are free now, outside the ephemeral range."""
    ephemeral = _ephemeral_ports()
    candidates = [
        p
        for p in range(first, last - count + 1, count)
        if not any(q in ephemeral for q in range(p, p + count))
    ]
    random.shuffle(candidates)
    for port in candidates:
        if all(_bindable(q) for q in range(port, port + count)):
            return port
    what = {1: "free port", 2: "two free ports in a row"}.get(count, f"{count} free ports")
    raise ConfigError(
        f"no {what} between {first} and {last} outside the ephemeral range"
        f" {ephemeral.start}-{ephemeral.stop - 1}; stop a server or widen the range"
    )


class DedicatedBroker:
    """A single-node KRaft broker of one's own (own directory and ports).

    Example::

        broker = DedicatedBroker.on_free_ports(tmp_path / "kafka")
        await broker.start()
        await broker.kill()      # unavailable
        await broker.start()     # back, same data
        await broker.stop()
    """

    def __init__(self, directory: Path, *, port: int, controller_port: int) -> None:
        self.directory = directory
        self.port = port
        self.controller_port = controller_port
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def on_free_ports(cls, directory: Path) -> DedicatedBroker:
        """A broker on two ports that are free now (see :func:`free_port_pair`)."""
        port = free_port_pair()
        return cls(directory, port=port, controller_port=port + 1)

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """PID of the broker while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    async def start(self, *, timeout_s: float = 180.0) -> None:
        """Start the broker (formatting its storage the first time) and wait until it serves."""
        if self.pid is not None:
            raise RuntimeError(f"broker already running (pid {self.pid})")
        for p in (self.port, self.controller_port):
            if _port_open(p):
                raise ConfigError(f"port {p} on 127.0.0.1 is taken by another process")
        infra = load_infra()
        java = _which("java")
        classpath: str = await asyncio.to_thread(infra.kafka_classpath)
        data = self.directory / "data"
        logs = self.directory / "logs"
        data.mkdir(parents=True, exist_ok=True)
        logs.mkdir(parents=True, exist_ok=True)
        props = self.directory / "server.properties"
        props.write_text(infra.kafka_props(1, [(self.port, self.controller_port)], data))
        jvm: list[str] = infra.jvm_opts(self.directory)
        if not (data / "meta.properties").exists():
            cluster_id = "saga-chaos-" + os.urandom(4).hex()
            fmt = [java, *jvm, "-cp", classpath, "kafka.tools.StorageTool", "format"]
            fmt += ["--standalone", "-t", cluster_id, "-c", str(props)]
            res = await asyncio.to_thread(subprocess.run, fmt, capture_output=True, text=True)
            if res.returncode != 0:
                raise ConfigError(f"formatting the broker storage failed: {res.stderr[-2000:]}")
        self._spawn([java, *jvm, "-cp", classpath, "kafka.Kafka", str(props)], logs)
        await self._wait_ready(timeout_s)

    def _spawn(self, argv: list[str], logs: Path) -> None:
        with (logs / "console.log").open("ab") as log:
            self._proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    async def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not _port_open(self.port):
            if self.pid is None:
                raise ConfigError(f"the broker exited; read {self.directory}/logs/")
            if time.monotonic() > deadline:
                raise TimeoutError("the dedicated broker did not listen in time")
            await asyncio.sleep(0.25)
        while True:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(PROBE),
                self.bootstrap_servers,
                "1",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            if await proc.wait() == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError("the dedicated broker did not serve in time")
            await asyncio.sleep(0.5)

    async def kill(self) -> None:
        """SIGKILL the broker (an outage) and reap it."""
        await self._signal(signal.SIGKILL)

    async def stop(self) -> None:
        """SIGTERM the broker, then SIGKILL it if it does not exit within 30 s."""
        if not await self._signal(signal.SIGTERM, 30.0):
            await self._signal(signal.SIGKILL)

    def stop_now(self) -> None:
        """Synchronous clean-up: SIGKILL by PID and reap."""
        if self._proc is not None and self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGKILL)
            self._proc.wait(30)

    async def _signal(self, sig: int, timeout_s: float = 30.0) -> bool:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return True
        os.kill(proc.pid, sig)
        return await wait_for_exit(proc, timeout_s)


def _which(name: str) -> str:
    found = shutil.which(name)
    if not found:
        raise ConfigError(f"{name} is needed to run a Kafka broker")
    return found
