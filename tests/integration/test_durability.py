"""``saga.store.durability``: what SQLite and PostgreSQL really run with, and what it gives.

SQLite is checked exactly (FULL by default, NORMAL on request, the pragma really set on
the connection). The shared local PostgreSQL is not restarted here: whatever it runs
with, the verdict must follow from what ``SHOW`` reports. The dedicated PostgreSQL of the
chaos suite is checked durable, and a committed row survives a SIGKILL of its postmaster.
"""

from __future__ import annotations

import contextlib
import io
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from saga.chaos import DedicatedPostgres
from saga.chaos._broker import load_infra
from saga.errors import ConfigError
from saga.store import Durability, create_engine, durability


async def _durability_of(url: str) -> Durability:
    engine = create_engine(url)
    try:
        return await durability(engine)
    finally:
        await engine.dispose()


def _db_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.suffix == ".db")


# -- SQLite ---------------------------------------------------------------------------------


async def test_sqlite_defaults_to_wal_with_synchronous_full(tmp_path: Path) -> None:
    d = await _durability_of(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    assert d.backend == "sqlite"
    assert dict(d.settings) == {"journal_mode": "wal", "synchronous": "full"}
    assert d.durable
    assert d.risks == ()
    assert d.describe() == "sqlite journal_mode=wal synchronous=full (durable)"
    assert d.as_dict() == {
        "backend": "sqlite",
        "settings": {"journal_mode": "wal", "synchronous": "full"},
        "durable": True,
        "description": "sqlite journal_mode=wal synchronous=full (durable)",
    }


async def test_sqlite_synchronous_normal_on_request_is_not_durable(tmp_path: Path) -> None:
    d = await _durability_of(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}?synchronous=normal")
    assert dict(d.settings) == {"journal_mode": "wal", "synchronous": "normal"}
    assert not d.durable
    assert d.lost_after == "a power loss"
    assert d.describe() == (
        "sqlite journal_mode=wal synchronous=normal (NOT durable: figures do not hold after "
        "a power loss; synchronous=normal does not sync at each commit)"
    )


async def test_the_level_is_per_engine_on_one_file(tmp_path: Path) -> None:
    # synchronous is a setting of the connection: two engines on one file differ.
    db = tmp_path / "shared.db"
    full = create_engine(f"sqlite+aiosqlite:///{db}")
    normal = create_engine(f"sqlite+aiosqlite:///{db}?synchronous=NORMAL")
    extra = create_engine(f"sqlite+aiosqlite:///{db}?synchronous=extra")
    try:
        for engine, expected in ((full, 2), (normal, 1), (extra, 3)):
            async with engine.connect() as conn:
                assert (await conn.execute(text("PRAGMA synchronous"))).scalar_one() == expected
        assert (await durability(extra)).durable
        assert not (await durability(normal)).durable
        # The option does not reach SQLite as a file name or a URI parameter.
        assert _db_files(tmp_path) == ["shared.db"]
    finally:
        for engine in (full, normal, extra):
            await engine.dispose()


def test_an_unknown_sqlite_level_is_refused_naming_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'fast'.*off, normal, full, extra"):
        create_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}?synchronous=fast")


async def test_sqlite_in_memory_has_no_journal_on_disk() -> None:
    d = await _durability_of("sqlite+aiosqlite:///:memory:")
    assert d.settings["journal_mode"] == "memory"
    assert not d.durable
    assert "NOT durable: figures do not hold after a database crash" in d.describe()


async def test_a_committed_row_is_on_disk_without_the_wal_checkpoint(tmp_path: Path) -> None:
    # FULL syncs the WAL at each commit: another connection (no shared cache) reads it.
    url = f"sqlite+aiosqlite:///{tmp_path / 'a.db'}"
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (x INTEGER)"))
            await conn.execute(text("INSERT INTO t VALUES (1)"))
    finally:
        await engine.dispose()
    with contextlib.closing(sqlite3.connect(tmp_path / "a.db")) as raw:
        assert raw.execute("SELECT count(*) FROM t").fetchone() == (1,)


