"""The saga definition data model: one frozen pydantic model for builder, YAML and JSON.

A definition is pure data (no callables), so it can be stored, hashed, diffed, drawn as a
graph and read back from the database to continue an in-flight saga with exactly the
version it started with. Semantic validation (pivot rules, cycles, expressions, ...) runs
when a :class:`SagaDefinition` is constructed and raises :class:`saga.errors.DefinitionError`
naming the path of the offending field.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from saga.definition._hash import content_hash_of

NAME_PATTERN: Final = r"^[A-Za-z][A-Za-z0-9_-]*$"
"""Step, group and saga names: an identifier (also used as Mermaid node ids)."""

UNBOUNDED_RETRY_THRESHOLD: Final = 1000
"""A retriable step's ``max_attempts`` must be ``None`` or at least this large."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StepKind(StrEnum):
    """What a step promises about undoing it (Garcia-Molina & Salem)."""

    COMPENSATABLE = "compensatable"
    """Has a compensating command; only allowed before the pivot."""
    PIVOT = "pivot"
    """The point of no return: no compensation; once it completes the saga only goes forward."""
    RETRIABLE = "retriable"
    """After the pivot; retried until it succeeds, never compensated."""
    WAIT = "wait"
    """Waits for a named external signal (e.g. a human approval), with a timeout."""


@dataclass(frozen=True)
class KindTraits:
    """What steps of one kind do; code reads these instead of comparing kinds."""

    sends_command: bool
    """Sends a command to a participant and awaits its reply (else it waits for a signal)."""
    compensatable: bool = False
    """Has a compensating command, sent when the saga compensates."""
    pivot: bool = False
    """The point of no return (at most one per saga)."""
    retries_forever: bool = False
    """Retried until it succeeds: every failure is retriable, the default retry unbounded."""
    placement: Literal["before_pivot", "after_pivot", "any"] = "any"
    """Where the step may stand relative to the pivot (``after_pivot`` needs a pivot)."""
    shape: tuple[str, str] = ('["', '"]')
    """Brackets of its node in Mermaid graphs."""

    @property
    def waits_for_signal(self) -> bool:
        """Waits for a named external signal (sends nothing, gets no replies)."""
        return not self.sends_command


KIND_TRAITS: Final[Mapping[StepKind, KindTraits]] = {
    StepKind.COMPENSATABLE: KindTraits(
        sends_command=True, compensatable=True, placement="before_pivot"
    ),
    StepKind.PIVOT: KindTraits(sends_command=True, pivot=True, shape=('{{"', '"}}')),
    StepKind.RETRIABLE: KindTraits(
        sends_command=True, retries_forever=True, placement="after_pivot", shape=('(["', '"])')
    ),
    StepKind.WAIT: KindTraits(sends_command=False, shape=('[/"', '"/]')),
}
"""Step kind -> what its steps do: the one place a new kind declares its behaviour."""


class OnTimeout(StrEnum):
    """What a wait step does when its signal does not arrive in time."""

    FAIL = "fail"
    """The step fails: compensation starts (before the pivot) or the saga is stuck (after)."""
    CONTINUE = "continue"
    """The step is skipped and the saga goes on."""


