"""Deterministic ids and seeds: the engine never draws random numbers.

Message ids keep the UUIDv7 layout (48-bit Unix milliseconds, version 7, RFC 4122
variant) so they sort by time like real UUIDv7s, but the remaining 74 bits come from a
SHA-256 of the parts that identify the message. Replaying the same decision therefore
produces the same ids, which is what makes outbox rows and receivers' dedupe idempotent.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from uuid import UUID


def _digest(parts: tuple[object, ...]) -> bytes:
    return hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()


def derive_message_id(now: datetime, *parts: object) -> UUID:
    """Return a UUIDv7-shaped id: time from ``now``, the other bits from ``parts``.

    Args:
        now: The decision's time (timezone-aware); its Unix milliseconds lead the id.
        *parts: What identifies the message, e.g. ``saga_id, step, attempt, kind, revision``.
    """
    unix_ms = int(now.timestamp() * 1000) & ((1 << 48) - 1)
    rand = int.from_bytes(_digest(parts)[:10], "big")
    rand_a = rand >> 68 & 0xFFF  # 12 bits
    rand_b = rand & ((1 << 62) - 1)  # 62 bits
    value = unix_ms << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return UUID(int=value)


def derive_seed(*parts: object) -> int:
    """Return a 64-bit seed derived from ``parts`` (e.g. the jitter seed of a retry)."""
    return int.from_bytes(_digest(parts)[:8], "big")
