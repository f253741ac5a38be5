"""Participant SDK: handle saga commands in a service, reply, dedupe, local outbox.

See :mod:`saga.participant._participant` for the theory of operation.
"""

from saga.lifecycle import State
from saga.participant._config import Mode, ParticipantConfig
from saga.participant._context import NO_REPLY, CommandContext, Handler, HandlerResult
from saga.participant._db import (
    PARTICIPANT_TABLES,
    create_participant_tables,
    participant_tables,
)
from saga.participant._decoding import Registration
from saga.participant._errors import (
    HANDLER_EXCEPTION,
    INVALID_COMMAND,
    ParticipantError,
    PermanentError,
    RetriableError,
)
from saga.participant._headers import (
    TRACE_HEADERS,
    CommandScope,
    HeadersHook,
    no_scope,
    propagate_trace_headers,
)
from saga.participant._initiator import request_start
from saga.participant._participant import Participant
from saga.participant._records import (
    OutgoingRecord,
    ReplyInterceptor,
    reply_envelope,
    reply_message_id,
)

__all__ = [
    "HANDLER_EXCEPTION",
    "INVALID_COMMAND",
    "NO_REPLY",
    "PARTICIPANT_TABLES",
    "TRACE_HEADERS",
    "CommandContext",
    "CommandScope",
    "Handler",
    "HandlerResult",
    "HeadersHook",
    "Mode",
    "OutgoingRecord",
    "Participant",
    "ParticipantConfig",
    "ParticipantError",
    "PermanentError",
    "Registration",
    "ReplyInterceptor",
    "RetriableError",
    "State",
    "create_participant_tables",
    "no_scope",
    "participant_tables",
    "propagate_trace_headers",
    "reply_envelope",
    "reply_message_id",
    "request_start",
]
