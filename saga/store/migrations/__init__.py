"""Alembic migrations of the saga store (run them with :func:`saga.store.upgrade`)."""
