"""Pure parts of the participant SDK: errors, replies, dead letters, decoding, faults."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest

from contracts import (
    REPLY_FAILED,
    REPLY_SUCCEEDED,
    Envelope,
    Frozen,
    MessageKind,
    ReserveInventory,
    StepFailed,
    StepSucceeded,
    new_message_id,
)
from saga.deadletter import (
    CONSUMER_HEADER,
    MAX_REASON_BYTES,
    REASON_HEADER,
    SOURCE_OFFSET_HEADER,
    SOURCE_PARTITION_HEADER,
    SOURCE_TOPIC_HEADER,
    dead_letter_record,
)
from saga.errors import ConfigError
from saga.participant import (
    CommandContext,
    Mode,
    OutgoingRecord,
    Participant,
    ParticipantConfig,
    ParticipantError,
    PermanentError,
    RetriableError,
    propagate_trace_headers,
    reply_envelope,
    reply_message_id,
)
from saga.testing import FaultInjector, ReplyFaults
from saga.topics import Topics


def _command(**overrides: object) -> Envelope:
    fields: dict[str, object] = {
        "saga_id": uuid.uuid4(),
        "saga_type": "order_placement",
        "saga_version": 2,
        "step": "reserve",
        "attempt": 3,
        "kind": MessageKind.COMMAND,
        "type": "inventory.reserve",
        "payload": {"order_id": "o-1", "lines": [{"sku": "a", "quantity": 1}]},
        "correlation_id": uuid.uuid4(),
    }
    fields.update(overrides)
    return Envelope.model_validate(fields)


def test_error_classes_carry_code_and_retriable_flag() -> None:
    assert RetriableError("x.busy").retriable is True
    assert PermanentError("x.no").retriable is False
    assert ParticipantError("x").retriable is False
    err = RetriableError("x.busy", "later", retry_after_ms=10)
    assert (err.code, err.message, err.retry_after_ms) == ("x.busy", "later", 10)
    with pytest.raises(ValueError):
        RetriableError("x", retry_after_ms=-1)


def test_reply_message_id_is_a_deterministic_time_ordered_uuid7() -> None:
    command_id = new_message_id()
    reply_id = reply_message_id(command_id)
    assert reply_id == reply_message_id(command_id)
    assert reply_id != command_id
    assert reply_id.version == 7
    assert reply_id.variant == uuid.RFC_4122
    assert reply_id.int >> 80 == command_id.int >> 80  # same millisecond timestamp
    assert reply_message_id(uuid.uuid4()).version == 7


def test_reply_envelope_copies_the_command_identity() -> None:
    cmd = _command()
    ok = reply_envelope(cmd, StepSucceeded(output={"reservation_id": "r"}))
    failed = reply_envelope(cmd, StepFailed(code="x", retriable=True))
    for reply in (ok, failed):
        assert reply.kind is MessageKind.REPLY
        assert (reply.saga_id, reply.saga_type, reply.saga_version) == (
            cmd.saga_id,
            cmd.saga_type,
            cmd.saga_version,
        )
        assert (reply.step, reply.attempt) == (cmd.step, cmd.attempt)
        assert reply.causation_id == cmd.message_id
        assert reply.correlation_id == cmd.correlation_id
    assert ok.type == REPLY_SUCCEEDED
    assert ok.payload == {"output": {"reservation_id": "r"}}
    assert failed.type == REPLY_FAILED
    assert failed.payload["retriable"] is True


def test_only_trace_headers_are_propagated() -> None:
    headers = [("traceparent", b"00-a-b-01"), ("tracestate", b"k=v"), ("other", b"x")]
    assert propagate_trace_headers(headers) == headers[:2]


def test_dead_letter_record_keeps_the_original_and_names_the_reason() -> None:
    record = dead_letter_record(
        "p.inventory.commands",
        3,
        42,
        b"key",
        b"\xffbytes",
        "bad envelope: saga_id: invalid",
        "participant:inventory",
        original_headers=[("traceparent", b"tp"), (REASON_HEADER, b"old reason")],
    )
    assert (record.key, record.value) == (b"key", b"\xffbytes")
    assert record.header(REASON_HEADER) == "bad envelope: saga_id: invalid"
    assert record.header(SOURCE_TOPIC_HEADER) == "p.inventory.commands"
    assert record.header(SOURCE_PARTITION_HEADER) == "3"
    assert record.header(SOURCE_OFFSET_HEADER) == "42"
    assert record.header(CONSUMER_HEADER) == "participant:inventory"
    assert record.header("traceparent") == "tp"
    assert [n for n, _ in record.headers].count(REASON_HEADER) == 1
    long = dead_letter_record("t", 0, 0, None, None, "x" * 10_000, "c")
    assert len(dict(long.headers)[REASON_HEADER]) == MAX_REASON_BYTES


def _participant(mode: Mode = Mode.SIMPLE) -> Participant:
    return Participant(
        ParticipantConfig(
            name="inventory", bootstrap_servers="unused:9092", topics=Topics(prefix="p."), mode=mode
        )
    )


async def _ok(cmd: ReserveInventory, ctx: CommandContext) -> None:
    return None


def test_registration_rules() -> None:
    participant = _participant()
    participant.register("inventory.reserve", _ok)  # model from contracts.MESSAGES
    assert participant.registrations["inventory.reserve"].model is ReserveInventory
    with pytest.raises(ConfigError, match="already has a handler"):
        participant.register("inventory.reserve", _ok)
    with pytest.raises(ConfigError, match="no model"):
        participant.register("inventory.teleport", _ok)

    class Custom(Frozen):
        x: int

    @participant.command("inventory.custom", model=Custom)
    async def custom(cmd: Custom, ctx: CommandContext) -> None:
        return None

    assert participant.registrations["inventory.custom"].handler is custom


def test_transactional_mode_needs_an_engine_and_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="needs an engine"):
        _participant(Mode.TRANSACTIONAL)
    with pytest.raises(ConfigError):
        ParticipantConfig(name="", bootstrap_servers="x")
    with pytest.raises(ConfigError):
        ParticipantConfig(name="a", bootstrap_servers="x", max_batch=0)
    cfg = ParticipantConfig(name="a", bootstrap_servers="x", topics=Topics(prefix="p."))
    assert cfg.commands_topic == "p.a.commands"
    assert cfg.effective_group_id == "p.a.participant"


async def test_a_participant_cannot_run_before_it_is_opened() -> None:
    participant = _participant()
    participant.register("inventory.reserve", _ok)
    with pytest.raises(ConfigError, match="not running"):
        await participant.run()


@dataclass
class _Record:
    """The attributes the SDK reads from an aiokafka ConsumerRecord."""

    value: bytes | None
    key: bytes | None = b"k"
    topic: str = "p.inventory.commands"
    partition: int = 0
    offset: int = 7
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"not json", "bad envelope"),
        (None, "bad envelope: message has no value"),
        (_command(kind=MessageKind.REPLY).to_bytes(), "not a command: kind 'reply'"),
        (_command(type="inventory.fly").to_bytes(), "unknown command type 'inventory.fly'"),
    ],
)
def test_poison_records_become_dead_letters(value: bytes | None, reason: str) -> None:
    participant = _participant()
    participant.register("inventory.reserve", _ok)
    decoded = participant._decode(_Record(value=value))
    assert isinstance(decoded, OutgoingRecord)
    assert decoded.topic == "p.saga.dlq"
    assert decoded.value == value
    assert decoded.key == b"k"
    assert reason in dict(decoded.headers)[REASON_HEADER].decode()


def test_a_payload_that_fails_its_model_is_an_invalid_command_not_a_dead_letter() -> None:
    participant = _participant()
    participant.register("inventory.reserve", _ok)
    decoded = participant._decode(_Record(value=_command(payload={"order_id": "o"}).to_bytes()))
    assert not isinstance(decoded, OutgoingRecord)
    assert decoded.command is None
    assert decoded.invalid is not None
    assert "payload of 'inventory.reserve': lines" in decoded.invalid


def test_a_good_command_decodes_to_its_model() -> None:
    participant = _participant()
    participant.register("inventory.reserve", _ok)
    decoded = participant._decode(_Record(value=_command().to_bytes()))
    assert not isinstance(decoded, OutgoingRecord)
    assert isinstance(decoded.command, ReserveInventory)
    compensation = participant._decode(
        _Record(value=_command(kind=MessageKind.COMPENSATION).to_bytes())
    )
    assert not isinstance(compensation, OutgoingRecord)


def _replies(n: int) -> list[OutgoingRecord]:
    out = []
    for _ in range(n):
        env = reply_envelope(_command(), StepSucceeded())
        out.append(
            OutgoingRecord(
                topic="r", key=b"k", value=env.to_bytes(), row_id=str(env.message_id), envelope=env
            )
        )
    return out


async def test_fault_injector_drops_duplicates_and_reorders_deterministically() -> None:
    dead = OutgoingRecord(topic="dlq", key=None, value=b"x", row_id="d")
    replies = _replies(20)

    drop_first = FaultInjector(ReplyFaults(drop_first=2))
    sent = await drop_first([dead, *replies])
    assert sent == [dead, *replies[2:]]
    assert drop_first.dropped == replies[:2]

    dup = FaultInjector(ReplyFaults(duplicate_rate=1.0))
    sent = await dup(replies[:3])
    assert [r.envelope for r in sent] == [replies[0].envelope] * 2 + [replies[1].envelope] * 2 + [
        replies[2].envelope
    ] * 2
    assert len({r.row_id for r in sent}) == 6  # copies get fresh outbox row ids

    a = await FaultInjector(ReplyFaults(seed=7, reorder=True, drop_rate=0.3))(replies)
    b = await FaultInjector(ReplyFaults(seed=7, reorder=True, drop_rate=0.3))(replies)
    assert a == b
    assert a != replies
    with pytest.raises(ValueError):
        ReplyFaults(drop_rate=2.0)


async def test_fault_injector_delays_replies() -> None:
    import asyncio

    loop = asyncio.get_running_loop()
    start = loop.time()
    await FaultInjector(ReplyFaults(delay_ms=150))(_replies(1))
    assert loop.time() - start >= 0.14
