"""The ``saga`` verbs on sagas, against a real SQLite file (SAGA_DATABASE_URL)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from _api_helpers import (
    DEFINITIONS,
    STUCK_IN_COMPENSATION,
    apply_events,
    envelope_of,
    outbox_rows,
)
from click.testing import CliRunner, Result

from saga.chaos import free_port
from saga.cli import cli
from saga.coordinator import CONTROL_PREFIX, DefinitionCache
from saga.engine import SagaStatus
from saga.ids import short_id
from saga.store import SqlStore, create_engine, upgrade
from saga.topics import Topics


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"

    async def prepare() -> None:
        engine = create_engine(url)
        try:
            await upgrade(engine)
            cli_topics = Topics(prefix="cli.")  # the tests' SAGA_TOPIC_PREFIX
            await SqlStore(engine).register_partitions(
                cli_topics.coordinator_group, cli_topics.replies, 3
            )
            await DefinitionCache(SqlStore(engine)).register(DEFINITIONS)
        finally:
            await engine.dispose()

    asyncio.run(prepare())
    return url


@pytest.fixture
def run(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("SAGA_DEFINITIONS", raising=False)
    monkeypatch.setenv("SAGA_DATABASE_URL", db_url)
    monkeypatch.setenv("SAGA_TOPIC_PREFIX", "cli.")

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)

    return invoke


def _in_db(db_url: str, call: Any) -> Any:
    async def main() -> Any:
        engine = create_engine(db_url)
        try:
            store = SqlStore(engine)
            return await call(store, DefinitionCache(store))
        finally:
            await engine.dispose()

    return asyncio.run(main())


def _start(run: Any, saga_type: str = "booking", *extra: str) -> str:
    result = run("start", saga_type, "--input", '{"order_id": "o-7"}', "--json", *extra)
    assert result.exit_code == 0, result.output
    return str(json.loads(result.output)["saga_id"])


def test_start_prints_the_saga_and_is_idempotent_per_key(run: Any, db_url: str) -> None:
    first = run("start", "booking", "--input", '{"order_id": "o-1"}', "--idempotency-key", "k1")
    assert first.exit_code == 0, first.output
    assert first.output.startswith("started saga ")
    saga_id = first.output.split()[2]
    again = run(
        "start", "booking", "--input", '{"order_id": "o-1"}', "--idempotency-key", "k1", "--json"
    )
    assert json.loads(again.output) == {"saga_id": saga_id, "created": False}
    rows = _in_db(db_url, lambda store, _: outbox_rows(store, topic="cli.inventory.commands"))
    assert [str(envelope_of(r).saga_id) for r in rows] == [saga_id]


def test_status_and_list_show_the_saga(run: Any) -> None:
    saga_id = _start(run)
    shown = run("status", saga_id)
    assert shown.exit_code == 0, shown.output
    for text in (saga_id, "booking v1", "running", "reserve", "charge", "confirm", "timeline"):
        assert text in shown.output
    detail = json.loads(run("status", saga_id, "--json").output)
    assert detail["context"] == {"order_id": "o-7"}
    listed = run("list", "--type", "booking", "--status", "running")
    assert short_id(saga_id) in listed.output  # the last 8 hex digits, which differ
    assert json.loads(run("list", "--status", "completed", "--json").output)["items"] == []


def test_list_pages_with_the_printed_cursor(run: Any) -> None:
    ids = {_start(run) for _ in range(3)}
    page = json.loads(run("list", "--limit", "2", "--json").output)
    rest = json.loads(run("list", "--limit", "2", "--cursor", page["next_cursor"], "--json").output)
    assert {s["saga_id"] for s in page["items"] + rest["items"]} == ids
    bad = run("list", "--cursor", "garbage")
    assert bad.exit_code == 2
    assert "cursor" in bad.output


def test_signal_and_abort_are_delivered(run: Any, db_url: str) -> None:
    saga_id = _start(run, "approval")
    sent = run("signal", saga_id, "approved", "--data", '{"by": "boss"}', "--json")
    assert sent.exit_code == 0, sent.output
    message_id = json.loads(sent.output)["message_id"]
    [row] = _in_db(db_url, lambda store, _: outbox_rows(store, message_id=message_id))
    assert row.topic == "cli.saga.replies"
    assert envelope_of(row).payload == {"name": "approved", "data": {"by": "boss"}}

    aborted = run("abort", saga_id, "--reason", "customer cancelled")
    assert aborted.exit_code == 0, aborted.output
    assert "abort accepted" in aborted.output
    timeline = json.loads(run("status", saga_id, "--json").output)["timeline"]
    requested = [r for r in timeline if r["kind"] == "operator.requested"]
    assert [r["detail"]["verb"] for r in requested] == ["start", "signal", "abort"]
    assert requested[2]["detail"]["reason"] == "customer cancelled"
    assert {r["actor"] for r in requested} == {requested[0]["actor"]}
    assert requested[0]["actor"].startswith("cli")


def test_operator_verbs_on_a_stuck_saga(run: Any, db_url: str) -> None:
    saga_id = _start(run)
    state = _in_db(
        db_url,
        lambda store, defs: apply_events(store, defs, uuid.UUID(saga_id), STUCK_IN_COMPENSATION),
    )
    assert state.status is SagaStatus.STUCK
    assert "stuck on" in run("status", saga_id).output
    for args in (
        ["retry-step", saga_id, "reserve"],
        ["skip-step", saga_id, "reserve"],
        ["resume", saga_id],
        ["mark-compensated", saga_id],
    ):
        result = run(*args, "--reason", "fixed by hand", "--json")
        assert result.exit_code == 0, (args, result.output)
        message_id = json.loads(result.output)["message_id"]
        [row] = _in_db(db_url, lambda store, _, m=message_id: outbox_rows(store, message_id=m))
        assert envelope_of(row).type.startswith(CONTROL_PREFIX)


def test_errors_say_what_to_do_and_exit_1(run: Any) -> None:
    missing = str(uuid.uuid4())
    result = run("status", missing)
    assert result.exit_code == 1
    assert f"no saga with id {missing}" in result.output
    assert "saga list" in result.output

    saga_id = _start(run)
    result = run("mark-compensated", saga_id, "--reason", "r")
    assert result.exit_code == 1
    assert "stuck" in result.output
    assert f"saga status {saga_id}" in result.output

    result = run("start", "nope")
    assert result.exit_code == 1
    assert "SAGA_DEFINITIONS" in result.output

    result = run("signal", saga_id, "approved")
    assert result.exit_code == 1
    assert "no step waits for signal" in result.output


def test_usage_errors_exit_2(run: Any) -> None:
    assert run("start", "booking", "--input", "{nope").exit_code == 2
    assert run("start", "booking", "--input", "[1]").exit_code == 2
    assert run("status", "not-a-uuid").exit_code == 2
    assert run("abort", str(uuid.uuid4())).exit_code == 2  # --reason is required
    assert run("abort", str(uuid.uuid4()), "--reason", "  ").exit_code == 2


def test_api_refuses_a_public_address_without_tokens(
    run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SAGA_API_TOKENS", raising=False)
    result = run("api", "--host", "0.0.0.0", "--port", "1")
    assert result.exit_code == 1
    assert "SAGA_API_TOKENS" in result.output
    monkeypatch.setenv("SAGA_API_TOKENS", "t:admin:x")
    result = run("api", "--port", "1")
    assert result.exit_code == 1
    assert "unknown role 'admin'" in result.output


def test_saga_api_serves_until_sigterm(db_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "SAGA_DATABASE_URL": db_url,
        "SAGA_API_PORT": str(port),
        "SAGA_API_TOKENS": "sekrit:viewer:vera",
        "SAGA_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
    }
    env.pop("SAGA_DEFINITIONS", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", SAGA_MAIN, "api"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        body = _get_when_up(proc, f"http://127.0.0.1:{port}/v1/definitions", "sekrit")
        assert [d["name"] for d in json.loads(body)["items"]] == ["approval", "booking"]
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, output
    assert "API listening on http://127.0.0.1" in output


SAGA_MAIN = "from saga.cli import main; main()"


def _get_when_up(proc: subprocess.Popen[str], url: str, token: str) -> str:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                return str(resp.read().decode())
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"saga api exited early:\n{proc.communicate()[0]}")
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