# -- the verdict, from settings ------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "durable", "after"),
    [
        ({"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}, True, ""),
        ({"fsync": "on", "synchronous_commit": "local", "full_page_writes": "on"}, True, ""),
        ({"fsync": "ON", "synchronous_commit": "remote_apply", "full_page_writes": "On"}, True, ""),
        (
            {"fsync": "on", "synchronous_commit": "off", "full_page_writes": "on"},
            False,
            "a database crash",
        ),
        (
            {"fsync": "off", "synchronous_commit": "on", "full_page_writes": "on"},
            False,
            "an OS crash or power loss",
        ),
        (
            {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "off"},
            False,
            "a power loss",
        ),
        (
            {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"},
            False,
            "a database crash",
        ),
    ],
)
def test_postgres_verdict(settings: dict[str, str], durable: bool, after: str) -> None:
    d = Durability.from_settings("postgresql", settings)
    assert d.durable is durable
    assert d.lost_after == after
    assert len(d.risks) == sum(
        [
            settings["fsync"].lower() != "on",
            settings["synchronous_commit"] == "off",
            settings["full_page_writes"].lower() != "on",
        ]
    )
    if durable:
        assert d.describe().endswith("(durable)")
    else:
        assert f"(NOT durable: figures do not hold after {after};" in d.describe()


@pytest.mark.parametrize(
    ("pragma", "name", "durable"),
    [("0", "off", False), ("1", "normal", False), ("2", "full", True), ("3", "extra", True)],
)
def test_sqlite_verdict_from_the_pragma_number(pragma: str, name: str, durable: bool) -> None:
    d = Durability.from_settings("sqlite", {"journal_mode": "wal", "synchronous": pragma})
    assert d.settings["synchronous"] == name
    assert d.durable is durable


def test_another_backend_is_refused() -> None:
    with pytest.raises(ConfigError, match="mysql"):
        Durability.from_settings("mysql", {})


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql+aiomysql://u@h/db", "unsupported database URL 'mysql+aiomysql://u@h/db'"),
        ("not a url", "cannot read the database URL 'not a url'"),
        ("postgres ql://u:sekrit@h/db", "cannot read the database URL 'postgres ql://u:***@h/db'"),
    ],
)
def test_a_bad_database_url_is_a_config_error_that_hides_the_password(
    url: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        create_engine(url)
    assert str(info.value).startswith(message)
    assert "use sqlite+aiosqlite:///FILE or postgresql+asyncpg://" in str(info.value)
    assert "sekrit" not in str(info.value)


# -- PostgreSQL -----------------------------------------------------------------------------


@pytest.mark.postgres
async def test_postgres_verdict_follows_what_the_server_reports(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    try:
        reported = {}
        async with engine.connect() as conn:
            for name in ("fsync", "synchronous_commit", "full_page_writes"):
                reported[name] = (await conn.execute(text(f"SHOW {name}"))).scalar_one()
        d = await durability(engine)
    finally:
        await engine.dispose()
    assert d.backend == "postgresql"
    assert dict(d.settings) == reported
    expected = (
        reported["fsync"] == "on"
        and reported["full_page_writes"] == "on"
        and reported["synchronous_commit"] != "off"
    )
    assert d.durable is expected
    shown = " ".join(f"{k}={v}" for k, v in reported.items())
    assert d.describe().startswith(f"postgresql {shown} (")
    assert ("(durable)" in d.describe()) is expected
    assert ("NOT durable: figures do not hold after" in d.describe()) is not expected


@pytest.mark.postgres
def test_infra_warns_about_a_running_server_that_is_not_durable(postgres_url: str) -> None:
    # deploy/local/infra.py judges the running server the same way (it is not restarted).
    if ":15432/" not in postgres_url:
        pytest.skip("the check is of the local PostgreSQL that deploy/local/up starts")
    infra = load_infra()
    settings = infra.pg_durability(infra.pg_bin(), 15432)
    assert set(settings) == {"fsync", "synchronous_commit", "full_page_writes"}
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        infra.pg_warn_if_not_durable(infra.pg_bin(), 15432)
    durable = Durability.from_settings("postgresql", settings).durable
    assert infra.pg_durable(settings) is durable
    assert ("runs NOT durable" in err.getvalue()) is not durable


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_dedicated_postgres_is_durable_and_keeps_commits_through_a_sigkill() -> None:
    pg = DedicatedPostgres.claim()
    try:
        await pg.start()
        first = pg.pid
        assert first is not None
        engine = create_engine(pg.url)
        try:
            d = await durability(engine)
            assert d.durable, d.describe()
            assert d.describe() == (
                "postgresql fsync=on synchronous_commit=on full_page_writes=on (durable)"
            )
            async with engine.begin() as conn:
                await conn.execute(text("DROP TABLE IF EXISTS durability_probe"))
                await conn.execute(text("CREATE TABLE durability_probe (x int)"))
                await conn.execute(text("INSERT INTO durability_probe VALUES (1), (2)"))
            assert await pg.crash() == first
            assert pg.pid is None
            await pg.start()
            assert pg.pid not in (None, first)
            await engine.dispose()  # the pool's connections died with the server
            async with engine.begin() as conn:
                count = (await conn.execute(text("SELECT count(*) FROM durability_probe"))).scalar()
                await conn.execute(text("DROP TABLE durability_probe"))
            assert count == 2
        finally:
            await engine.dispose()
    finally:
        await pg.stop()
    assert pg.pid is None
