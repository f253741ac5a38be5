"""Processes of the integration tests: a ``saga coordinator`` child, and stopping one."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def spawn_coordinator(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``saga coordinator`` with ``env``; its output is appended to ``log``."""
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "saga.cli", "coordinator"],
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
