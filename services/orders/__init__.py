"""Orders: confirms an order (the saga's pivot; no compensation).

Table ``orders_orders``: one row per confirmed order.
"""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Integer, String, Table, select

from contracts import ConfirmOrder, OrderConfirmed
from saga.participant import CommandContext, HandlerResult, Participant
from services._base import metadata, utc_now

NAME = "orders"

orders = Table(
    "orders_orders",
    metadata,
    Column("order_id", String(100), primary_key=True),
    Column("customer_id", String(100), nullable=False),
    Column("total_cents", Integer, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False),
    Column("reservation_id", String(100), nullable=True),
    Column("authorization_id", String(100), nullable=True),
    Column("confirmed_at", DateTime(timezone=True), nullable=False),
)


async def confirm(cmd: ConfirmOrder, ctx: CommandContext) -> HandlerResult:
    """Record the order as confirmed; idempotent per order."""
    conn = ctx.db
    existing = (await conn.execute(select(orders).where(orders.c.order_id == cmd.order_id))).first()
    if existing is None:
        await conn.execute(
            orders.insert().values(
                order_id=cmd.order_id,
                customer_id=cmd.customer_id,
                total_cents=cmd.total_cents,
                currency=cmd.currency,
                status="confirmed",
                reservation_id=cmd.reservation_id,
                authorization_id=cmd.authorization_id,
                confirmed_at=utc_now(),
            )
        )
    return OrderConfirmed(order_id=cmd.order_id, status="confirmed")


def register(participant: Participant) -> Participant:
    """Register the orders handler on ``participant``."""
    participant.register("orders.confirm", confirm, model=ConfirmOrder)
    return participant
