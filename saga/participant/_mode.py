"""What the two batch modes share.

A mode (:class:`~saga.participant._transactional.TransactionalMode`, exactly once, or
:class:`~saga.participant._simple.SimpleMode`, at least once) owns the Kafka clients of
its way of consuming. Each round it polls one batch, decodes it, lets the
:class:`~saga.participant._handling.CommandRunner` handle the commands not seen before,
and makes the outcome durable its own way. Both commit the consumer group's offsets
through the participant's one commit path, ``commit_offsets``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from saga.participant._config import ParticipantConfig
from saga.participant._decoding import Decoded, decode_batch
from saga.participant._handling import CommandRunner

OffsetsCommit = Callable[[Mapping[int, int]], Awaitable[None]]
"""Commits the consumer group's next offsets (``partition -> offset``) in Kafka."""


@dataclass(frozen=True)
class ModeParts:
    """What a participant hands its mode."""

    config: ParticipantConfig
    """The participant's options."""
    runner: CommandRunner
    """Runs the handlers of new commands and builds their replies."""
    decode: Callable[[Any], Decoded]
    """Decodes one consumed record."""
    commit_offsets: OffsetsCommit
    """The participant's one path for committing the group's offsets in Kafka."""


class BatchMode:
    """The parts a mode works with, and decoding a polled batch."""

    def __init__(self, parts: ModeParts) -> None:
        self._config = parts.config
        self._name = parts.config.name
        self._runner = parts.runner
        self._decode = parts.decode
        self._commit_offsets = parts.commit_offsets

    def _decode_batch(
        self, batch: Mapping[int, Sequence[Any]]
    ) -> tuple[list[Decoded], dict[int, int]]:
        return decode_batch(batch, self._decode)
