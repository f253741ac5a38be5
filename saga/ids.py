"""Short saga ids for people, and finding a saga by a piece of its id.

Saga ids are UUIDv7: the first 48 bits are the creation time in milliseconds, so the
first 8 hex digits are the same for every saga started within about 18 hours. The
*last* 8 hex digits are random bits, so :func:`short_id` shows those; a unique prefix
or suffix of the id (with or without dashes) finds the saga again.
"""

from __future__ import annotations

from uuid import UUID

from sqlalchemy import or_, select

from saga.errors import SagaNotFound
from saga.store import SqlStore, translate_errors
from saga.store import tables as t

SHORT = 8
"""Hex digits in a short id."""

MIN_FRAGMENT = 4
"""The shortest piece of an id that is looked up."""


class AmbiguousId(SagaNotFound):
    """A piece of an id that more than one saga has."""

    code = "ambiguous_saga_id"


def short_id(saga_id: UUID | str) -> str:
    """The last :data:`SHORT` hex digits of a saga id (they differ between sagas)."""
    return str(saga_id).replace("-", "")[-SHORT:]


_GROUPS = (8, 4, 4, 4, 12)


def _dashed(plain: str, *, from_end: bool = False) -> str:
    """A run of hex digits with the dashes a UUID has at those places."""
    if from_end:
        return _dashed_by(plain[::-1], _GROUPS[::-1])[::-1]
    return _dashed_by(plain, _GROUPS)


def _dashed_by(plain: str, groups: tuple[int, ...]) -> str:
    out, i = [], 0
    for size in groups:
        if i >= len(plain):
            break
        out.append(plain[i : i + size])
        i += size
    return "-".join(out)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def find_saga_ids(store: SqlStore, fragment: str, *, limit: int = 20) -> list[str]:
    """Ids of sagas whose id starts or ends with ``fragment`` (sorted; at most ``limit``).

    A fragment of fewer than :data:`MIN_FRAGMENT` characters finds nothing.
    """
    text = fragment.strip().lower()
    if len(text.replace("-", "")) < MIN_FRAGMENT or not all(
        ch in "0123456789abcdef-" for ch in text
    ):
        return []
    try:
        return [str(UUID(text))] if await store.get_saga(str(UUID(text))) else []
    except ValueError:
        pass
    c = t.sagas.c
    plain = text.replace("-", "")
    conditions = [
        c.id.like(f"{_like_escape(_dashed(plain))}%", escape="\\"),
        c.id.like(f"%{_like_escape(_dashed(plain, from_end=True))}", escape="\\"),
    ]
    stmt = select(c.id).where(or_(*conditions)).order_by(c.id).limit(limit * 4)
    async with store.engine.connect() as conn:
        with translate_errors("find sagas by id"):
            found = [r[0] for r in await conn.execute(stmt)]
    exact = [
        sid
        for sid in found
        if sid.replace("-", "").startswith(plain) or sid.replace("-", "").endswith(plain)
    ]
    return exact[:limit]


async def resolve_saga_id(store: SqlStore, text: str) -> UUID:
    """The saga ``text`` names: a full id, or a unique prefix or suffix of one.

    Raises:
        SagaNotFound: No saga's id starts or ends with ``text``.
        AmbiguousId: Several do (the message names some of them).
    """
    try:
        return UUID(text.strip())
    except ValueError:
        pass
    found = await find_saga_ids(store, text, limit=5)
    if not found:
        raise SagaNotFound(f"no saga id starts or ends with {text!r}")
    if len(found) > 1:
        raise AmbiguousId(
            f"{len(found)} sagas match {text!r} ({', '.join(short_id(s) for s in found)}); "
            "give more of the id"
        )
    return UUID(found[0])
