"""`saga status`, `saga audit` and `saga list` read well in an 80-column terminal: one line
per record, no decision bookkeeping, short ids that differ, and ids given by a piece."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from _console_seed import seed
from click.testing import CliRunner, Result

from saga.cli import cli
from saga.ids import short_id
from saga.store import SqlStore, create_engine, upgrade
from saga.topics import Topics


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('views') / 'views.db'}"

    async def prepare() -> dict[str, Any]:
        engine = create_engine(url)
        try:
            await upgrade(engine)
            return await seed(SqlStore(engine), Topics(prefix="views."))
        finally:
            await engine.dispose()

    return url, asyncio.run(prepare())


@pytest.fixture
def run(world: tuple[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("SAGA_DATABASE_URL", world[0])
    monkeypatch.setenv("SAGA_TOPIC_PREFIX", "views.")
    monkeypatch.delenv("SAGA_DEFINITIONS", raising=False)

    def invoke(*args: str, columns: int = 80) -> Result:
        result = CliRunner().invoke(
            cli, list(args), env={"COLUMNS": str(columns)}, catch_exceptions=False
        )
        assert result.exit_code == 0, result.output
        return result

    return invoke


def _lines(output: str) -> list[str]:
    return output.splitlines()


def _assert_fits(output: str, width: int = 80) -> None:
    too_wide = [line for line in _lines(output) if len(line) > width]
    assert not too_wide, "\n".join(too_wide)


def _record_lines(output: str) -> dict[int, str]:
    """Table rows that start with a record number."""
    rows: dict[int, str] = {}
    for line in _lines(output):
        m = re.match(r"^\s*(\d+)\s{2}\d\d:\d\d:\d\d\.\d{3}\s", line)
        if m:
            assert int(m[1]) not in rows, f"record {m[1]} printed twice"
            rows[int(m[1])] = line
    return rows


@pytest.mark.parametrize("name", ["aborted", "compensated", "stuck"])
def test_status_fits_80_columns_one_line_per_record(
    run: Any, world: tuple[str, dict[str, Any]], name: str
) -> None:
    saga_id = world[1][name]
    out = run("status", saga_id).output
    _assert_fits(out)
    assert "decision=" not in out
    assert '"causation_id"' not in out  # raw events are reduced to their code or reason
    timeline = run("status", saga_id, "--json").output
    records = json.loads(timeline)["timeline"]
    rows = _record_lines(out)
    assert sorted(rows) == [r["seq"] for r in records]
    for r in records:
        kind = r["kind"]
        assert kind[:20] in rows[r["seq"]], (kind, rows[r["seq"]])
    assert f"({short_id(saga_id)})" in out
    # the step table keeps each step on one line, with its compensation
    assert re.search(r"^reserve\s+compensatable\s+succeeded\s+1\s+\w+", out, re.M), out


def test_status_of_an_aborted_saga_says_who_and_why_on_one_line(
    run: Any, world: tuple[str, dict[str, Any]]
) -> None:
    out = run("status", world[1]["aborted"]).output
    [line] = [ln for ln in _lines(out) if "event.operator_abort" in ln]
    assert "by seed" in line
    assert "reason=written" in line
    [changed] = [ln for ln in _lines(out) if "to=aborted" in ln]
    assert "from=stuck" in changed


def test_audit_fits_80_columns_and_marks_the_chain(
    run: Any, world: tuple[str, dict[str, Any]]
) -> None:
    saga_id = world[1]["compensated"]
    out = run("audit", saga_id).output
    _assert_fits(out)
    assert "decision=" not in out
    rows = _record_lines(out)
    assert len(rows) >= 10
    assert all("✔" in row for row in rows.values())
    assert "hash chain intact" in out
    wide = run("audit", saga_id, columns=140).output
    _assert_fits(wide, 140)
    assert all(" ok " in row for row in _record_lines(wide).values())


def test_list_shows_short_ids_that_differ(run: Any, world: tuple[str, dict[str, Any]]) -> None:
    out = run("list").output
    _assert_fits(out)
    shown = [line.split()[0] for line in _lines(out)[2:] if line.strip()]
    expected = {short_id(s) for s in world[1].values()}
    assert set(shown) == expected
    assert len(set(shown)) == len(shown) == len(world[1])
    # The first 8 hex digits are the creation time: the same for every saga here.
    assert len({s[:8] for s in world[1].values()}) < len(world[1])
    assert str(next(iter(world[1].values()))) in run("list", columns=120).output


def test_a_unique_suffix_or_prefix_names_the_saga(
    run: Any, world: tuple[str, dict[str, Any]]
) -> None:
    saga_id = world[1]["stuck"]
    assert saga_id in run("status", short_id(saga_id)).output
    assert saga_id in run("audit", short_id(saga_id)[-6:]).output
    assert saga_id in run("status", saga_id.replace("-", "")[:30]).output
    ambiguous = CliRunner().invoke(cli, ["status", saga_id[:8]], catch_exceptions=False)
    assert ambiguous.exit_code == 1
    assert "give more of the id" in ambiguous.output
    assert CliRunner().invoke(cli, ["status", "xyz"]).exit_code == 2
