"""Messages of the payments participant: authorize a payment, and void it (compensation)."""

from __future__ import annotations

from contracts._common import Cents, Currency, Id, Message, Simulate


class AuthorizePayment(Message):
    """Command ``payments.authorize``: put a hold on the customer's funds for an order."""

    order_id: Id
    """The order being paid (one authorization per order)."""
    customer_id: Id
    """Who pays."""
    amount_cents: Cents
    """How much, in cents."""
    currency: Currency = "EUR"
    """ISO 4217 currency code."""
    simulate: Simulate | None = None
    """Demo control: ``payment_declined`` acts here."""


class PaymentAuthorized(Message):
    """Output of ``payments.authorize``."""

    authorization_id: Id
    """Id of the authorization (needed to void or capture it)."""
    order_id: Id
    """The order being paid."""
    amount_cents: Cents
    """The authorized amount, in cents."""


class VoidPayment(Message):
    """Compensation ``payments.void``: release the hold on the customer's funds.

    Must accept "never happened": voiding an order without an authorization succeeds.
    """

    order_id: Id
    """The order whose authorization is voided."""
    authorization_id: Id | None = None
    """The authorization, when the authorize step's output is known."""


class PaymentVoided(Message):
    """Output of ``payments.void``."""

    order_id: Id
    """The order whose authorization was voided."""
    voided: bool
    """``False`` when there was nothing to void (the authorization never happened)."""
