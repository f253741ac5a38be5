"""Messages of the shipping participant: schedule a shipment (retriable, after the pivot)."""

from __future__ import annotations

from pydantic import Field

from contracts._common import Id, Message, Simulate


class Address(Message):
    """Where a shipment goes."""

    name: str = Field(min_length=1, max_length=200)
    """Recipient."""
    line1: str = Field(min_length=1, max_length=200)
    """Street and number."""
    city: str = Field(min_length=1, max_length=100)
    """City."""
    postal_code: str = Field(min_length=1, max_length=20)
    """Postal code."""
    country: str = Field(pattern=r"^[A-Z]{2}$")
    """ISO 3166-1 alpha-2 country code."""


class ScheduleShipment(Message):
    """Command ``shipping.schedule``: book a carrier pickup for a confirmed order."""

    order_id: Id
    """The order to ship (one shipment per order)."""
    address: Address
    """Destination."""
    simulate: Simulate | None = None
    """Demo control: ``shipping_flaky`` acts here."""
    flaky_attempts: int = Field(default=2, ge=0, le=100)
    """With ``shipping_flaky``: how many attempts fail (retriably) before one succeeds."""


class ShipmentScheduled(Message):
    """Output of ``shipping.schedule``."""

    shipment_id: Id
    """Id of the shipment."""
    order_id: Id
    """The shipped order."""
    carrier: str
    """Carrier that picks the parcel up."""
