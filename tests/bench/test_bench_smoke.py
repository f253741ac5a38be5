"""Smoke test of ``saga bench``: the harness runs end to end and its figures are sane.

Tiny runs against the real broker and databases; no speed threshold (CI shares a small
machine). Each run starts the coordinator, the relay and three participants as
processes, so a run takes some seconds even with a handful of sagas.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from saga.bench import BenchConfig, run_bench
from saga.cli import cli

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]

PHASE_KEYS = {
    "sagas_per_s",
    "steps_per_s",
    "p50_step_ms",
    "p95_step_ms",
    "p99_step_ms",
    "p50_saga_ms",
    "p95_saga_ms",
    "p99_saga_ms",
    "processes",
    "outcomes",
}


def check_phase(phase: dict, *, sagas: int, roles: set[str]) -> None:
    assert phase.keys() >= PHASE_KEYS
    assert phase["sagas"] == sagas
    assert phase["sagas_per_s"] > 0
    assert phase["steps_per_s"] >= phase["sagas_per_s"]
    assert 0 < phase["p50_step_ms"] <= phase["p95_step_ms"] <= phase["p99_step_ms"]
    assert 0 < phase["p50_saga_ms"] <= phase["p95_saga_ms"] <= phase["p99_saga_ms"]
    # A saga takes at least as long as one of its steps.
    assert phase["p50_saga_ms"] >= phase["p50_step_ms"]
    assert roles <= phase["processes"].keys()
    for role in roles:
        figures = phase["processes"][role]
        # CPU is read from /proc in clock ticks (10 ms): a process that did little in a
        # tiny run may read 0, but never less, and the run as a whole used some.
        assert figures["cpu_s_per_saga"] >= 0, role
        assert 0 <= figures["kernel_share"] <= 1, role
        assert 10 < figures["peak_rss_mb"] < 2_000, role


SAGA_ROLES = {"coordinator", "bench1", "bench2", "bench3"}
"""The processes of a run whose coordinator runs its relays (the default)."""


@pytest.mark.timeout(180)
async def test_postgres_run_with_failures_baseline_and_scale(
    kafka_bootstrap: str, postgres_url: str
) -> None:
    config = BenchConfig(
        sagas=30,
        concurrency=10,
        warmup=3,
        failure_ratio=0.2,
        postgres_url=postgres_url,
        bootstrap_servers=kafka_bootstrap,
        baseline=True,
        # The exactly-once baseline holds each transaction open for 20 ms: the path
        # that adds polled batches to an open transaction runs too.
        baseline_commit_interval_ms=20,
        scale_preload=200,
        timeout_s=90,
    )
    report = await run_bench(config)

    empty = report["empty"]
    check_phase(empty, sagas=30, roles=SAGA_ROLES)
    assert "relay" not in empty["processes"], "the coordinator runs its relays itself"
    # failure_ratio is an exact share: every 5th saga fails its last step.
    assert empty["outcomes"] == {"completed": 24, "compensated": 6}
    # Completed sagas ran 3 steps, compensated ones 3 plus 2 compensations.
    assert empty["steps"] == 24 * 3 + 6 * 5
    assert report["sagas_per_s"] == empty["sagas_per_s"]
    assert report["processes"]["coordinator"] == empty["processes"]["coordinator"]
    # Each saga took some relay transactions (a batch can carry several sagas' rows)
    # and many database commits.
    per_saga = empty["transactions_per_saga"]
    assert 0 < per_saga["kafka"] <= 20, per_saga
    assert per_saga["database"] >= 2, per_saga

    check_phase(report["scale"], sagas=30, roles=SAGA_ROLES)
    assert report["scale_ratio"]["p50_step"] > 0

    # Both baselines move every saga's messages: at-least-once, then with a Kafka
    # transaction per batch (read-committed consumers see only committed batches, so
    # a saga finishes only if its echo processes committed theirs).
    for name in ("baseline", "baseline_exactly_once"):
        baseline = report[name]
        check_phase(baseline, sagas=30, roles={"echo-coordinator", "echo-bench1"})
        assert baseline["outcomes"] == {"completed": 30}, name


@pytest.mark.timeout(180)
def test_cli_json_on_sqlite_at_least_once(kafka_bootstrap: str, tmp_path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "bench",
            "--sagas", "12",
            "--concurrency", "4",
            "--warmup", "2",
            "--database", "sqlite",
            "--relay-mode", "at_least_once",
            "--relay-process",
            "--payload-bytes", "1000",
            "--workdir", str(tmp_path),
            "--json",
        ],
        env={"SAGA_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["config"]["relay_mode"] == "at_least_once"
    assert report["config"]["relay_process"] is True
    check_phase(report["empty"], sagas=12, roles=SAGA_ROLES | {"relay"})
    for key in ("sagas_per_s", "steps_per_s", "p50_step_ms", "p95_step_ms", "p99_step_ms"):
        assert report[key] == report["empty"][key]
    assert report["empty"]["outbox_backlog"]["series"], "the backlog was sampled"
    # At least once: no transactions, and SQLite keeps no commit count.
    assert report["empty"]["transactions_per_saga"] == {"kafka": 0.0}


@pytest.mark.timeout(180)
def test_cli_json_with_a_producer_per_lane(kafka_bootstrap: str, tmp_path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "bench",
            "--sagas", "12",
            "--concurrency", "4",
            "--warmup", "2",
            "--database", "sqlite",
            "--producer-per", "lane",
            "--relay-process",
            "--workdir", str(tmp_path),
            "--json",
        ],
        env={"SAGA_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["config"]["producer_per"] == "lane"
    check_phase(report["empty"], sagas=12, roles=SAGA_ROLES | {"relay"})
    assert report["empty"]["outcomes"] == {"completed": 12}
    assert report["empty"]["transactions_per_saga"]["kafka"] > 0
