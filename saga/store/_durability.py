"""Whether a database keeps every committed transaction through a crash or power loss.

The exactly-once figures rest on it: the relay publishes an outbox row's command once
the row's transaction is committed, so a database that forgets a committed transaction
on a crash replays it afterwards and its commands are published a second time.
:func:`durability` reads the settings that decide it:

* PostgreSQL: ``fsync`` and ``full_page_writes`` on, ``synchronous_commit`` not ``off``
  (``on``, ``local``, ``remote_write`` or ``remote_apply``);
* SQLite: ``PRAGMA synchronous`` ``FULL`` or ``EXTRA``, and a journal on disk
  (``journal_mode`` not ``off`` or ``memory``). ``synchronous`` is a setting of the
  connection: the answer is that of the engine asked (see
  :func:`saga.store.create_engine`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from saga.errors import ConfigError
from saga.store._engine import SQLITE_SYNCHRONOUS
from saga.store._errors import translate_errors

POSTGRES_SETTINGS: Final = ("fsync", "synchronous_commit", "full_page_writes")
"""The PostgreSQL settings :func:`durability` reads, in the order it shows them."""

SQLITE_SETTINGS: Final = ("journal_mode", "synchronous")
"""The SQLite pragmas :func:`durability` reads, in the order it shows them."""

_CRASH: Final = "a database crash"
_OS_CRASH: Final = "an OS crash or power loss"
_POWER_LOSS: Final = "a power loss"
_WORST_FIRST: Final = (_CRASH, _OS_CRASH, _POWER_LOSS)


@dataclass(frozen=True)
class Durability:
    """The durability settings of one database and what they give."""

    backend: str
    """``postgresql`` or ``sqlite``."""
    settings: Mapping[str, str] = field(hash=False)
    """The settings read, e.g. ``{"fsync": "on", ...}`` (lower case)."""
    durable: bool
    """Whether every committed transaction survives a crash and a power loss."""
    risks: tuple[str, ...] = ()
    """Why not, one sentence per setting that loses commits (empty when durable)."""
    lost_after: str = ""
    """The mildest event after which commits may be gone (``""`` when durable)."""

    @classmethod
    def from_settings(cls, backend: str, settings: Mapping[str, str]) -> Durability:
        """Judge the settings of a ``postgresql`` or ``sqlite`` database.

        Values are compared case-insensitively; SQLite's ``synchronous`` may be the
        number ``PRAGMA synchronous`` returns (0 to 3) or its name.

        Raises:
            ConfigError: Another backend.
        """
        values = {k: str(v).strip().lower() for k, v in settings.items()}
        found: list[tuple[str, str]] = []  # (after what, why)
        if backend == "postgresql":
            if values.get("synchronous_commit", "off") == "off":
                found.append(
                    (
                        _CRASH,
                        "synchronous_commit=off acknowledges commits before they are written",
                    )
                )
            if values.get("fsync") != "on":
                found.append((_OS_CRASH, "fsync=off never flushes to disk"))
            if values.get("full_page_writes") != "on":
                found.append((_POWER_LOSS, "full_page_writes=off risks torn pages"))
        elif backend == "sqlite":
            sync = values.get("synchronous", "")
            if sync.isdigit() and int(sync) < len(SQLITE_SYNCHRONOUS):
                values["synchronous"] = sync = SQLITE_SYNCHRONOUS[int(sync)].lower()
            journal = values.get("journal_mode", "")
            if journal in ("off", "memory", ""):
                found.append((_CRASH, f"journal_mode={journal or '?'} keeps no journal on disk"))
            if sync == "off":
                found.append((_OS_CRASH, "synchronous=off never syncs to disk"))
            elif sync not in ("full", "extra"):
                found.append(
                    (_POWER_LOSS, f"synchronous={sync or '?'} does not sync at each commit")
                )
        else:
            raise ConfigError(f"durability: unsupported database backend {backend!r}")
        after = next((w for w in _WORST_FIRST if any(a == w for a, _ in found)), "")
        return cls(
            backend=backend,
            settings=values,
            durable=not found,
            risks=tuple(why for _, why in found),
            lost_after=after,
        )

    def describe(self) -> str:
        """One line, e.g. ``postgresql fsync=on synchronous_commit=on ... (durable)``."""
        shown = " ".join(f"{k}={v}" for k, v in self.settings.items())
        if self.durable:
            return f"{self.backend} {shown} (durable)"
        return (
            f"{self.backend} {shown} (NOT durable: figures do not hold after "
            f"{self.lost_after}; {'; '.join(self.risks)})"
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: ``backend``, ``settings``, ``durable``, ``description``."""
        return {
            "backend": self.backend,
            "settings": dict(self.settings),
            "durable": self.durable,
            "description": self.describe(),
        }


async def durability(engine: AsyncEngine) -> Durability:
    """Read the durability settings of ``engine``'s database (see the module doc).

    Raises:
        StoreUnavailable: The database cannot be reached.
        ConfigError: Neither PostgreSQL nor SQLite.
    """
    backend = engine.dialect.name
    if backend == "postgresql":
        statements = {name: f"SHOW {name}" for name in POSTGRES_SETTINGS}
    elif backend == "sqlite":
        statements = {name: f"PRAGMA {name}" for name in SQLITE_SETTINGS}
    else:
        raise ConfigError(f"durability: unsupported database backend {backend!r}")
    settings: dict[str, str] = {}
    with translate_errors("read the durability settings"):
        async with engine.connect() as conn:
            for name, sql in statements.items():
                settings[name] = str((await conn.execute(text(sql))).scalar_one())
    return Durability.from_settings(backend, settings)
