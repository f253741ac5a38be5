"""The saga store: tables, migrations and repositories on SQLite and PostgreSQL."""

from saga.store._engine import DEFAULT_URL, create_engine

__all__ = ["DEFAULT_URL", "create_engine"]
