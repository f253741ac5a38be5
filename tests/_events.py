"""Lifecycle events of a ``trip`` saga, for the auditor's tests (unit and integration)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from contracts import Envelope, MessageKind


def trip_event(
    saga_id: UUID,
    type_: str,
    revision: int,
    step: str | None = None,
    *,
    status: str = "whatever",
    **payload: Any,
) -> Envelope:
    """The event ``type_`` of saga ``saga_id`` (``trip`` v1) at ``revision``."""
    return Envelope(
        saga_id=saga_id,
        saga_type="trip",
        saga_version=1,
        step=step,
        kind=MessageKind.EVENT,
        type=type_,
        payload={"status": status, "revision": revision, **payload},
    )
