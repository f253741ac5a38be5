"""``saga coordinator`` and ``saga relay`` as processes: alive and not ready while what
they need is down, stoppable then, ready once they joined their group."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from _processes import spawn_coordinator, spawn_saga, stop

from saga.chaos import free_port
from saga.kafka import TopicSpec, ensure_topics
from saga.store import create_engine, upgrade
from saga.topics import Topics


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


def health_env(health: int, *, database_url: str, bootstrap: str) -> dict[str, str]:
    """The environment of a process with its health endpoints on ``health``."""
    return {
        **os.environ,
        "SAGA_DATABASE_URL": database_url,
        "SAGA_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SAGA_HEALTH_HOST": "127.0.0.1",
        "SAGA_HEALTH_PORT": str(health),
    }


def wait_for_reason(url: str, prefix: str, limit_s: float) -> tuple[int, Any]:
    status, body = readiness_when_up(url, limit_s)
    end = time.monotonic() + limit_s
    while not body.get("reason", "").startswith(prefix) and time.monotonic() < end:
        time.sleep(0.2)
        status, body = get(url)
    return status, body


def waits_until_stopped(
    proc: subprocess.Popen[bytes], health: int, log: Path, unavailable: str
) -> tuple[str, str]:
    """Check that ``proc`` is alive and not ready while ``unavailable`` (``"database"``,
    ``"Kafka"``) is down, then that SIGTERM ends its wait at once.

    Returns:
        The reason ``/readyz`` gave, and the process's output.
    """
    try:
        url = f"http://127.0.0.1:{health}/readyz"
        status, body = wait_for_reason(url, f"starting: {unavailable}", 60)
        assert status == 503, body
        assert body["reason"].startswith(f"starting: {unavailable} unavailable (attempt"), body
        assert get(f"http://127.0.0.1:{health}/healthz") == (200, {"status": "ok"})
        assert proc.poll() is None, log.read_text()
        started = time.monotonic()
        stop(proc)
        assert time.monotonic() - started < 10, "SIGTERM did not end the wait"
    finally:
        stop(proc)
    output = log.read_text()
    assert proc.returncode == 1, output
    return str(body["reason"]), output


def test_a_coordinator_started_without_its_database_waits_for_it(tmp_path: Path) -> None:
    # Nothing listens on the database's port: the process must stay up, answer its
    # liveness probe, say on /readyz what it waits for, and end at once on SIGTERM.
    health = free_port()
    env = health_env(
        health,
        database_url=f"postgresql+asyncpg://saga@127.0.0.1:{free_port()}/saga",
        bootstrap=f"127.0.0.1:{free_port()}",
    )
    log = tmp_path / "coordinator.log"
    reason, output = waits_until_stopped(spawn_coordinator(env, log), health, log, "database")
    assert "ConnectionRefusedError" in reason
    assert "coordinator start-up: database unavailable (attempt 1)" in output
    assert "stopped while waiting for the database" in output
    assert "What to do: check that the database of SAGA_DATABASE_URL runs" in output


def test_a_relay_started_without_kafka_waits_for_it(tmp_path: Path) -> None:
    health = free_port()
    env = health_env(
        health,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'saga.db'}",
        bootstrap=f"127.0.0.1:{free_port()}",
    )
    log = tmp_path / "relay.log"
    _, output = waits_until_stopped(spawn_saga("relay", env, log), health, log, "Kafka")
    assert "relay start-up: Kafka unavailable (attempt 1)" in output


def test_a_relay_is_ready_once_it_joined_its_group(
    tmp_path: Path, kafka_bootstrap: str, database_url: str, topic_prefix: str
) -> None:
    async def prepare() -> None:
        replies = Topics(prefix=topic_prefix).replies
        await ensure_topics(kafka_bootstrap, [TopicSpec(name=replies, partitions=2)])
        engine = create_engine(database_url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(prepare())
    health = free_port()
    env = health_env(health, database_url=database_url, bootstrap=kafka_bootstrap)
    env["SAGA_TOPIC_PREFIX"] = topic_prefix
    log = tmp_path / "relay.log"
    proc = spawn_saga("relay", env, log)
    try:
        url = f"http://127.0.0.1:{health}/readyz"
        status, body = readiness_when_up(url, 60)
        end = time.monotonic() + 60
        while status != 200 and time.monotonic() < end:
            assert body["reason"].startswith(("starting:", "joining the consumer group")), body
            time.sleep(0.2)
            status, body = get(url)
        assert (status, body) == (200, {"status": "ready"}), log.read_text()
        assert proc.poll() is None, log.read_text()
    finally:
        stop(proc)
    assert proc.returncode == 0, log.read_text()
