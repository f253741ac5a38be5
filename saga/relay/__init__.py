"""The outbox relay: publishes outbox rows to Kafka exactly once.

See :mod:`saga.relay._relay` for the theory of operation.
"""

from saga.lifecycle import State, utc_now
from saga.relay._checkpoint import (
    Checkpoint,
    decode_checkpoint,
    encode_checkpoint,
    read_last_checkpoint,
)
from saga.relay._config import ProducerPer, RelayConfig, RelayMode, relay_id_for
from saga.relay._outbox import OutboxRow, OutboxTable, translate_db_errors
from saga.relay._pool import RelayPool
from saga.relay._quarantine import Quarantine, QuarantinedRow
from saga.relay._relay import Relay
from saga.relay._shared import ProcessTransactions
from saga.relay._standalone import RelayGroupMember
from saga.store import NOTIFY_CHANNEL as CHANNEL

__all__ = [
    "CHANNEL",
    "Checkpoint",
    "OutboxRow",
    "OutboxTable",
    "ProcessTransactions",
    "ProducerPer",
    "Quarantine",
    "QuarantinedRow",
    "Relay",
    "RelayConfig",
    "RelayGroupMember",
    "RelayMode",
    "RelayPool",
    "State",
    "decode_checkpoint",
    "encode_checkpoint",
    "read_last_checkpoint",
    "relay_id_for",
    "translate_db_errors",
    "utc_now",
]
