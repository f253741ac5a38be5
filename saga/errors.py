"""The one exception tree of saga-coordinator.

::

    SagaError
    ├── DefinitionError        a definition is invalid; ``.path`` names the offending field
    ├── ContractError          a message is malformed; the shell sends it to the DLQ
    │   └── InvalidInput       a saga's input fails its definition's schema; ``.path``
    ├── TransitionError        an operator command is illegal for the saga's state
    │   └── InvalidCommand     a command names a step or signal the saga does not have
    ├── StoreError
    │   ├── StoreUnavailable   the database cannot be reached (retry with back-off)
    │   ├── ConcurrencyConflict  optimistic version check failed
    │   ├── DuplicateMessage   an id is taken already (a saga id, an outbox message id)
    │   ├── SagaNotFound       no saga with that id
    │   ├── DefinitionNotFound no definition with that name (and version)
    │   ├── DefinitionConflict a definition with the same name and version but another hash
    │   └── PartitionFenced    another member claimed the partition: the batch must not commit
    ├── TransportError         Kafka cannot be reached or refused a request
    │   ├── ProducerFenced     another relay with the same transactional id took over
    │   ├── RecordRefused      Kafka refused one record itself (too large, no such topic)
    │   └── AuditorUnavailable the auditor's web view cannot be reached or answered nonsense
    ├── NotReady               the deployment is not set up far enough yet (retry later)
    └── ConfigError            settings are missing or invalid

Errors carry their context as attributes (``saga_id``, ``step``, ``message_id``,
``path``) so callers never parse message text.
"""

from __future__ import annotations

from typing import Any, ClassVar


class _RetriableAlias:
    """``retryable``, the former spelling of :attr:`SagaError.retriable`."""

    def __get__(self, obj: object, owner: type[SagaError]) -> bool:
        return owner.retriable


class SagaError(Exception):
    """Base class of every error raised by saga-coordinator."""

    retriable: ClassVar[bool] = False
    """Whether retrying the same operation later may succeed."""

    retryable: ClassVar[_RetriableAlias] = _RetriableAlias()
    """Deprecated spelling of :attr:`retriable`, kept for existing callers."""

    code: ClassVar[str] = "saga_error"
    """A stable machine-readable code (used in API error bodies and DLQ reasons)."""

    def __init__(
        self,
        message: str,
        *,
        saga_id: str | None = None,
        step: str | None = None,
        message_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.saga_id = saga_id
        self.step = step
        self.message_id = message_id

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        former = cls.__dict__.get("retryable")
        if former is not None and not isinstance(former, _RetriableAlias):
            # A subclass written with the former spelling: that value is its retriable.
            cls.retriable = bool(former)
            cls.retryable = _RetriableAlias()


class DefinitionError(SagaError):
    """A saga definition is invalid; ``path`` names the offending field, e.g. ``steps[2].retry``."""

    code = "invalid_definition"

    def __init__(self, message: str, *, path: str = "", **context: str | None) -> None:
        super().__init__(f"{path}: {message}" if path else message, **context)
        self.path = path
        self.reason = message


class ContractError(SagaError):
    """A message does not match its contract (not JSON, wrong schema, unknown type)."""

    code = "malformed_message"


class InvalidInput(ContractError):
    """A saga's input does not match its definition's input schema.

    ``path`` names the offending field, e.g. ``input.lines[0].qty``.
    """

    code = "invalid_input"

    def __init__(self, message: str, *, path: str = "input", **context: str | None) -> None:
        super().__init__(f"{path}: {message}", **context)
        self.path = path
        self.reason = message


class TransitionError(SagaError):
    """An operator command is not allowed in the saga's current state."""

    code = "illegal_transition"


class InvalidCommand(TransitionError):
    """A command names a step or signal that the saga's definition does not have."""

    code = "invalid_command"


class StoreError(SagaError):
    """A failure of the saga store."""

    code = "store_error"


class StoreUnavailable(StoreError):
    """The database cannot be reached right now."""

    retriable = True
    code = "store_unavailable"


class ConcurrencyConflict(StoreError):
    """Another writer changed the saga first (optimistic version check)."""

    retriable = True
    code = "concurrency_conflict"


class DuplicateMessage(StoreError):
    """An id that must be unique is taken already.

    A saga started with the id of an existing saga (whose idempotency key does not
    match), a message id claimed twice in one batch, or an outbox message id used for
    a different message. Redelivered messages are *not* reported this way: the inbox
    skips them silently.
    """

    code = "duplicate_message"


class SagaNotFound(StoreError):
    """No saga exists with the given id."""

    code = "saga_not_found"


class DefinitionNotFound(StoreError):
    """No definition is registered with the given name (and version)."""

    code = "definition_not_found"


class DefinitionConflict(StoreError):
    """A definition with the same name and version but different content is registered."""

    code = "definition_conflict"


class PartitionFenced(StoreError):
    """Another member owns the partition now (a newer epoch): the batch must not commit.

    Raised inside the batch's transaction, so nothing of the batch is written. The
    member stops handling those partitions until the group assigns them again.
    """

    code = "partition_fenced"

    def __init__(self, topic: str, partitions: list[int], why: str) -> None:
        names = ", ".join(f"{topic}[{p}]" for p in partitions)
        super().__init__(f"not the owner of {names} any more ({why})")
        self.topic = topic
        self.partitions = partitions


class TransportError(SagaError):
    """Kafka cannot be reached or refused a request."""

    retriable = True
    code = "transport_error"


class ProducerFenced(TransportError):
    """A newer producer with the same transactional id fenced this one."""

    retriable = False
    code = "producer_fenced"


class RecordRefused(TransportError):
    """Kafka refused one record itself: too large, an invalid or missing topic, ...

    Other records go through; this one does not, however often it is sent, until the
    cause is fixed (a topic created, a size limit raised). ``message_id`` names it, or
    is empty when Kafka refused a batch of records without saying which one.
    """

    code = "record_refused"

    def __init__(self, message: str, *, message_id: str, lasting: bool) -> None:
        super().__init__(message, message_id=message_id)
        self.lasting = lasting
        """``True`` when only a change to Kafka's configuration can let the record in
        (size, invalid topic name); ``False`` when it may come in by itself (a topic
        that is still being created)."""


class AuditorUnavailable(TransportError):
    """The independent auditor's web view cannot be reached or gave an unusable answer."""

    code = "auditor_unavailable"


class NotReady(SagaError):
    """The deployment is not set up far enough yet, e.g. no coordinator ever started."""

    retriable = True
    code = "not_ready"


class ConfigError(SagaError):
    """Settings are missing or invalid."""

    code = "config_error"
