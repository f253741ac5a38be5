"""``saga coordinator`` started while its database is down: alive, not ready, stoppable."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from _processes import spawn_coordinator, stop

from saga.chaos import free_port


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def readiness_when_up(url: str, limit_s: float) -> tuple[int, Any]:
    end = time.monotonic() + limit_s
    while True:
        try:
            return get(url)
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > end:
                raise
            time.sleep(0.2)


def test_a_coordinator_started_without_its_database_waits_for_it(tmp_path: Path) -> None:
    # Nothing listens on the database's port: the process must stay up, answer its
    # liveness probe, say on /readyz what it waits for, and end at once on SIGTERM.
    health = free_port()
    env = {
        **os.environ,
        "SAGA_DATABASE_URL": f"postgresql+asyncpg://saga@127.0.0.1:{free_port()}/saga",
        "SAGA_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "SAGA_HEALTH_HOST": "127.0.0.1",
        "SAGA_HEALTH_PORT": str(health),
    }
    log = tmp_path / "coordinator.log"
    proc = spawn_coordinator(env, log)
    try:
        status, body = readiness_when_up(f"http://127.0.0.1:{health}/readyz", 60)
        end = time.monotonic() + 30
        while (
            not body.get("reason", "").startswith("starting: database") and time.monotonic() < end
        ):
            time.sleep(0.2)
            status, body = get(f"http://127.0.0.1:{health}/readyz")
        assert status == 503, body
        assert body["reason"].startswith("starting: database unavailable (attempt"), body
        assert "ConnectionRefusedError" in body["reason"], body
        assert get(f"http://127.0.0.1:{health}/healthz") == (200, {"status": "ok"})
        assert proc.poll() is None, log.read_text()
        started = time.monotonic()
        stop(proc)
        assert time.monotonic() - started < 10, "SIGTERM did not end the wait"
    finally:
        stop(proc)
    output = log.read_text()
    assert proc.returncode == 1, output
    assert "coordinator start-up: database unavailable (attempt 1)" in output
    assert "stopped while waiting for the database" in output
    assert "What to do: check that the database of SAGA_DATABASE_URL runs" in output
