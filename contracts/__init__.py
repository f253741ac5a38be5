"""Message contracts of saga-coordinator: the envelope and the example domain's messages.

This package depends on pydantic only, so participants can use it without the
coordinator.
"""

from contracts.envelope import (
    ENVELOPE_SCHEMA_VERSION,
    REPLY_FAILED,
    REPLY_SUCCEEDED,
    ContractDecodeError,
    Envelope,
    MessageKind,
    Signal,
    StepFailed,
    StepSucceeded,
    new_message_id,
)

__all__ = [
    "ENVELOPE_SCHEMA_VERSION",
    "REPLY_FAILED",
    "REPLY_SUCCEEDED",
    "ContractDecodeError",
    "Envelope",
    "MessageKind",
    "Signal",
    "StepFailed",
    "StepSucceeded",
    "new_message_id",
]
