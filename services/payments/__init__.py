"""Payments: authorizes a payment for an order; the compensation voids it.

Table ``payments_authorizations``: one row per order, ``authorized``, ``voided``, or
``cancelled`` when the void came first.
"""

from __future__ import annotations

from sqlalchemy import Column, Integer

from contracts import AuthorizePayment, PaymentAuthorized, PaymentVoided, VoidPayment
from saga.participant import CommandContext, HandlerResult, Participant, PermanentError
from services._base import (
    compensate,
    order_row,
    order_table,
    text,
    timestamp,
    utc_now,
)

NAME = "payments"

authorizations = order_table(
    "payments_authorizations",
    "authorization_id",
    text("customer_id"),
    Column("amount_cents", Integer, nullable=False),
    text("currency", 3),
    text("status", 16, comment="authorized, voided or cancelled"),
    timestamp("updated_at"),
)


async def authorize(cmd: AuthorizePayment, ctx: CommandContext) -> HandlerResult:
    """Authorize the amount; idempotent per order."""
    conn = ctx.db
    existing = await order_row(conn, authorizations, cmd.order_id)
    if existing is not None:
        if existing.status == "authorized":
            return PaymentAuthorized(
                authorization_id=existing.authorization_id,
                order_id=cmd.order_id,
                amount_cents=existing.amount_cents,
            )
        raise PermanentError("payment.voided", f"order {cmd.order_id} was voided already")
    if cmd.simulate == "payment_declined":
        raise PermanentError("payment.declined", "simulated: card declined")
    authorization_id = f"auth-{cmd.order_id}"
    await conn.execute(
        authorizations.insert().values(
            authorization_id=authorization_id,
            order_id=cmd.order_id,
            customer_id=cmd.customer_id,
            amount_cents=cmd.amount_cents,
            currency=cmd.currency,
            status="authorized",
            updated_at=utc_now(),
        )
    )
    return PaymentAuthorized(
        authorization_id=authorization_id, order_id=cmd.order_id, amount_cents=cmd.amount_cents
    )


async def void(cmd: VoidPayment, ctx: CommandContext) -> HandlerResult:
    """Void the authorization. "Never happened" succeeds and blocks a late authorize."""
    voided = await compensate(
        ctx.db,
        authorizations,
        cmd.order_id,
        cmd.authorization_id or f"auth-{cmd.order_id}",
        active="authorized",
        undone="voided",
        customer_id="",
        amount_cents=0,
        currency="XXX",
    )
    return PaymentVoided(order_id=cmd.order_id, voided=voided)


def register(participant: Participant) -> Participant:
    """Register the payments handlers on ``participant``."""
    participant.register("payments.authorize", authorize, model=AuthorizePayment)
    participant.register("payments.void", void, model=VoidPayment)
    return participant
