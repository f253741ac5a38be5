"""Kafka transactions fenced by a consumer group's generation (KIP-447).

A transactional producer is fenced by its transactional id: a newer producer with the
same id aborts the older one's transaction and makes its next request fail. That gives
every outbox lane a producer of its own. Since Kafka 2.5 a transaction can instead be
fenced by the consumer group generation: ``TxnOffsetCommit`` version 3 names the
group member and generation, and the group coordinator refuses it (``ILLEGAL_GENERATION``,
``UNKNOWN_MEMBER_ID``) once the group has moved on; the producer must then abort. One
producer can so publish every lane a process owns in one transaction.

aiokafka sends only version 0 of the request, which names no generation; this module
adds version 3 and makes a producer send it with :func:`send_fenced_offsets`. The
handler below replaces the client's own for that producer only (the client has no
hook for it); it is checked against the client's internals by the tests.
"""

from __future__ import annotations

import collections
import dataclasses
import types
from typing import Any, TypeAlias

import aiokafka
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka import errors as kafka_errors
from aiokafka.client import CoordinationType
from aiokafka.producer.sender import TxnOffsetCommitHandler
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
    TaggedFields,
)
from aiokafka.structs import OffsetAndMetadata

from saga.errors import ConfigError, TransportError

_REBALANCED = (
    kafka_errors.IllegalGenerationError,
    kafka_errors.UnknownMemberIdError,
    kafka_errors.RebalanceInProgressError,
)
"""Refusals that mean the group moved on: the transaction must abort."""


@dataclasses.dataclass(frozen=True, slots=True)
class GroupMember:
    """Who a consumer is in its group, as of one assignment."""

    group_id: str
    generation: int
    member_id: str
    group_instance_id: str | None = None


def group_member_of(consumer: AIOKafkaConsumer, group_id: str) -> GroupMember:
    """The group member and generation of a consumer (call it in the assignment callback)."""
    coordinator: Any = consumer._coordinator
    return GroupMember(
        group_id=group_id,
        generation=int(coordinator.generation),
        member_id=str(coordinator.member_id),
        group_instance_id=getattr(coordinator, "_group_instance_id", None),
    )


