"""A typed Python builder producing the same :class:`SagaDefinition` as the YAML loader.

Example::

    from saga.definition import SagaBuilder, compensatable, pivot, retriable

    definition = (
        SagaBuilder("order_placement", version=1)
        .add(compensatable("create_order", participant="orders",
                           command="orders.create", compensation="orders.cancel"))
        .parallel("reserve", [
            compensatable("reserve_stock", participant="inventory",
                          command="inventory.reserve", compensation="inventory.release"),
            compensatable("authorize_payment", participant="payments",
                          command="payments.authorize", compensation="payments.void"),
        ])
        .add(pivot("capture_payment", participant="payments", command="payments.capture"))
        .add(retriable("ship", participant="shipping", command="shipping.ship"))
        .build()
    )

Like the loader, the builder makes each stage depend on the previous one unless a step
names its ``depends_on`` explicitly, and a parallel group's members all depend on the
previous stage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from pydantic import BaseModel

from saga.definition._loader import definition_from_dict
from saga.definition._model import OnTimeout, RetryPolicy, SagaDefinition, StepKind
from saga.errors import DefinitionError


@dataclass(frozen=True, kw_only=True)
class StepSpec:
    """A step as given to the builder; ``None`` fields take the model's defaults."""

    name: str
    """Unique step name."""
    kind: StepKind
    """The step kind."""
    participant: str | None = None
    """Participant receiving the command."""
    command: str | None = None
    """Command message type."""
    compensation: str | None = None
    """Compensation message type (compensatable steps)."""
    compensation_input: Mapping[str, str] | None = None
    """Compensation payload mapping (compensatable steps); see ``Step.compensation_input``."""
    signal: str | None = None
    """Signal name (wait steps)."""
    input: Mapping[str, str] = field(default_factory=dict)
    """Payload key -> JMESPath over the context."""
    output: Mapping[str, str] = field(default_factory=dict)
    """Context key -> JMESPath over the reply output."""
    when: str | None = None
    """JMESPath condition; skipped when falsy."""
    depends_on: Sequence[str] | None = None
    """Explicit dependencies; ``None`` means the previous stage."""
    retry: RetryPolicy | None = None
    """Retry policy of the command."""
    compensation_retry: RetryPolicy | None = None
    """Retry policy of the compensation."""
    timeout_ms: int | None = None
    """Reply (or signal) timeout."""
    on_timeout: OnTimeout | None = None
    """Wait steps: fail or continue on timeout."""

    def to_dict(self, depends_on: Sequence[str], group: str | None) -> dict[str, Any]:
        """Return the model-shaped dict of this step, defaults left to the model."""
        data: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "input": dict(self.input),
            "output": dict(self.output),
            "depends_on": list(self.depends_on if self.depends_on is not None else depends_on),
        }
        optional = {
            "participant": self.participant,
            "command": self.command,
            "compensation": self.compensation,
            "compensation_input": dict(self.compensation_input)
            if self.compensation_input is not None
            else None,
            "signal": self.signal,
            "when": self.when,
            "retry": self.retry,
            "compensation_retry": self.compensation_retry,
            "timeout_ms": self.timeout_ms,
            "on_timeout": self.on_timeout,
            "group": group,
        }
        data.update({k: v for k, v in optional.items() if v is not None})
        return data


def compensatable(
    name: str,
    *,
    participant: str,
    command: str,
    compensation: str,
    input: Mapping[str, str] | None = None,
    compensation_input: Mapping[str, str] | None = None,
    output: Mapping[str, str] | None = None,
    when: str | None = None,
    depends_on: Sequence[str] | None = None,
    retry: RetryPolicy | None = None,
    compensation_retry: RetryPolicy | None = None,
    timeout_ms: int | None = None,
) -> StepSpec:
    """A step with a compensating command (before the pivot)."""
    return StepSpec(
        name=name,
        kind=StepKind.COMPENSATABLE,
        participant=participant,
        command=command,
        compensation=compensation,
        compensation_input=compensation_input,
        input=input or {},
        output=output or {},
        when=when,
        depends_on=depends_on,
        retry=retry,
        compensation_retry=compensation_retry,
        timeout_ms=timeout_ms,
    )


def pivot(
    name: str,
    *,
    participant: str,
    command: str,
    input: Mapping[str, str] | None = None,
    output: Mapping[str, str] | None = None,
    when: str | None = None,
    depends_on: Sequence[str] | None = None,
    retry: RetryPolicy | None = None,
    timeout_ms: int | None = None,
) -> StepSpec:
    """The pivot: no compensation; once it completes the saga only goes forward."""
    return StepSpec(
        name=name,
        kind=StepKind.PIVOT,
        participant=participant,
        command=command,
        input=input or {},
        output=output or {},
        when=when,
        depends_on=depends_on,
        retry=retry,
        timeout_ms=timeout_ms,
    )


