"""The chaos run with PostgreSQL crashes: the postmaster is SIGKILLed and restarted.

The run brings its own durable PostgreSQL (own data directory and port; the shared one
is never touched), puts the coordinator's and the services' schemas there, and the
monkey SIGKILLs its postmaster between the other kills. Every process rides the outage
out (database errors are retried with back-off) and every figure stays 0: with fsync
and synchronous_commit on, a crash forgets no committed batch, so no command whose row
the relay published is published again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from saga.chaos import ChaosConfig, run_chaos

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]


@pytest.mark.timeout(300)
async def test_chaos_with_postgres_postmaster_kills(
    kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = ChaosConfig(
        bootstrap_servers=kafka_bootstrap,
        sagas=100,
        seed=32,
        start_rate=8.0,
        kill_every_s=(2.0, 4.0),
        chaos_tail_s=8.0,
        postgres_kills=2,
        workdir=tmp_path,
        deadline_s=270,
    )
    result = await run_chaos(config, progress=print)
    figures = result.report.figures()
    with capsys.disabled():  # the figures show in the CI log, pass or fail
        print(
            f"\nchaos figures {json.dumps(figures)} outcomes {result.report.outcomes} "
            f"kills {result.kills} unexpected {result.unexpected_exits} "
            f"in {result.elapsed_s:.0f}s; database: "
            f"{result.database.describe() if result.database else None}"
        )
    assert result.database is not None
    assert result.database.durable, result.database.describe()
    assert result.kills.get("postgres") == 2, result.kills
    assert result.settled, f"sagas did not settle: {result.report.outcomes}; logs in {result.logs}"
    assert result.report.ok, f"{figures}\n{result.report.examples}\nlogs in {result.logs}"
    assert figures["sagas"] == 100 == sum(result.report.outcomes.values())
    assert not result.unexpected_exits, f"a process did not ride the outage out: {result.logs}"
    assert result.report.outcomes.get("completed", 0) > 0
    assert result.report.outcomes.get("compensated", 0) > 0