class _TxnOffsetCommitResponse_v3(Response):  # type: ignore[misc]
    API_KEY = 28
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "errors",
            CompactArray(
                ("topic", CompactString("utf-8")),
                (
                    "partition_errors",
                    CompactArray(
                        ("partition", Int32), ("error_code", Int16), ("tags", TaggedFields)
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class _TxnOffsetCommitRequest_v3(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 28
    API_VERSION = 3
    RESPONSE_TYPE = _TxnOffsetCommitResponse_v3
    SCHEMA = Schema(
        ("transactional_id", CompactString("utf-8")),
        ("group_id", CompactString("utf-8")),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("generation_id", Int32),
        ("member_id", CompactString("utf-8")),
        ("group_instance_id", CompactString("utf-8")),
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                (
                    "partitions",
                    CompactArray(
                        ("partition_index", Int32),
                        ("committed_offset", Int64),
                        ("committed_leader_epoch", Int32),
                        ("committed_metadata", CompactString("utf-8")),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


_Struct: TypeAlias = _TxnOffsetCommitRequest_v3


class _TxnOffsetCommitRequest(Request[_Struct]):  # type: ignore[misc]
    API_KEY = 28

    def __init__(self, fields: tuple[Any, ...]) -> None:
        self._fields = fields

    def build(self, request_struct_class: type[_Struct]) -> _Struct:
        return request_struct_class(*self._fields)


class _FencedOffsetCommitHandler(TxnOffsetCommitHandler):  # type: ignore[misc]
    """Sends ``TxnOffsetCommit`` v3 with the group member; a stale one aborts the transaction."""

    def __init__(
        self,
        sender: Any,
        offsets: dict[TopicPartition, OffsetAndMetadata],
        group_id: str,
        member: GroupMember,
    ) -> None:
        super().__init__(sender, offsets, group_id)
        self._member = member

    def create_request(self) -> _TxnOffsetCommitRequest:
        txn = self._sender._txn_manager
        by_topic: dict[str, list[tuple[Any, ...]]] = collections.defaultdict(list)
        for tp, offset in sorted(self._offsets.items()):
            by_topic[tp.topic].append((tp.partition, offset.offset, -1, offset.metadata, {}))
        member = self._member
        return _TxnOffsetCommitRequest(
            (
                txn.transactional_id,
                member.group_id,
                txn.producer_id,
                txn.producer_epoch,
                member.generation,
                member.member_id,
                member.group_instance_id,
                [(topic, partitions, {}) for topic, partitions in by_topic.items()],
                {},
            )
        )

    def handle_response(self, resp: Any) -> float | None:
        for _topic, partitions, *_ in resp.errors:
            for _partition, error_code, *_ in partitions:
                error_type = kafka_errors.for_code(error_code)
                if error_type in _REBALANCED:
                    # Fail this commit only: the caller's send_offsets_to_transaction
                    # raises it and the caller aborts. (The client's error_transaction
                    # would forget the transaction's partitions, and its abort then
                    # sends no EndTxn: the transaction would stay open until it times
                    # out, holding up every read-committed reader of its partitions.)
                    _group, _offsets, future = (
                        self._sender._txn_manager._pending_txn_offsets.popleft()
                    )
                    future.set_exception(error_type(self._group_id))
                    return None
        # Anything else as the client handles it: the v3 response is the v0 one with
        # tagged fields.
        plain = types.SimpleNamespace(
            errors=[(t, [(p, e) for p, e, _ in parts]) for t, parts, _ in resp.errors]
        )
        result: float | None = super().handle_response(plain)
        return result


def install_group_fencing(producer: AIOKafkaProducer) -> None:
    """Make ``producer`` send fenced offset commits (before :func:`send_fenced_offsets`).

    Call it once, after constructing the transactional producer.
    """
    sender: Any = producer._sender
    txn: Any = getattr(sender, "_txn_manager", None)
    if not hasattr(sender, "_do_txn_offset_commit") or not hasattr(txn, "_pending_txn_offsets"):
        raise ConfigError(
            f"aiokafka {aiokafka.__version__} has internals this module does not know;"
            " one producer per process needs aiokafka 0.12 to 0.14 (or producer_per='lane')"
        )
    sender._saga_group_member = None
    plain_commit = sender._do_txn_offset_commit

    async def do_txn_offset_commit(offsets: Any, group_id: str) -> None:
        member: GroupMember | None = sender._saga_group_member
        if member is None or member.group_id != group_id or not offsets:
            await plain_commit(offsets, group_id)
            return
        try:
            node_id = await sender._find_coordinator(CoordinationType.GROUP, group_id)
        except kafka_errors.GroupAuthorizationFailedError as exc:
            sender._txn_manager.error_transaction(exc)
            return
        handler = _FencedOffsetCommitHandler(sender, offsets, group_id, member)
        await handler.do(node_id)

    sender._do_txn_offset_commit = do_txn_offset_commit


async def send_fenced_offsets(
    producer: AIOKafkaProducer, offsets: dict[TopicPartition, int], member: GroupMember
) -> None:
    """Commit ``offsets`` for ``member``'s group in the open transaction, fenced by its generation.

    Raises:
        saga.errors.TransportError: The group has moved on since ``member``'s
            assignment (the transaction must be aborted), or Kafka failed.
    """
    sender: Any = producer._sender
    if not hasattr(sender, "_saga_group_member"):
        raise RuntimeError("call install_group_fencing(producer) first")
    sender._saga_group_member = member
    try:
        await producer.send_offsets_to_transaction(
            {tp: OffsetAndMetadata(offset, "") for tp, offset in offsets.items()},
            member.group_id,
        )
    except _REBALANCED as exc:
        raise TransportError(
            f"group {member.group_id} moved on from generation {member.generation}:"
            " this transaction is aborted and its lanes publish again after the rebalance"
        ) from exc
