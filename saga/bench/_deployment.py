"""One run's names and databases: its topic prefix and a schema (or SQLite file) a role."""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy import text

from saga.bench._config import BenchConfig
from saga.bench._definition import PARTICIPANTS
from saga.kafka import delete_topics_with_prefix
from saga.store import create_engine
from saga.topics import Topics


class Deployment:
    """Names and databases of one run."""

    def __init__(self, config: BenchConfig, workdir: Path) -> None:
        run = uuid.uuid4().hex[:8]
        self.config = config
        self.run = run
        self.workdir = workdir
        self.topics = Topics(prefix=f"bench-{run}.")
        self.schemas: dict[str, str] = {}
        self.urls: dict[str, str] = {}
        for role in ("coordinator", *PARTICIPANTS):
            if config.database == "postgres":
                schema = f"bench_{run}" if role == "coordinator" else f"bench_{run}_{role}"
                self.schemas[role] = schema
                sep = "&" if "?" in config.postgres_url else "?"
                self.urls[role] = f"{config.postgres_url}{sep}search_path={schema}"
            else:
                self.urls[role] = f"sqlite+aiosqlite:///{workdir / f'{role}.db'}"

    async def create_schemas(self) -> None:
        await self._each_schema('CREATE SCHEMA "{}"')

    async def drop_schemas(self) -> None:
        await self._each_schema('DROP SCHEMA IF EXISTS "{}" CASCADE')

    async def _each_schema(self, statement: str) -> None:
        """Run ``statement`` (``{}`` = the schema name) for every role's schema."""
        if not self.schemas:
            return
        engine = create_engine(self.config.postgres_url)
        try:
            async with engine.begin() as conn:
                for schema in self.schemas.values():
                    await conn.execute(text(statement.format(schema)))
        finally:
            await engine.dispose()

    async def delete_topics(self) -> None:
        await delete_topics_with_prefix(self.config.bootstrap_servers, self.topics.prefix)
