"""Orders: places orders (and starts their saga), confirms them (the saga's pivot).

Tables ``orders_placed``: one row per order a customer placed; ``orders_orders``: one row
per confirmed order.

:func:`place_order` is the initiator pattern: the order row and the request that starts
its ``order_placement`` saga are written in ONE transaction of the service's database,
so an order never exists without its saga, nor a saga without its order.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Integer, String, Table
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import ConfirmOrder, OrderConfirmed, StartRequest
from saga.participant import CommandContext, HandlerResult, Participant
from services._base import metadata, order_row, text, timestamp, utc_now

NAME = "orders"


def _order_columns() -> list[Column[Any]]:
    """The columns that open both tables: the order's id, customer and total."""
    return [
        Column("order_id", String(100), primary_key=True),
        text("customer_id"),
        Column("total_cents", Integer, nullable=False),
    ]


orders = Table(
    "orders_orders",
    metadata,
    *_order_columns(),
    text("currency", 3),
    text("status", 16),
    text("reservation_id", nullable=True),
    text("authorization_id", nullable=True),
    timestamp("confirmed_at"),
)


placed = Table(
    "orders_placed",
    metadata,
    *_order_columns(),
    text("start_request_id", 36),
    timestamp("placed_at"),
)


SHIPPING_ADDRESS: dict[str, str] = {
    "name": "Ada Lovelace",
    "line1": "12 St James's Square",
    "city": "London",
    "postal_code": "SW1Y 4JH",
    "country": "GB",
}
"""Where the orders of the demo and the chaos run go."""


def order_placement_input(
    order_id: str,
    customer_id: str,
    lines: list[dict[str, Any]],
    total_cents: int,
    simulate: str | None = None,
) -> dict[str, Any]:
    """An ``order_placement`` saga's input (in EUR, to :data:`SHIPPING_ADDRESS`).

    ``simulate`` names a failure the example services act out (``payment_declined``...).
    """
    data: dict[str, Any] = {
        "order_id": order_id,
        "customer_id": customer_id,
        "lines": lines,
        "total_cents": total_cents,
        "currency": "EUR",
        "shipping_address": dict(SHIPPING_ADDRESS),
    }
    if simulate:
        data["simulate"] = simulate
    return data


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
    existing = await order_row(conn, orders, cmd.order_id)
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
