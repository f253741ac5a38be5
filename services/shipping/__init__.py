"""Shipping: schedules a shipment (a retriable step after the pivot).

Table ``shipping_shipments``: one row per order. With ``simulate="shipping_flaky"`` the
first ``flaky_attempts`` attempts of the step fail retriably (the coordinator retries).
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, DateTime, String, Table, select

from contracts import ScheduleShipment, ShipmentScheduled
from saga.participant import CommandContext, HandlerResult, Participant, RetriableError
from services._base import metadata, utc_now

NAME = "shipping"
CARRIER = "acme-parcel"

shipments = Table(
    "shipping_shipments",
    metadata,
    Column("shipment_id", String(100), primary_key=True),
    Column("order_id", String(100), nullable=False, unique=True),
    Column("carrier", String(100), nullable=False),
    Column("address", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


async def schedule(cmd: ScheduleShipment, ctx: CommandContext) -> HandlerResult:
    """Book a pickup; idempotent per order."""
    if cmd.simulate == "shipping_flaky" and ctx.attempt <= cmd.flaky_attempts:
        raise RetriableError(
            "shipping.carrier_unavailable",
            f"simulated: carrier busy (attempt {ctx.attempt} of {cmd.flaky_attempts} failing)",
            retry_after_ms=100,
        )
    conn = ctx.db
    existing = (
        await conn.execute(select(shipments).where(shipments.c.order_id == cmd.order_id))
    ).first()
    if existing is not None:
        return ShipmentScheduled(
            shipment_id=existing.shipment_id, order_id=cmd.order_id, carrier=existing.carrier
        )
    shipment_id = f"ship-{cmd.order_id}"
    await conn.execute(
        shipments.insert().values(
            shipment_id=shipment_id,
            order_id=cmd.order_id,
            carrier=CARRIER,
            address=cmd.address.model_dump(),
            created_at=utc_now(),
        )
    )
    return ShipmentScheduled(shipment_id=shipment_id, order_id=cmd.order_id, carrier=CARRIER)


def register(participant: Participant) -> Participant:
    """Register the shipping handler on ``participant``."""
    participant.register("shipping.schedule", schedule, model=ScheduleShipment)
    return participant
