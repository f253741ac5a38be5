"""Message contracts of saga-coordinator: the envelope and the example domain's messages.

This package depends on pydantic only, so participants can use it without the
coordinator. :data:`MESSAGES` maps every message type string to its payload model;
``contracts/schemas/`` holds the generated JSON Schema and AsyncAPI documents.
"""

from contracts._common import Message, Simulate
from contracts._compat import breaking_changes
from contracts._export import build_asyncapi, export_files, schema_documents
from contracts._registry import MESSAGES, REPLY_SUFFIX, output_model
from contracts.envelope import (
    ENVELOPE_SCHEMA_VERSION,
    REPLY_FAILED,
    REPLY_SUCCEEDED,
    ContractDecodeError,
    Envelope,
    Frozen,
    MessageKind,
    Signal,
    StepFailed,
    StepSucceeded,
    new_message_id,
)
from contracts.inventory import (
    InventoryReleased,
    InventoryReserved,
    OrderLine,
    ReleaseInventory,
    ReserveInventory,
)
from contracts.orders import ConfirmOrder, OrderConfirmed
from contracts.payments import AuthorizePayment, PaymentAuthorized, PaymentVoided, VoidPayment
from contracts.shipping import Address, ScheduleShipment, ShipmentScheduled
from contracts.starts import START_REJECTED, StartRequest

__all__ = [
    "ENVELOPE_SCHEMA_VERSION",
    "MESSAGES",
    "REPLY_FAILED",
    "REPLY_SUCCEEDED",
    "REPLY_SUFFIX",
    "START_REJECTED",
    "Address",
    "AuthorizePayment",
    "ConfirmOrder",
    "ContractDecodeError",
    "Envelope",
    "Frozen",
    "InventoryReleased",
    "InventoryReserved",
    "Message",
    "MessageKind",
    "OrderConfirmed",
    "OrderLine",
    "PaymentAuthorized",
    "PaymentVoided",
    "ReleaseInventory",
    "ReserveInventory",
    "ScheduleShipment",
    "ShipmentScheduled",
    "Signal",
    "Simulate",
    "StartRequest",
    "StepFailed",
    "StepSucceeded",
    "VoidPayment",
    "breaking_changes",
    "build_asyncapi",
    "export_files",
    "new_message_id",
    "output_model",
    "schema_documents",
]