def retriable(
    name: str,
    *,
    participant: str,
    command: str,
    input: Mapping[str, str] | None = None,
    output: Mapping[str, str] | None = None,
    when: str | None = None,
    depends_on: Sequence[str] | None = None,
    retry: RetryPolicy | None = None,
    timeout_ms: int | None = None,
) -> StepSpec:
    """A step after the pivot, retried until it succeeds (default policy: unbounded)."""
    return StepSpec(
        name=name,
        kind=StepKind.RETRIABLE,
        participant=participant,
        command=command,
        input=input or {},
        output=output or {},
        when=when,
        depends_on=depends_on,
        retry=retry,
        timeout_ms=timeout_ms,
    )


def wait(
    name: str,
    *,
    signal: str,
    timeout_ms: int,
    on_timeout: OnTimeout = OnTimeout.FAIL,
    output: Mapping[str, str] | None = None,
    when: str | None = None,
    depends_on: Sequence[str] | None = None,
) -> StepSpec:
    """A step waiting for the external signal ``signal`` (e.g. a human approval)."""
    return StepSpec(
        name=name,
        kind=StepKind.WAIT,
        signal=signal,
        timeout_ms=timeout_ms,
        on_timeout=on_timeout,
        output=output or {},
        when=when,
        depends_on=depends_on,
    )


class SagaBuilder:
    """Accumulates stages and builds a validated :class:`SagaDefinition`."""

    def __init__(
        self,
        name: str,
        *,
        version: int = 1,
        description: str = "",
        deadline_ms: int | None = None,
        input_model: type[BaseModel] | None = None,
        input_schema: dict[str, Any] | None = None,
        lock: str | None = None,
        lock_release: str = "final",
        lock_timeout_ms: int | None = None,
    ) -> None:
        """Start a definition.

        Args:
        name: The saga type.
        version: Its version.
        description: Free text.
        deadline_ms: Time after which a saga that has not passed its pivot compensates.
        input_model: A pydantic model of the input; its JSON Schema becomes the
            definition's ``input_schema``, which every start is validated against.
        input_schema: The JSON Schema itself (instead of ``input_model``).
        lock: JMESPath over the input giving a lock key: one saga per key at a time.
        lock_release: ``final`` or ``final_or_stuck``: when the holder lets the next go.
        lock_timeout_ms: A saga waiting longer than this for its lock ends aborted.
        """
        if input_model is not None and input_schema is not None:
            raise DefinitionError("give input_model or input_schema, not both", path="input_schema")
        if input_model is not None:
            input_schema = input_model.model_json_schema()
        self._header: dict[str, Any] = {
            "name": name,
            "version": version,
            "description": description,
            "deadline_ms": deadline_ms,
            "input_schema": input_schema,
            "lock": lock,
            "lock_release": lock_release,
            "lock_timeout_ms": lock_timeout_ms,
        }
        self._triggers: list[dict[str, Any]] = []
        self._steps: list[dict[str, Any]] = []
        self._previous: list[str] = []

    def add(self, *specs: StepSpec) -> Self:
        """Append each spec as its own stage (each depends on the one before)."""
        for spec in specs:
            self._steps.append(spec.to_dict(self._previous, None))
            self._previous = [spec.name]
        return self

    def parallel(self, name: str, specs: Sequence[StepSpec]) -> Self:
        """Append a parallel group: members run at once; the next stage waits for all."""
        for spec in specs:
            self._steps.append(spec.to_dict(self._previous, name))
        self._previous = [spec.name for spec in specs]
        return self

    def trigger(
        self,
        topic: str,
        *,
        type: str | None = None,
        when: str | None = None,
        input: dict[str, str] | None = None,
        idempotency: str = "message_id",
    ) -> Self:
        """Start a saga for every matching event on ``topic`` (see :class:`Trigger`)."""
        self._triggers.append(
            {
                "topic": topic,
                "type": type,
                "when": when,
                "input": dict(input or {}),
                "idempotency": idempotency,
            }
        )
        return self

    def build(self) -> SagaDefinition:
        """Return the definition.

        Raises:
            DefinitionError: The definition is invalid; ``path`` names the field.
        """
        return definition_from_dict(
            {**self._header, "steps": self._steps, "triggers": self._triggers}
        )