class RetryPolicy(_Frozen):
    """When and how often a failed command (or compensation) is sent again.

    Exponential back-off: attempt ``n`` (1-based) that failed waits
    ``min(max_delay_ms, initial_delay_ms * backoff ** (n - 1))`` milliseconds, reduced by up
    to ``jitter`` of itself. The jitter comes from a seed passed in, so the engine stays
    deterministic.
    """

    max_attempts: int | None = Field(default=3, ge=1)
    """Attempts in total, the first included; ``None`` means unbounded."""
    initial_delay_ms: int = Field(default=1000, ge=0)
    """Delay before the second attempt."""
    backoff: float = Field(default=2.0, ge=1.0, le=100.0)
    """Multiplier applied to the delay after each failed attempt."""
    max_delay_ms: int = Field(default=60_000, ge=0)
    """Upper bound of any delay computed by this policy."""
    jitter: float = Field(default=0.2, ge=0.0, le=1.0)
    """Fraction of the delay that is randomly (but deterministically, from the seed) removed."""
    retriable_codes: tuple[str, ...] | None = None
    """Error codes that are retried; ``None`` trusts the participant's ``retriable`` flag.

    When set, the list decides (the participant's flag is ignored for coded errors);
    timeouts, which have no code, are always retriable.
    """

    @model_validator(mode="after")
    def _check_delays(self) -> RetryPolicy:
        if self.max_delay_ms < self.initial_delay_ms:
            raise ValueError("max_delay_ms must be >= initial_delay_ms")
        return self

    def next_delay_ms(
        self, attempt: int, error_code: str | None, retriable: bool, seed: int
    ) -> int | None:
        """Return the delay before the next attempt, or ``None`` to give up.

        Args:
            attempt: The attempt that just failed, counted from 1 within this policy's budget.
            error_code: The participant's error code; ``None`` for a timeout.
            retriable: The participant's ``retriable`` flag (``True`` for timeouts).
            seed: Jitter seed; the same seed always yields the same delay.

        Returns:
            Milliseconds to wait before the next attempt, or ``None`` when the policy gives up.
        """
        if error_code is not None and self.retriable_codes is not None:
            if error_code not in self.retriable_codes:
                return None
        elif not retriable:
            return None
        if self.max_attempts is not None and attempt >= self.max_attempts:
            return None
        exponent = min(max(attempt - 1, 0), 64)
        delay = min(float(self.max_delay_ms), self.initial_delay_ms * self.backoff**exponent)
        if self.jitter:
            digest = hashlib.sha256(f"{seed}:{attempt}".encode()).digest()
            fraction = int.from_bytes(digest[:8], "big") / 2**64
            delay -= delay * self.jitter * fraction
        return int(delay)


UNBOUNDED: Final = RetryPolicy(max_attempts=None)
"""The default retry policy of retriable steps: retry until it succeeds."""

DEFAULT_COMPENSATION_RETRY: Final = RetryPolicy(max_attempts=5)
"""The default retry policy of compensations (then the saga is stuck)."""


class Step(_Frozen):
    """One step of a saga: a command to a participant, or a wait for a signal."""

    name: str = Field(pattern=NAME_PATTERN, max_length=200)
    """Unique name within the definition."""
    kind: StepKind
    """Compensatable, pivot, retriable or wait."""
    participant: str | None = Field(default=None, pattern=NAME_PATTERN)
    """Participant service receiving the command on ``<participant>.commands``."""
    command: str | None = None
    """Message type of the command, e.g. ``inventory.reserve``."""
    compensation: str | None = None
    """Message type of the compensating command; compensatable steps only."""
    compensation_input: dict[str, str] | None = None
    """Compensation payload: payload key -> JMESPath over the saga context.

    When absent, the compensation gets the command's payload plus the step's output
    under ``output`` (``null`` when the outcome is unknown).
    """
    signal: str | None = None
    """Name of the external signal a wait step waits for."""
    input: dict[str, str] = Field(default_factory=dict)
    """Command payload: payload key -> JMESPath over the saga context."""
    output: dict[str, str] = Field(default_factory=dict)
    """Context updates: context key -> JMESPath over the reply's output (or signal data)."""
    when: str | None = None
    """JMESPath condition over the context; the step is skipped when it is falsy."""
    depends_on: tuple[str, ...] = ()
    """Names of the steps that must succeed (or be skipped) before this one starts."""
    group: str | None = Field(default=None, pattern=NAME_PATTERN)
    """The parallel group the step was declared in (informational, for graphs)."""
    retry: RetryPolicy = RetryPolicy()
    """Retry policy of the command (retriable steps default to unbounded)."""
    compensation_retry: RetryPolicy = DEFAULT_COMPENSATION_RETRY
    """Retry policy of the compensation; when it gives up the saga is stuck."""
    timeout_ms: int | None = Field(default=None, ge=1)
    """Time to wait for a reply (or a signal); a timed-out outcome is unknown."""
    on_timeout: OnTimeout = OnTimeout.FAIL
    """Wait steps: what happens when the signal does not arrive in time."""

    @model_validator(mode="before")
    @classmethod
    def _retriable_default(cls, data: Any) -> Any:
        # Steps retried until they succeed (retriable ones) have a different default.
        # A ``retry`` mapping that leaves out ``max_attempts`` keeps that default too:
        # writing ``retry: {initial_delay: 2s}`` must not bound the attempts to 3.
        if not isinstance(data, dict):
            return data
        try:
            traits = KIND_TRAITS[StepKind(str(data.get("kind")))]
        except ValueError:
            return data  # pydantic reports the bad kind
        if not traits.retries_forever:
            return data
        retry = data.get("retry")
        if retry is None:
            return {**data, "retry": UNBOUNDED}
        if isinstance(retry, dict) and "max_attempts" not in retry:
            return {**data, "retry": {**retry, "max_attempts": None}}
        return data

    @property
    def traits(self) -> KindTraits:
        """What this step's kind does."""
        return KIND_TRAITS[self.kind]

    @property
    def participant_name(self) -> str:
        """The participant, for command steps (raises ``ValueError`` for wait steps)."""
        if self.participant is None:
            raise ValueError(f"step {self.name!r} has no participant")
        return self.participant


