"""What the engine returns: the new state plus everything the shell must do."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts import Envelope
from saga.engine._events import TimerKind
from saga.engine._state import SagaState


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Outgoing(_Frozen):
    """A command or compensation to publish (through the outbox)."""

    topic: str
    """Unprefixed topic, ``<participant>.commands``; the shell adds the deployment prefix."""
    participant: str
    """The participant addressed."""
    envelope: Envelope
    """The message."""


class TimerKey(_Frozen):
    """Identifies a timer: ``(kind, step, attempt)`` is unique per saga."""

    kind: TimerKind
    """What the timer is for."""
    step: str = ""
    """The step (``""`` for saga-level timers)."""
    attempt: int = 1
    """The attempt it belongs to."""


class TimerSpec(TimerKey):
    """A timer to set."""

    due_at: datetime
    """When it fires."""


class LockEffect(_Frozen):
    """A change to a lock key's queue that the store must make with the decision."""

    action: Literal["wait", "release"]
    """``wait``: join the key's queue (granted at once when the key is free);
    ``release``: leave it, as holder or waiter (the next waiter is granted)."""
    key: str
    """The lock key."""


class AuditEntry(_Frozen):
    """One line of the saga's audit log."""

    kind: str
    """What happened, e.g. ``command.sent``, ``status.changed``, ``event.ignored``."""
    step: str | None = None
    """The step concerned."""
    attempt: int | None = None
    """The attempt concerned."""
    actor: str | None = None
    """The operator, for operator commands."""
    detail: dict[str, Any] = Field(default_factory=dict)
    """Everything else, as JSON."""


class LifecycleEvent(_Frozen):
    """A lifecycle event for the ``saga.events`` topic (independent auditors)."""

    type: str
    """E.g. ``saga.started``, ``step.completed``, ``saga.compensating``, ``saga.stuck``."""
    step: str | None = None
    """The step concerned."""
    detail: dict[str, Any] = Field(default_factory=dict)
    """Details, as JSON."""


Outcome = Literal["applied", "ignored", "rejected", "dead_letter"]
"""``applied``: state changed. ``ignored``: stale, duplicate or unexpected (state unchanged).
``rejected``: an operator command illegal in this state (HTTP 409). ``dead_letter``: the
event cannot belong to this saga (unknown step or signal, no state)."""


class Decision(_Frozen):
    """The result of one :func:`transition`."""

    state: SagaState | None
    """The new state (the unchanged input unless ``applied``; ``None`` only when no saga
    exists and the event was not a start)."""
    commands: tuple[Outgoing, ...] = ()
    """Commands and compensations to send, in order."""
    timers_set: tuple[TimerSpec, ...] = ()
    """Timers to set."""
    timers_cancelled: tuple[TimerKey, ...] = ()
    """Timers to cancel."""
    audit: tuple[AuditEntry, ...] = ()
    """Audit log entries, in order."""
    events: tuple[LifecycleEvent, ...] = ()
    """Lifecycle events to publish."""
    locks: tuple[LockEffect, ...] = ()
    """Changes to lock queues (the definition's ``lock``)."""
    outcome: Outcome = "applied"
    """What became of the event."""
    reason: str | None = None
    """Why it was ignored, rejected or dead-lettered."""
