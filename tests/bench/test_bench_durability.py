"""``saga bench`` says first what the database does with a commit on a crash or power loss."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from saga.bench import BenchConfig, render, run_bench

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

LINE = "database: sqlite journal_mode=wal synchronous=full (durable)"


@pytest.mark.timeout(180)
async def test_the_durability_line_comes_first_and_is_in_the_report(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    config = BenchConfig(
        sagas=5,
        concurrency=5,
        warmup=1,
        database="sqlite",
        bootstrap_servers=kafka_bootstrap,
        workdir=tmp_path,
        timeout_s=90,
    )
    lines: list[str] = []
    report = await run_bench(config, say=lines.append)
    assert lines == [LINE]
    assert report["database"] == {
        "backend": "sqlite",
        "settings": {"journal_mode": "wal", "synchronous": "full"},
        "durable": True,
        "description": LINE.removeprefix("database: "),
    }
    out = io.StringIO()
    render(report, Console(file=out, width=200))
    printed = out.getvalue().splitlines()
    assert printed[0] == LINE
    # The run's description is one line of its own, not a title wrapped to the table.
    assert printed[1] == (
        f"saga bench: {config.sagas} sagas x {config.steps} steps, sqlite, relay exactly_once,"
        f" flat out, concurrency {config.concurrency}, 1 coordinator(s)"
    )
