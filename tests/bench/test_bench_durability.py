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
    assert out.getvalue().splitlines()[0] == LINE
