"""Processes of the integration tests: ``saga coordinator`` and ``saga relay`` children, and
stopping one."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def spawn_coordinator(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``saga coordinator`` with ``env``; its output is appended to ``log``."""
    return spawn_saga("coordinator", env, log)


def spawn_saga(command: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``saga <command>`` with ``env``; its output is appended to ``log``."""
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "saga.cli", command],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(proc: subprocess.Popen[bytes], grace_s: float = 30) -> None:
    """SIGTERM ``proc`` if it still runs; SIGKILL it after ``grace_s`` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
