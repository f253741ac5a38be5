"""Shipping: schedules a shipment (a retriable step after the pivot).

Table ``shipping_shipments``: one row per order. With ``simulate="shipping_flaky"`` the
first ``flaky_attempts`` attempts of the step fail retriably (the coordinator retries).
"""

from __future__ import annotations

from sqlalchemy import JSON, Column

from contracts import ScheduleShipment, ShipmentScheduled
from saga.participant import CommandContext, HandlerResult, Participant, RetriableError
from services._base import order_row, order_table, text, timestamp, utc_now

NAME = "shipping"
CARRIER = "acme-parcel"

shipments = order_table(
    "shipping_shipments",
    "shipment_id",
    text("carrier"),
    Column("address", JSON, nullable=False),
    timestamp("created_at"),
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
    existing = await order_row(conn, shipments, cmd.order_id)
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
