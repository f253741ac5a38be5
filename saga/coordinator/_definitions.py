"""Definitions as the coordinator sees them: registered in the store, cached in memory.

An in-flight saga always continues with the exact definition version it started with,
read back from the database, even after the process that registered it is gone. At
start-up the process registers the definitions it was given; a definition whose content
changed under an unchanged name and version is refused with a clear error.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from saga.definition import SagaDefinition, canonical_json, definition_from_dict
from saga.store import SqlStore


class DefinitionCache:
    """Definitions by ``(name, version)``: memory first, then the store."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self._cache: dict[tuple[str, int], SagaDefinition] = {}
        self._latest: dict[str, int] = {}

    async def register(self, definitions: Iterable[SagaDefinition]) -> None:
        """Register definitions in the store (idempotent) and cache them.

        Raises:
            saga.errors.DefinitionConflict: Same name and version, different content.
        """
        for d in definitions:
            body = json.loads(canonical_json(d.canonical()))
            await self._store.register_definition(d.name, d.version, d.content_hash, body)
            self._remember(d)

    def _remember(self, d: SagaDefinition) -> None:
        self._cache[(d.name, d.version)] = d
        if d.version >= self._latest.get(d.name, 0):
            self._latest[d.name] = d.version

    async def get(self, name: str, version: int) -> SagaDefinition | None:
        """The definition ``name`` at ``version``, or ``None`` when it was never registered."""
        found = self._cache.get((name, version))
        if found is not None:
            return found
        stored = await self._store.load_definition(name, version)
        if stored is None:
            return None
        _hash, body = stored
        d = definition_from_dict(body)
        self._remember(d)
        return d

    async def latest(self, name: str) -> SagaDefinition | None:
        """The newest registered version of ``name``."""
        version = self._latest.get(name)
        if version is None:
            for d_name, d_version in await self._store.list_definitions():
                if d_name == name and d_version >= (version or 0):
                    version = d_version
        return None if version is None else await self.get(name, version)

    def known(self) -> list[SagaDefinition]:
        """Every definition cached so far."""
        return [self._cache[k] for k in sorted(self._cache)]
