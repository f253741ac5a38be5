"""`saga audit` against a real database (SQLite and PostgreSQL): tampering is named.

Sagas are started through the normal start path (no Kafka needed: starting only writes
the database), then audit rows are edited or deleted with plain SQL, as an intruder
with database access would, and the CLI must name the saga, the position and the harm.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import delete, update

from saga.cli import cli
from saga.coordinator import DefinitionCache, start_saga
from saga.definition.examples.order_placement import ORDER_PLACEMENT
from saga.store import SqlStore, create_engine, upgrade
from saga.store.tables import audit_log
from saga.topics import Topics

pytestmark = [pytest.mark.postgres]

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


async def _start_sagas(url: str, n: int) -> list[str]:
    engine = create_engine(url)
    try:
        await upgrade(engine)
        store = SqlStore(engine)
        await store.register_partitions(Topics().coordinator_group, Topics().replies, 3)
        cache = DefinitionCache(store)
        await cache.register([ORDER_PLACEMENT])
        ids = []
        for i in range(n):
            started = await start_saga(
                store,
                cache,
                Topics(),
                "order_placement",
                {"order_id": f"o-{i}", "sku": "sku-1", "quantity": 1, "amount": 10},
                now=T0 + timedelta(minutes=i),
            )
            ids.append(str(started.saga_id))
        return ids
    finally:
        await engine.dispose()


async def _sql(url: str, *statements: object) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            for stmt in statements:
                await conn.execute(stmt)  # type: ignore[arg-type]
    finally:
        await engine.dispose()


def _row(saga_id: str, seq: int):  # type: ignore[no-untyped-def]
    return (audit_log.c.saga_id == saga_id) & (audit_log.c.seq == seq)


def run_cli(url: str, *args: str):  # type: ignore[no-untyped-def]
    env = {"SAGA_DATABASE_URL": url, "COLUMNS": "200"}
    return CliRunner().invoke(cli, ["audit", *args], env=env)


def test_untouched_log_verifies_and_the_timeline_prints(database_url: str) -> None:
    [sid] = asyncio.run(_start_sagas(database_url, 1))
    result = run_cli(database_url, "verify", "--all")
    assert result.exit_code == 0, result.output
    assert "verified 1 saga(s), 2 record(s): 0 problem(s)" in result.output
    shown = run_cli(database_url, sid)  # `saga audit ID`
    assert shown.exit_code == 0, shown.output
    assert "saga.started" in shown.output
    assert "command.sent" in shown.output
    assert "hash chain intact" in shown.output
    body = json.loads(run_cli(database_url, "show", sid, "--json").stdout)
    assert body["intact"] is True
    assert [r["kind"] for r in body["records"]] == ["saga.started", "command.sent"]


def test_altered_and_removed_records_are_named(database_url: str) -> None:
    a, b, c, d, ok = asyncio.run(_start_sagas(database_url, 5))
    asyncio.run(
        _sql(
            database_url,
            update(audit_log).where(_row(a, 2)).values(detail={"message_id": "forged"}),
            update(audit_log).where(_row(b, 1)).values(hash="f" * 64),
            delete(audit_log).where(_row(c, 1)),
            delete(audit_log).where(_row(d, 2)),  # the newest record: the tail
        )
    )
    result = run_cli(database_url, "verify", "--all", "--json", "--page-size", "2")
    assert result.exit_code == 1, result.output
    body = json.loads(result.stdout)
    assert body["sagas"] == 5
    assert body["intact"] is False
    got = {(p["saga_id"], p["seq"], p["problem"]) for p in body["problems"]}
    assert got == {
        (a, 2, "altered"),
        (b, 1, "altered"),
        (b, 2, "relinked"),  # it links to the hash that was there before
        (c, 1, "removed"),
        (d, 2, "removed"),
    }
    assert ok not in {p["saga_id"] for p in body["problems"]}

    # The human-readable form names the saga, the position and the harm; exit 1.
    one = run_cli(database_url, "verify", a)
    assert one.exit_code == 1
    assert a in one.output
    assert "altered" in one.output
    assert run_cli(database_url, "verify", ok).exit_code == 0
    shown = run_cli(database_url, d)
    assert "removed" in shown.output


def test_verify_needs_an_id_or_all_and_names_unknown_sagas(database_url: str) -> None:
    asyncio.run(_start_sagas(database_url, 1))
    assert run_cli(database_url, "verify").exit_code == 2
    unknown = run_cli(database_url, "verify", "00000000-0000-0000-0000-000000000000")
    assert unknown.exit_code == 1
    assert "no saga with id" in unknown.output


def test_export_writes_json_lines_of_a_time_range(database_url: str, tmp_path: Path) -> None:
    ids = asyncio.run(_start_sagas(database_url, 3))  # started at T0, T0+1m, T0+2m
    out = tmp_path / "audit.jsonl"
    result = run_cli(
        database_url,
        "export",
        "--since", "2024-05-01T12:01:00Z",
        "--until", "2024-05-01T12:02:00+00:00",
        "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert {line["saga_id"] for line in lines} == {ids[1]}
    assert [line["seq"] for line in lines] == [1, 2]
    assert set(lines[0]) >= {"recorded_at", "kind", "detail", "prev_hash", "hash"}
    everything = run_cli(database_url, "export", "--since", "2024-01-01", "--until", "2025-01-01")
    assert everything.exit_code == 0
    assert len(everything.stdout.splitlines()) == 6
    bad = run_cli(database_url, "export", "--since", "yesterday", "--until", "2025-01-01")
    assert bad.exit_code == 2
    assert "ISO 8601" in bad.output
