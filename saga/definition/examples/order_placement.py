"""The order-placement saga, built with the Python builder.

The same definition is written as YAML in ``order_placement.yaml`` next to this file; a
test loads both and asserts they are equal. The example services in ``services/``
implement its participants, and ``saga demo`` runs it.

1. ``reserve_inventory`` (inventory), compensated by ``inventory.release``;
2. ``authorize_payment`` (payments), compensated by ``payments.void``;
3. ``confirm_order`` (orders): the pivot; after it the saga only goes forward;
4. ``schedule_shipping`` (shipping): retried until it succeeds.
"""

from __future__ import annotations

from pathlib import Path

from saga.definition import (
    RetryPolicy,
    SagaBuilder,
    SagaDefinition,
    compensatable,
    load_file,
    pivot,
    retriable,
)

YAML_PATH = Path(__file__).with_suffix(".yaml")
"""The YAML twin of :data:`ORDER_PLACEMENT`."""

ORDER_PLACEMENT: SagaDefinition = (
    SagaBuilder(
        "order_placement",
        version=1,
        description="Reserve stock, authorize the payment, confirm the order, ship it.",
        deadline_ms=5 * 60_000,
    )
    .add(
        compensatable(
            "reserve_inventory",
            participant="inventory",
            command="inventory.reserve",
            compensation="inventory.release",
            input={"order_id": "order_id", "lines": "lines", "simulate": "simulate"},
            output={"reservation_id": "reservation_id"},
            compensation_input={"order_id": "order_id", "reservation_id": "reservation_id"},
            retry=RetryPolicy(max_attempts=2, initial_delay_ms=200),
            timeout_ms=2_000,
        ),
        compensatable(
            "authorize_payment",
            participant="payments",
            command="payments.authorize",
            compensation="payments.void",
            input={
                "order_id": "order_id",
                "customer_id": "customer_id",
                "amount_cents": "total_cents",
                "currency": "currency || 'EUR'",
                "simulate": "simulate",
            },
            output={"authorization_id": "authorization_id"},
            compensation_input={"order_id": "order_id", "authorization_id": "authorization_id"},
            retry=RetryPolicy(max_attempts=3, retriable_codes=("payments.unavailable",)),
            timeout_ms=5_000,
        ),
        pivot(
            "confirm_order",
            participant="orders",
            command="orders.confirm",
            input={
                "order_id": "order_id",
                "customer_id": "customer_id",
                "total_cents": "total_cents",
                "currency": "currency || 'EUR'",
                "reservation_id": "reservation_id",
                "authorization_id": "authorization_id",
                "simulate": "simulate",
            },
            # Idempotent per order: a lost reply is worth many retries, because a pivot
            # whose outcome stays unknown cannot be compensated (the saga would be stuck).
            retry=RetryPolicy(max_attempts=10, initial_delay_ms=500, max_delay_ms=5_000),
            timeout_ms=5_000,
        ),
        retriable(
            "schedule_shipping",
            participant="shipping",
            command="shipping.schedule",
            input={"order_id": "order_id", "address": "shipping_address", "simulate": "simulate"},
            output={"shipment_id": "shipment_id", "carrier": "carrier"},
            retry=RetryPolicy(max_attempts=None, initial_delay_ms=200, max_delay_ms=2_000),
            timeout_ms=5_000,
        ),
    )
    .build()
)
"""The order-placement saga."""


def load_yaml_twin() -> SagaDefinition:
    """Load ``order_placement.yaml``, which must equal :data:`ORDER_PLACEMENT`."""
    return load_file(YAML_PATH)
