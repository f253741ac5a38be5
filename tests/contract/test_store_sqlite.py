"""The store contract on SQLite (a fresh database file per test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .store_contract import SqlStoreContract


class TestSqliteStore(SqlStoreContract):
    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"sqlite+aiosqlite:///{tmp_path / 'saga.db'}"

    @pytest.fixture
    def unreachable_url(self, tmp_path: Path) -> str:
        # The directory does not exist, so SQLite cannot create the file.
        return f"sqlite+aiosqlite:///{tmp_path / 'missing-dir' / 'saga.db'}"
