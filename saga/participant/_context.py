"""What a handler receives besides its typed command."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, Literal, TypeAlias, TypeVar
from uuid import UUID

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import Envelope, MessageKind
from saga.errors import ConfigError


class _NoReply(Enum):
    NO_REPLY = "no_reply"


NO_REPLY: Final = _NoReply.NO_REPLY
"""Return this from a handler to send no reply at all (the step then times out).

For simulations of lost replies; the command still counts as handled (inbox, offsets).
"""

HandlerResult: TypeAlias = BaseModel | Mapping[str, Any] | Literal[_NoReply.NO_REPLY] | None
"""A handler returns the step's output (a model or a JSON mapping), ``None`` (empty
output) or :data:`NO_REPLY`."""

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, kw_only=True)
class CommandContext:
    """The envelope and delivery details of the command a handler is handling."""

    envelope: Envelope
    """The command's envelope."""
    participant: str
    """Name of the participant handling it."""
    topic: str
    """Topic it was read from."""
    partition: int
    """Partition it was read from."""
    offset: int
    """Its offset."""
    headers: tuple[tuple[str, bytes], ...] = ()
    """Its Kafka headers (trace context among them)."""
    connection: AsyncConnection | None = None
    """Transactional mode: the connection whose transaction also commits the inbox entry,
    the reply and the consumed offset (inside a savepoint of this command)."""

    @property
    def saga_id(self) -> UUID:
        """The saga the command belongs to."""
        return self.envelope.saga_id

    @property
    def step(self) -> str | None:
        """The step the command executes."""
        return self.envelope.step

    @property
    def attempt(self) -> int:
        """Attempt number of the step (1 for the first)."""
        return self.envelope.attempt

    @property
    def message_id(self) -> UUID:
        """The command's message id."""
        return self.envelope.message_id

    @property
    def is_compensation(self) -> bool:
        """Whether the command is a compensation (which must accept "never happened")."""
        return self.envelope.kind is MessageKind.COMPENSATION

    @property
    def db(self) -> AsyncConnection:
        """The transactional connection; raises :class:`ConfigError` in simple mode."""
        if self.connection is None:
            raise ConfigError(f"participant {self.participant!r} runs without a database")
        return self.connection


Handler: TypeAlias = Callable[[M, CommandContext], Awaitable[HandlerResult]]
"""``async def handler(command, ctx) -> output``."""
