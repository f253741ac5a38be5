"""Inventory: reserves stock for an order; the compensation releases it.

Tables: ``inventory_stock`` (available units per SKU) and ``inventory_reservations``
(one per order: ``held``, ``released``, or ``cancelled`` when the release came first).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import JSON, Column, Integer, Row, String, Table, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from contracts import InventoryReleased, InventoryReserved, ReleaseInventory, ReserveInventory
from saga.participant import NO_REPLY, CommandContext, HandlerResult, Participant, PermanentError
from services._base import (
    compensate,
    metadata,
    order_row,
    order_table,
    text,
    timestamp,
    utc_now,
)

NAME = "inventory"

stock = Table(
    "inventory_stock",
    metadata,
    Column("sku", String(100), primary_key=True),
    Column("available", Integer, nullable=False),
)

reservations = order_table(
    "inventory_reservations",
    "reservation_id",
    text("status", 16, comment="held, released or cancelled"),
    Column("lines", JSON, nullable=True),
    timestamp("updated_at"),
)

DEMO_STOCK: Mapping[str, int] = {"sku-apple": 1_000_000, "sku-pear": 1_000_000, "sku-fig": 3}
"""Stock the demo starts with (``run_all`` adds the SKUs that are missing)."""


async def reserve(cmd: ReserveInventory, ctx: CommandContext) -> HandlerResult:
    """Hold stock for every line, all or nothing; idempotent per order."""
    if cmd.simulate == "inventory_timeout":
        return NO_REPLY  # the coordinator's step timeout fires, then the release runs
    conn = ctx.db
    existing = await order_row(conn, reservations, cmd.order_id)
    if existing is not None:
        if existing.status == "held":
            return InventoryReserved(reservation_id=existing.reservation_id, order_id=cmd.order_id)
        raise PermanentError(
            "inventory.reservation_cancelled",
            f"order {cmd.order_id} was released before it was reserved",
        )
    if cmd.simulate == "out_of_stock":
        raise PermanentError("inventory.out_of_stock", "simulated: out of stock")
    for line in cmd.lines:
        taken = await conn.execute(
            update(stock)
            .where(stock.c.sku == line.sku, stock.c.available >= line.quantity)
            .values(available=stock.c.available - line.quantity)
        )
        if taken.rowcount != 1:
            # The SDK's savepoint rolls back the lines already taken.
            raise PermanentError("inventory.out_of_stock", f"not enough {line.sku}")
    reservation_id = f"res-{cmd.order_id}"
    await conn.execute(
        reservations.insert().values(
            reservation_id=reservation_id,
            order_id=cmd.order_id,
            status="held",
            lines=[line.model_dump() for line in cmd.lines],
            updated_at=utc_now(),
        )
    )
    return InventoryReserved(reservation_id=reservation_id, order_id=cmd.order_id)


async def release(cmd: ReleaseInventory, ctx: CommandContext) -> HandlerResult:
    """Give the stock back. "Never happened" succeeds and blocks a late reserve."""
    conn = ctx.db

    async def give_back(held: Row[Any]) -> None:
        for line in held.lines or []:
            await conn.execute(
                update(stock)
                .where(stock.c.sku == line["sku"])
                .values(available=stock.c.available + int(line["quantity"]))
            )

    # A release before the reserve leaves a tombstone: a reserve that arrives late is
    # refused instead of holding stock forever.
    released = await compensate(
        conn,
        reservations,
        cmd.order_id,
        cmd.reservation_id or f"res-{cmd.order_id}",
        active="held",
        undone="released",
        undo=give_back,
        lines=None,
    )
    return InventoryReleased(order_id=cmd.order_id, released=released)


def register(participant: Participant) -> Participant:
    """Register the inventory handlers on ``participant``."""
    participant.register("inventory.reserve", reserve, model=ReserveInventory)
    participant.register("inventory.release", release, model=ReleaseInventory)
    return participant


async def seed_stock(engine: AsyncEngine, levels: Mapping[str, int] = DEMO_STOCK) -> None:
    """Add the SKUs of ``levels`` that have no stock row yet."""
    async with engine.begin() as conn:
        await seed(conn, levels)


async def seed(conn: AsyncConnection, levels: Mapping[str, int] = DEMO_STOCK) -> None:
    """Add the SKUs of ``levels`` that have no stock row yet, in ``conn``'s transaction."""
    known = set((await conn.execute(select(stock.c.sku))).scalars())
    missing = [{"sku": s, "available": n} for s, n in levels.items() if s not in known]
    if missing:
        await conn.execute(stock.insert(), missing)
