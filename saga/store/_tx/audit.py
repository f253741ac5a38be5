"""Audit records, appended by one batch to each saga's hash chain.

The last record of every saga in the batch is found in one query (see
:mod:`saga.store._audit` for the hash itself); ``(saga_id, seq)`` is unique, so two
appenders that race for one saga cannot both extend its chain.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

from sqlalchemy import and_, bindparam, func, select, true
from sqlalchemy.dialects.postgresql import ARRAY

from saga.store import tables as t
from saga.store._audit import GENESIS, normalize_detail, record_hash
from saga.store._errors import translate_errors
from saga.store._records import AuditWrite, as_utc
from saga.store._tx.bulk import any_of, chunks, rows_insert, rows_params
from saga.store._tx.connection import TxConnection

_NOT_ACTIVE: Final = ("completed", "compensated", "aborted")
"""Terminal saga statuses (mirrors ``saga.engine.TERMINAL``; the store does not import it)."""


def _audit_heads_postgres() -> Any:
    """PostgreSQL: ``(saga_id, seq, hash)`` of the last record of each saga in ``:ids``.

    One backward index scan per saga (``LATERAL ... LIMIT 1``): cheaper than a
    ``GROUP BY`` over every record of the batch's sagas.
    """
    a = t.audit_log
    ids = (
        func.unnest(bindparam("ids", type_=ARRAY(a.c.saga_id.type)))
        .table_valued("saga_id")
        .render_derived(name="ids")
    )
    head = (
        select(a.c.seq, a.c.hash)
        .where(a.c.saga_id == ids.c.saga_id)
        .order_by(a.c.seq.desc())
        .limit(1)
        .lateral("head")
    )
    return select(ids.c.saga_id, head.c.seq, head.c.hash).select_from(ids.join(head, true()))


_AUDIT_HEADS: Final = _audit_heads_postgres()
"""Built once: SQLAlchemy works out a statement's cache key once per statement object."""


class AuditWrites(TxConnection):
    """Appending audit records; finding the work deferred in them."""

    async def append_audit(self, writes: Sequence[AuditWrite]) -> None:
        """Append records to each saga's hash chain, in the given order.

        One query finds the last record of every saga in the batch that this
        transaction has not loaded locked (those came with their heads). On PostgreSQL
        the saga rows this transaction has not locked yet are locked first (in id order)
        so concurrent appenders queue instead of failing; if they still race,
        ``(saga_id, seq)`` is unique and the loser gets ``ConcurrencyConflict``.
        """
        values = await self.audit_rows(writes)
        if not values:
            return
        with translate_errors("append audit records"):
            names = tuple(values[0])
            await self.conn.execute(
                rows_insert(t.audit_log, names, postgres=self.postgres),
                rows_params(t.audit_log, names, values, postgres=self.postgres),
            )

    async def audit_rows(self, writes: Sequence[AuditWrite]) -> list[dict[str, Any]]:
        """The ``saga_audit_log`` rows that append ``writes`` to their sagas' chains.

        Reads the heads it does not know yet (see :meth:`append_audit`) and remembers the
        new ones, so insert the rows in this transaction.
        """
        if not writes:
            return []
        saga_ids = sorted({w.saga_id for w in writes})
        known = self._audit_heads
        heads: dict[str, tuple[int, str]] = {
            i: head for i in saga_ids if i in known and (head := known[i]) is not None
        }
        missing = [i for i in saga_ids if i not in known]
        with translate_errors("append audit records"):
            unlocked = [i for i in missing if i not in self._locked]
            if self.postgres and unlocked:
                for cond in any_of(t.sagas.c.id, unlocked, postgres=True):
                    await self.conn.execute(
                        select(t.sagas.c.id).where(cond).order_by(t.sagas.c.id).with_for_update()
                    )
            if missing:
                for stmt, params in self._audit_heads_queries(missing):
                    rows = await self.conn.execute(stmt, params)
                    heads.update({r.saga_id: (r.seq, r.hash) for r in rows})
        values = []
        for w in writes:
            seq, prev = heads.get(w.saga_id, (0, GENESIS))
            seq += 1
            at = as_utc(w.recorded_at)
            detail = normalize_detail(w.detail)
            digest = record_hash(
                prev,
                saga_id=w.saga_id,
                seq=seq,
                recorded_at=at,
                kind=w.kind,
                step=w.step,
                attempt=w.attempt,
                actor=w.actor,
                detail=detail,
            )
            heads[w.saga_id] = (seq, digest)
            values.append(
                {
                    "saga_id": w.saga_id,
                    "seq": seq,
                    "recorded_at": at,
                    "kind": w.kind,
                    "step": w.step,
                    "attempt": w.attempt,
                    "actor": w.actor,
                    "detail": detail,
                    "prev_hash": prev,
                    "hash": digest,
                }
            )
        if self.postgres:
            # Their rows are locked now: the next append of this transaction goes on here.
            known.update({i: heads[i] for i in saga_ids})
        return values

    def _audit_heads_queries(self, saga_ids: Sequence[str]) -> Iterable[tuple[Any, dict[str, Any]]]:
        """Queries (and their parameters) for the last audit record of each saga."""
        a = t.audit_log
        if self.postgres:
            yield _AUDIT_HEADS, {"ids": list(saga_ids)}
            return
        for chunk in chunks(saga_ids):
            last = (
                select(a.c.saga_id, func.max(a.c.seq).label("seq"))
                .where(a.c.saga_id.in_(chunk))
                .group_by(a.c.saga_id)
                .subquery()
            )
            yield (
                select(a.c.saga_id, a.c.seq, a.c.hash).join(
                    last, and_(a.c.saga_id == last.c.saga_id, a.c.seq == last.c.seq)
                ),
                {},
            )

    async def saga_ids_with_deferred(self, participant: str, limit: int) -> list[str]:
        """Active sagas holding a command or compensation deferred for ``participant``."""
        stmt = (
            select(t.audit_log.c.saga_id, t.audit_log.c.detail, t.sagas.c.state)
            .join(t.sagas, t.sagas.c.id == t.audit_log.c.saga_id)
            .where(
                t.audit_log.c.kind.in_(("command.deferred", "compensation.deferred")),
                t.sagas.c.status.not_in(_NOT_ACTIVE),
            )
            .order_by(t.audit_log.c.saga_id)
        )
        found: list[str] = []
        with translate_errors("find deferred commands"):
            for r in await self.conn.execute(stmt):
                if found and found[-1] == r.saga_id:
                    continue
                if (r.detail or {}).get("participant") != participant:
                    continue
                steps = (r.state or {}).get("steps", {})
                if any(s.get("deferred") or s.get("compensation_deferred") for s in steps.values()):
                    found.append(r.saga_id)
                    if len(found) >= limit:
                        break
        return found
