"""Errors a handler raises to send a failure reply.

::

    ParticipantError           failure reply with the error's code; ``retriable`` from the class
    ├── RetriableError         the coordinator may retry the step (after ``retry_after_ms``)
    └── PermanentError         the step failed for good (before the pivot: compensation starts)

These are business outcomes a handler reports, not failures of saga-coordinator, so they
do not derive from :class:`saga.errors.SagaError` (whose ``code`` is a class constant;
here every instance carries its own code, e.g. ``payment.declined``).

Any other exception a handler raises becomes a failure reply with code
``handler.exception`` and ``retriable=True``: an unexpected exception is more often a
transient fault (a lost connection, a timeout) than a business decision, the step's
retry policy bounds how often it is retried, and a handler that means "no" can say so
with :class:`PermanentError`.
"""

from __future__ import annotations

from typing import ClassVar, Final

HANDLER_EXCEPTION: Final = "handler.exception"
"""Failure code of a reply to a handler that raised something other than a ParticipantError."""

INVALID_COMMAND: Final = "participant.invalid_command"
"""Failure code (permanent) of the reply to a command whose payload fails its model: the
saga compensates at once, and its timeline says which field was wrong."""


class ParticipantError(Exception):
    """A handler's failure, sent back as a ``reply.failed`` with this code."""

    retriable: ClassVar[bool] = False
    """Whether the coordinator may retry the step."""

    def __init__(self, code: str, message: str = "", *, retry_after_ms: int | None = None) -> None:
        """Create the error.

        Args:
            code: Stable machine-readable code, e.g. ``inventory.out_of_stock``.
            message: Human-readable description.
            retry_after_ms: Delay the participant asks for before the next attempt.
        """
        super().__init__(f"{code}: {message}" if message else code)
        if retry_after_ms is not None and retry_after_ms < 0:
            raise ValueError("retry_after_ms must be >= 0")
        self.code = code
        self.message = message
        self.retry_after_ms = retry_after_ms


class RetriableError(ParticipantError):
    """A failure that may go away: the coordinator retries under the step's policy."""

    retriable = True


class PermanentError(ParticipantError):
    """A failure that will not go away (e.g. payment declined); compensation starts."""

    retriable = False
