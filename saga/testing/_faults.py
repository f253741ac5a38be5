"""Fault injection for participants' replies: duplicates, drops, delays, reordering.

:class:`FaultInjector` is a :data:`saga.participant.ReplyInterceptor`: pass it as
``Participant(..., interceptor=FaultInjector(ReplyFaults(...)))`` and every batch of
replies goes through it before it is sent (simple mode) or written to the outbox
(transactional mode). Decisions come from a seeded :class:`random.Random`, so a failing
chaos run can be replayed with the same seed.

In transactional mode a delay is spent inside the batch's database transaction (it
delays the commit and therefore the relay), and a dropped reply is gone for good: the
command is still marked handled, exactly like a reply lost after the fact.

Dead letters pass through untouched: the faults model an unreliable *participant*, not
a lossy DLQ.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from contracts import new_message_id
from saga.participant import OutgoingRecord


@dataclass(frozen=True, kw_only=True)
class ReplyFaults:
    """Which faults to inject, and how often."""

    seed: int = 0
    """Seed of the random decisions (same seed, same faults)."""
    duplicate_rate: float = 0.0
    """Probability that a reply is sent twice (same message id: a redelivery)."""
    drop_first: int = 0
    """Drop the first N replies outright (the steps time out)."""
    drop_rate: float = 0.0
    """Probability that any later reply is dropped."""
    delay_ms: int = 0
    """Hold each batch of replies back by this long."""
    delay_jitter_ms: int = 0
    """Plus a random extra delay up to this long."""
    reorder: bool = False
    """Shuffle each batch's replies."""

    def __post_init__(self) -> None:
        for name in ("duplicate_rate", "drop_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        if min(self.drop_first, self.delay_ms, self.delay_jitter_ms) < 0:
            raise ValueError("drop_first, delay_ms and delay_jitter_ms must be >= 0")


INJECTED_HEADER: Final = "saga.fault"
"""Kafka header on the copies a :class:`FaultInjector` adds (value ``duplicate``)."""


@dataclass
class FaultInjector:
    """Apply :class:`ReplyFaults` to each batch of outgoing replies."""

    faults: ReplyFaults = field(default_factory=ReplyFaults)
    """The faults to inject."""
    dropped: list[OutgoingRecord] = field(default_factory=list)
    """Replies dropped so far (for assertions)."""
    duplicated: list[OutgoingRecord] = field(default_factory=list)
    """Replies sent twice so far."""

    def __post_init__(self) -> None:
        self._random = random.Random(self.faults.seed)
        self._replies_seen = 0

    async def __call__(self, records: Sequence[OutgoingRecord]) -> Sequence[OutgoingRecord]:
        """Return the records to send (and sleep for the configured delay)."""
        f = self.faults
        out: list[OutgoingRecord] = []
        for record in records:
            if record.envelope is None:  # a dead letter
                out.append(record)
                continue
            self._replies_seen += 1
            if self._replies_seen <= f.drop_first or self._random.random() < f.drop_rate:
                self.dropped.append(record)
                continue
            out.append(record)
            if self._random.random() < f.duplicate_rate:
                self.duplicated.append(record)
                # Same bytes and message id; a fresh outbox row id (the outbox is unique),
                # and a header that tells checkers this copy was made on purpose.
                out.append(
                    replace(
                        record,
                        row_id=str(new_message_id()),
                        headers=(*record.headers, (INJECTED_HEADER, b"duplicate")),
                    )
                )
        if f.reorder:
            self._random.shuffle(out)
        delay = f.delay_ms + (
            self._random.randint(0, f.delay_jitter_ms) if f.delay_jitter_ms else 0
        )
        if delay and out:
            await asyncio.sleep(delay / 1000)
        return out
