"""``saga chaos``: its public names, its JSON keys, and clean refusals (no Kafka needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import saga.chaos
from saga.chaos import ChaosConfig, InvariantReport
from saga.cli import cli

SPEC_KEYS = [
    "sagas",
    "lost",
    "duplicate_commands",
    "misordered_compensations",
    "phantom_compensations",
    "unpublished_outbox",
    "audit_breaks",
    "duplicate_messages",
    "inconsistent_effects",
]


def test_public_names_are_deliberate() -> None:
    assert saga.chaos.__all__ == [
        "FIGURES",
        "ChaosConfig",
        "ChaosResult",
        "DedicatedBroker",
        "DedicatedPostgres",
        "Effects",
        "Evidence",
        "InvariantReport",
        "ManagedProcess",
        "OutboxSnapshot",
        "SagaSnapshot",
        "TcpProxy",
        "TopicMessage",
        "check_invariants",
        "cluster_running",
        "collect_evidence",
        "ensure_cluster",
        "format_faults",
        "free_port",
        "free_port_pair",
        "parse_faults",
        "read_topics",
        "restart_broker",
        "run_chaos",
        "run_faulty_services",
        "saga_input",
        "snapshot_saga",
        "stop_cluster",
    ]


def test_the_json_figures_have_exactly_the_documented_keys() -> None:
    report = InvariantReport(
        sagas=3,
        lost=0,
        duplicate_commands=0,
        misordered_compensations=1,
        phantom_compensations=0,
        unpublished_outbox=0,
        audit_breaks=0,
    )
    assert list(report.figures()) == SPEC_KEYS
    assert not report.ok


def test_chaos_refuses_sqlite_with_a_clear_message() -> None:
    result = CliRunner().invoke(
        cli, ["chaos", "--sagas", "1"], env={"SAGA_DATABASE_URL": "sqlite+aiosqlite:///x.db"}
    )
    assert result.exit_code != 0
    assert "PostgreSQL" in result.output


def test_participants_refuse_a_bad_fault_spec_naming_the_key() -> None:
    result = CliRunner().invoke(
        cli, ["chaos", "participants"], env={"SAGA_FAULTS": "duplicate=0.1,explode=1"}
    )
    assert result.exit_code != 0
    assert "explode" in result.output


def test_mixed_producers_alternate_between_the_processes(tmp_path: Path) -> None:
    from saga.chaos._controller import _Run

    config = ChaosConfig(
        postgres_url="postgresql+asyncpg://saga@127.0.0.1:1/saga",
        bootstrap_servers="127.0.0.1:1",
        coordinators=2,
        participant_replicas=2,
        producer_per="mixed",
        workdir=tmp_path,
    )
    run = _Run(config, print)
    run.build_processes()
    kinds = {name: p.env["SAGA_RELAY_PRODUCER_PER"] for name, p in run.processes.items()}
    assert kinds == {
        "coordinator-1": "process",
        "coordinator-2": "lane",
        "coordinator-3": "process",
        "participants-1": "lane",
        "participants-2": "process",  # the one that dies inside a relay transaction
    }
    assert run.crashing == "participants-2"
    with pytest.raises(ValueError, match="producer_per"):
        ChaosConfig(postgres_url="postgresql://x", producer_per="thread")
