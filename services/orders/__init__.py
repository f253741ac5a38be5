"""Orders: places orders (and starts their saga), confirms them (the saga's pivot).

Tables ``orders_placed``: one row per order a customer placed; ``orders_orders``: one row
per confirmed order.

:func:`place_order` is the initiator pattern: the order row and the request that starts
its ``order_placement`` saga are written in ONE transaction of the service's database,
so an order never exists without its saga, nor a saga without its order.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, DateTime, Integer, String, Table, select
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import ConfirmOrder, OrderConfirmed, StartRequest
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


placed = Table(
    "orders_placed",
    metadata,
    Column("order_id", String(100), primary_key=True),
    Column("customer_id", String(100), nullable=False),
    Column("total_cents", Integer, nullable=False),
    Column("start_request_id", String(36), nullable=False),
    Column("placed_at", DateTime(timezone=True), nullable=False),
)


async def place_order(
    participant: Participant, conn: AsyncConnection, order: dict[str, Any]
) -> StartRequest:
    """Place an order: its row and the start of its saga commit together (or neither).

    ``conn`` is a connection of the service's database inside the caller's transaction;
    ``order`` is the ``order_placement`` saga's input. The saga is started once per
    order (the idempotency key is the order id), however often the request is sent.
    """
    request = await participant.request_start(
        conn,
        "order_placement",
        order,
        key=order["order_id"],
        idempotency_key=f"order:{order['order_id']}",
    )
    await conn.execute(
        placed.insert().values(
            order_id=order["order_id"],
            customer_id=order["customer_id"],
            total_cents=order["total_cents"],
            start_request_id=str(request.message_id),
            placed_at=utc_now(),
        )
    )
    return request


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
