"""The registry of message types: type string -> model of the payload."""

from __future__ import annotations

from typing import Final

from contracts.envelope import REPLY_FAILED, REPLY_SUCCEEDED, Frozen, StepFailed, StepSucceeded
from contracts.inventory import (
    InventoryReleased,
    InventoryReserved,
    ReleaseInventory,
    ReserveInventory,
)
from contracts.orders import ConfirmOrder, OrderConfirmed
from contracts.payments import AuthorizePayment, PaymentAuthorized, PaymentVoided, VoidPayment
from contracts.shipping import ScheduleShipment, ShipmentScheduled

REPLY_SUFFIX: Final = ".reply"
"""``<command type>.reply`` names the model of a command's output (``StepSucceeded.output``)."""

MESSAGES: Final[dict[str, type[Frozen]]] = {
    # Replies (the envelope-level bodies every participant sends on the replies topic).
    REPLY_SUCCEEDED: StepSucceeded,
    REPLY_FAILED: StepFailed,
    # Inventory: reserve (compensation: release).
    "inventory.reserve": ReserveInventory,
    "inventory.reserve.reply": InventoryReserved,
    "inventory.release": ReleaseInventory,
    "inventory.release.reply": InventoryReleased,
    # Payments: authorize (compensation: void).
    "payments.authorize": AuthorizePayment,
    "payments.authorize.reply": PaymentAuthorized,
    "payments.void": VoidPayment,
    "payments.void.reply": PaymentVoided,
    # Orders: confirm (the pivot).
    "orders.confirm": ConfirmOrder,
    "orders.confirm.reply": OrderConfirmed,
    # Shipping: schedule (retriable, after the pivot).
    "shipping.schedule": ScheduleShipment,
    "shipping.schedule.reply": ShipmentScheduled,
}
"""Every message type of the example domain and its payload model.

Commands and compensations are named ``<participant>.<verb>``; the model of a command's
output is registered under ``<participant>.<verb>.reply``.
"""


def output_model(command_type: str) -> type[Frozen] | None:
    """Return the model of a command's output (``<type>.reply``), if one is registered."""
    return MESSAGES.get(command_type + REPLY_SUFFIX)
