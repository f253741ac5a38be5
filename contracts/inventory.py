"""Messages of the inventory participant: reserve stock, and release it (compensation)."""

from __future__ import annotations

from pydantic import Field

from contracts._common import Id, Message, Simulate


class OrderLine(Message):
    """One line of an order: a product and how many of it."""

    sku: Id
    """Stock-keeping unit of the product."""
    quantity: int = Field(ge=1)
    """Number of units."""


class ReserveInventory(Message):
    """Command ``inventory.reserve``: hold stock for every line of an order."""

    order_id: Id
    """The order the stock is held for (one reservation per order)."""
    lines: tuple[OrderLine, ...] = Field(min_length=1)
    """What to reserve."""
    simulate: Simulate | None = None
    """Demo control: ``out_of_stock`` or ``inventory_timeout`` act here."""


class InventoryReserved(Message):
    """Output of ``inventory.reserve``: the reservation that holds the stock."""

    reservation_id: Id
    """Id of the reservation (needed to release it)."""
    order_id: Id
    """The order the stock is held for."""


class ReleaseInventory(Message):
    """Compensation ``inventory.release``: give back the stock held for an order.

    Must accept "never happened": the reserve command may have timed out before it ran,
    so the release is keyed by ``order_id`` and releasing nothing is a success.
    """

    order_id: Id
    """The order whose reservation is released."""
    reservation_id: Id | None = None
    """The reservation, when the reserve step's output is known."""


class InventoryReleased(Message):
    """Output of ``inventory.release``."""

    order_id: Id
    """The order whose reservation was released."""
    released: bool
    """``False`` when there was nothing to release (the reservation never happened)."""
