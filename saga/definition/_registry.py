"""An in-memory registry of definitions keyed by name and version.

A definition is immutable once registered: registering different content under the same
name and version is refused, so an in-flight saga always continues with exactly the
definition it started with.
"""

from __future__ import annotations

from collections.abc import Iterator

from saga.definition._model import SagaDefinition
from saga.errors import DefinitionError


class DefinitionRegistry:
    """Definitions by ``(name, version)``; iteration yields them sorted by name and version."""

    def __init__(self, definitions: tuple[SagaDefinition, ...] = ()) -> None:
        self._by_key: dict[tuple[str, int], SagaDefinition] = {}
        for defn in definitions:
            self.register(defn)

    def register(self, definition: SagaDefinition) -> SagaDefinition:
        """Register ``definition``; registering the same content again is a no-op.

        Returns:
            The registered definition.

        Raises:
            DefinitionError: Another definition with the same name and version but a
                different content hash is already registered (``path="version"``).
        """
        key = (definition.name, definition.version)
        existing = self._by_key.get(key)
        if existing is None:
            self._by_key[key] = definition
            return definition
        if existing.content_hash != definition.content_hash:
            raise DefinitionError(
                f"definition {definition.name!r} version {definition.version} is already "
                f"registered with hash {existing.content_hash}; this one has hash "
                f"{definition.content_hash}. Changed definitions need a new version.",
                path="version",
            )
        return existing

    def get(self, name: str, version: int | None = None) -> SagaDefinition:
        """Return the definition ``name`` at ``version`` (the latest when ``None``).

        Raises:
            DefinitionError: No such definition (``path`` is ``name`` or ``version``).
        """
        if version is not None:
            found = self._by_key.get((name, version))
            if found is None:
                raise DefinitionError(
                    f"no definition {name!r} with version {version}", path="version"
                )
            return found
        versions = [v for (n, v) in self._by_key if n == name]
        if not versions:
            raise DefinitionError(f"no definition named {name!r}", path="name")
        return self._by_key[(name, max(versions))]

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def __iter__(self) -> Iterator[SagaDefinition]:
        return iter([self._by_key[k] for k in sorted(self._by_key)])

    def __len__(self) -> int:
        return len(self._by_key)