class IdempotencyFrom(StrEnum):
    """Where a trigger takes the idempotency key of the saga an event starts."""

    MESSAGE_ID = "message_id"
    """The event's ``message_id`` field (a producer's resend keeps it)."""
    OFFSET = "offset"
    """The record's topic, partition and offset (for events without a message id)."""


class Trigger(_Frozen):
    """Start a saga for every matching event on a topic, once per event."""

    topic: str = Field(pattern=r"^[A-Za-z0-9._-]{1,240}$")
    """The topic, without the deployment's prefix (which is put before it)."""
    type: str | None = None
    """Only events whose ``type`` field equals this."""
    when: str | None = None
    """Only events for which this JMESPath condition over the event is truthy."""
    idempotency: IdempotencyFrom = IdempotencyFrom.MESSAGE_ID
    """Where the key comes from that makes each event start one saga at most."""
    input: dict[str, str] = Field(default_factory=dict)
    """The saga's input: input key -> JMESPath over the event."""


class LockRelease(StrEnum):
    """When a saga holding a lock key lets the next saga on that key start."""

    FINAL = "final"
    """When it is completed, compensated or aborted (a stuck saga keeps the lock)."""
    FINAL_OR_STUCK = "final_or_stuck"
    """Also when it gets stuck (it gives the lock up for good, even if resumed)."""


OPTIONAL_FIELDS: Final = ("input_schema", "triggers", "lock", "lock_release", "lock_timeout_ms")
"""Fields left out of a definition's canonical form while unset, so that definitions
written before they existed keep their content hash."""


class SagaDefinition(_Frozen):
    """A named, versioned saga: a DAG of steps plus an optional deadline."""

    name: str = Field(pattern=NAME_PATTERN, max_length=200)
    """Name of the saga type, e.g. ``order_placement``."""
    version: int = Field(ge=1)
    """Version; a changed definition needs a new version."""
    description: str = ""
    """Free text for humans."""
    deadline_ms: int | None = Field(default=None, ge=1)
    """Time from start after which a saga that has not passed its pivot is compensated."""
    steps: tuple[Step, ...]
    """The steps, in declaration order (dependencies make the DAG)."""
    input_schema: dict[str, Any] | None = None
    """JSON Schema of the saga's input; every start is validated against it."""
    triggers: tuple[Trigger, ...] = ()
    """Events that start a saga of this definition."""
    lock: str | None = None
    """JMESPath over the input giving a lock key (an account id, say): at most one saga
    of this definition per key runs at a time; the others wait, in arrival order."""
    lock_release: LockRelease = LockRelease.FINAL
    """When the saga holding the key lets the next one start."""
    lock_timeout_ms: int | None = Field(default=None, ge=1)
    """A saga that waits for its lock longer than this ends ``aborted`` without running."""

    @model_validator(mode="after")
    def _validate(self) -> SagaDefinition:
        from saga.definition._validate import validate_definition

        validate_definition(self)
        return self

    def canonical(self) -> dict[str, Any]:
        """The JSON form that is stored and hashed (unset optional fields left out)."""
        data = self.model_dump(mode="json")
        for name in OPTIONAL_FIELDS:
            default = type(self).model_fields[name].get_default(call_default_factory=True)
            if data.get(name) in (None, (), [], default):
                data.pop(name, None)
        return data

    @property
    def content_hash(self) -> str:
        """SHA-256 (hex) of the canonical JSON form; equal definitions have equal hashes."""
        return content_hash_of(self.canonical())

    def step(self, name: str) -> Step:
        """Return the step called ``name`` (raises ``KeyError`` when unknown)."""
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    def has_step(self, name: str) -> bool:
        """Whether a step called ``name`` exists."""
        return any(step.name == name for step in self.steps)

    @property
    def pivot(self) -> Step | None:
        """The pivot step, if any."""
        return next((s for s in self.steps if s.traits.pivot), None)


def commands_topic(participant: str, prefix: str = "") -> str:
    """Return the commands topic of a participant, e.g. ``inventory.commands``."""
    return f"{prefix}{participant}.commands"
