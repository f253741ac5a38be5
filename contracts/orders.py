"""Messages of the orders participant: confirm an order (the saga's pivot)."""

from __future__ import annotations

from contracts._common import Cents, Currency, Id, Message, Simulate


class ConfirmOrder(Message):
    """Command ``orders.confirm``: the pivot; once confirmed the order only goes forward."""

    order_id: Id
    """The order to confirm."""
    customer_id: Id
    """Who placed the order."""
    total_cents: Cents
    """Order total, in cents."""
    currency: Currency = "EUR"
    """ISO 4217 currency code."""
    reservation_id: Id | None = None
    """The inventory reservation backing the order."""
    authorization_id: Id | None = None
    """The payment authorization backing the order."""
    simulate: Simulate | None = None
    """Demo control (no failure mode acts on the pivot)."""


class OrderConfirmed(Message):
    """Output of ``orders.confirm``."""

    order_id: Id
    """The confirmed order."""
    status: str = "confirmed"
    """The order's status after the command."""
