"""What the two batch modes share.

A mode (:class:`~saga.participant._transactional.TransactionalMode`, exactly once, or
:class:`~saga.participant._simple.SimpleMode`, at least once) owns the Kafka clients of
its way of consuming. Each round it polls one batch, decodes it, lets the
:class:`~saga.participant._handling.CommandRunner` handle the commands not seen before,
and makes the outcome durable its own way. Both commit the consumer group's offsets
through one path, :meth:`BatchMode._commit_offsets`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from saga.participant._config import ParticipantConfig
from saga.participant._decoding import Decoded, decode_batch
from saga.participant._handling import CommandRunner
from saga.participant._kafka import commit_group_offsets


@dataclass(frozen=True)
class ModeParts:
    """What a participant hands its mode."""

    config: ParticipantConfig
    """The participant's options."""
    runner: CommandRunner
    """Runs the handlers of new commands and builds their replies."""
    decode: Callable[[Any], Decoded]
    """Decodes one consumed record."""


class BatchMode:
    """The parts a mode works with, and decoding a polled batch."""

    def __init__(self, parts: ModeParts) -> None:
        self._config = parts.config
        self._name = parts.config.name
        self._runner = parts.runner
        self._decode = parts.decode

    @property
    def group_consumer(self) -> Any:
        """The Kafka consumer whose group offsets the mode commits."""
        raise NotImplementedError

    async def _commit_offsets(self, next_offsets: Mapping[int, int]) -> None:
        """Commit the group's next offsets in Kafka (see :func:`commit_group_offsets`)."""
        await commit_group_offsets(
            self.group_consumer, self._config.commands_topic, next_offsets, owner=self._name
        )

    def _decode_batch(
        self, batch: Mapping[int, Sequence[Any]]
    ) -> tuple[list[Decoded], dict[int, int]]:
        return decode_batch(batch, self._decode)
