"""The chaos run at CI size: the same code path as ``saga chaos``, fewer sagas.

Real OS processes (coordinators, relays, participant replicas with reply faults) are
SIGKILLed and restarted on a seeded schedule while sagas run; afterwards every invariant
figure must be 0. Run it longer by hand with ``saga chaos --sagas 1000 --seed N [--brokers 3]``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from saga.chaos import ChaosConfig, ChaosResult, run_chaos

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]


def _check(result: ChaosResult, capsys: pytest.CaptureFixture[str]) -> None:
    figures = result.report.figures()
    with capsys.disabled():  # the figures show in the CI log, pass or fail
        print(
            f"\nchaos figures {json.dumps(figures)} outcomes {result.report.outcomes} "
            f"kills {result.kills} unexpected {result.unexpected_exits} in"
            f" {result.elapsed_s:.0f}s; {result.kafka_starts} started through the starts"
            f" topic; database: {result.database.describe() if result.database else None}"
        )
    assert result.settled, f"sagas did not settle: {result.report.outcomes}; logs in {result.logs}"
    assert result.report.ok, f"{figures}\n{result.report.examples}\nlogs in {result.logs}"
    assert figures["sagas"] == sum(result.report.outcomes.values())
    # The faults really happened, and both kinds of outcome occurred.
    assert sum(result.kills.values()) >= 3
    assert result.kafka_starts > 0, "some sagas were started through the starts topic"
    assert result.report.outcomes.get("completed", 0) > 0
    assert result.report.outcomes.get("compensated", 0) > 0


@pytest.mark.timeout(300)
async def test_chaos_single_broker(
    postgres_url: str, kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = ChaosConfig(
        postgres_url=postgres_url,
        bootstrap_servers=kafka_bootstrap,
        sagas=200,
        seed=11,
        start_rate=10.0,
        kill_every_s=(2.0, 5.0),
        workdir=tmp_path,
        deadline_s=270,
    )
    _check(await run_chaos(config, progress=print), capsys)


@pytest.mark.timeout(300)
async def test_chaos_three_brokers_with_a_broker_restart(
    postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = ChaosConfig(
        postgres_url=postgres_url,
        brokers=3,
        sagas=60,
        seed=5,
        start_rate=6.0,
        kill_every_s=(2.0, 5.0),
        workdir=tmp_path,
        deadline_s=270,
    )
    result = await run_chaos(config, progress=print)
    assert result.kills.get("broker") == 1
    _check(result, capsys)


@pytest.mark.timeout(300)
async def test_chaos_replicated_coordinators_and_participants(
    postgres_url: str,
    kafka_bootstrap: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Two coordinators (each with the relays of its partitions) plus a third that comes
    # and goes, two participants replicas on one database, one of which dies inside a
    # relay transaction: partitions move all the time, and nothing is lost or doubled.
    # The processes alternate between a producer per lane and one per process, so the
    # lanes move between both kinds (a rolling change of the setting), and the replica
    # that dies (one per process) leaves a transaction open under the lane id of its
    # lowest partition, which the new owners' fences abort.
    config = ChaosConfig(
        producer_per="mixed",
        postgres_url=postgres_url,
        bootstrap_servers=kafka_bootstrap,
        sagas=150,
        seed=23,
        start_rate=8.0,
        kill_every_s=(2.0, 5.0),
        coordinators=2,
        participant_replicas=2,
        crash_in_transaction_after=4,
        partitions=4,
        workdir=tmp_path,
        deadline_s=270,
    )
    result = await run_chaos(config, progress=print)
    assert result.kills.get("relay_mid_transaction", 0) >= 1
    assert result.kills.get("scale_up", 0) >= 1
    assert result.kills.get("scale_down", 0) >= 1
    assert not result.unexpected_exits, "a replica crash-looped"
    _check(result, capsys)


@pytest.mark.timeout(300)
async def test_chaos_with_postgres_postmaster_kills(
    kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The run brings its own durable PostgreSQL (own data directory and port; the shared
    # one is never touched) and the monkey SIGKILLs its postmaster between the other
    # kills. Every process rides the outage out (database errors are retried with
    # back-off, at start-up too: one process is restarted while the database is down);
    # with fsync and synchronous_commit on, a crash forgets no committed batch, so no
    # command whose row the relay published is published again.
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
    _check(result, capsys)
    assert result.database is not None
    assert result.database.durable, result.database.describe()
    assert result.kills.get("postgres") == 2, result.kills
    # Each time, one process was restarted while the database was down and waited.
    assert result.kills.get("outage_starts") == 2, result.kills
    assert result.report.figures()["sagas"] == 100
    assert not result.unexpected_exits, f"a process did not ride the outage out: {result.logs}"
