"""The page cursor of saga listings: an opaque text for a keyset position.

The store pages on ``(created_at, saga id)``; the cursor is that pair as compact JSON
in unpadded URL-safe base64, so it travels in a query string as it is. Anything else
decodes to ``ValueError``, never to a position.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from uuid import UUID


def encode_cursor(position: tuple[datetime, str]) -> str:
    """An opaque cursor for the keyset position ``(created_at, saga id)``."""
    at, saga_id = position
    raw = json.dumps([at.isoformat(), saga_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The keyset position an :func:`encode_cursor` cursor stands for.

    Raises:
        ValueError: The cursor was not made by :func:`encode_cursor`.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, saga_id = json.loads(raw)
        return datetime.fromisoformat(at), str(UUID(saga_id))
    except (ValueError, TypeError) as exc:
        raise ValueError("not a cursor from a previous page") from exc
