"""Topic names of a saga deployment.

``<participant>.commands`` per participant, ``saga.replies`` (the coordinator's input),
``saga.starts`` (start requests: sagas started through Kafka),
``saga.events`` (lifecycle events for auditors), ``saga.dlq`` (poison messages with the
reason) and ``saga.relay.checkpoints`` (compacted; the relay's exactly-once checkpoint).
A prefix (for example ``prod.``) is put before every name, and the names shared in
Kafka (consumer groups, transactional ids) derive from the prefixed names too, so two
deployments on one Kafka cluster never interfere.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Topics:
    """The topic names for one deployment, derived from a prefix."""

    prefix: str = ""
    """Put before every topic name, e.g. ``staging.``."""

    @property
    def replies(self) -> str:
        """Replies, timers and signals: the coordinator's input."""
        return f"{self.prefix}saga.replies"

    @property
    def starts(self) -> str:
        """Start requests (:class:`contracts.StartRequest`), keyed by saga id or business key."""
        return f"{self.prefix}saga.starts"

    @property
    def events(self) -> str:
        """Lifecycle events for independent auditors."""
        return f"{self.prefix}saga.events"

    @property
    def dlq(self) -> str:
        """Dead letters: poison messages with the reason and the original bytes."""
        return f"{self.prefix}saga.dlq"

    @property
    def checkpoints(self) -> str:
        """The relay's compacted checkpoint topic."""
        return f"{self.prefix}saga.relay.checkpoints"

    @property
    def fences(self) -> str:
        """An empty topic: the offset a shared relay transaction commits to be fenced.

        Nothing writes to it and its offset stays 0, so the consumer groups whose
        generation fences the transactions show no lag on it.
        """
        return f"{self.prefix}saga.relay.fences"

    def commands(self, participant: str) -> str:
        """The commands topic of one participant."""
        return f"{self.prefix}{participant}.commands"

    @property
    def coordinator_group(self) -> str:
        """The consumer group of the deployment's coordinators."""
        return f"{self.prefix}saga-coordinator"

    def starter_group(self, topic: str) -> str:
        """The consumer group of the coordinators that start sagas from ``topic``.

        ``topic`` is the starts topic, or a topic a definition's trigger listens to.
        """
        return f"{self.prefix}saga-starter.{topic}"

    @property
    def relay_group(self) -> str:
        """The consumer group of stand-alone ``saga relay`` processes (ownership only)."""
        return f"{self.prefix}saga-relay"

    def participant_group(self, participant: str) -> str:
        """The consumer group of one participant's replicas."""
        return f"{self.prefix}{participant}.participant"
