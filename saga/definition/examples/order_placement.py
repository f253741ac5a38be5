"""The order-placement saga, built with the Python builder.

The same definition is written as YAML in ``order_placement.yaml`` next to this file; a
test loads both and asserts they are equal.

1. ``create_order`` (orders): compensated by ``orders.cancel``.
2. In parallel: ``reserve_stock`` (inventory) and ``authorize_payment`` (payments).
3. ``manager_approval``: orders above 1000 wait for a human approval signal for a day.
4. ``capture_payment`` (payments): the pivot; after it the saga only goes forward.
5. ``ship_order`` (shipping), then ``confirm_order`` (orders): retried until they succeed.
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
    wait,
)

YAML_PATH = Path(__file__).with_suffix(".yaml")
"""The YAML twin of :data:`ORDER_PLACEMENT`."""

ORDER_PLACEMENT: SagaDefinition = (
    SagaBuilder(
        "order_placement",
        version=1,
        description="Create an order, reserve stock and money, capture, ship.",
        deadline_ms=30 * 60_000,
    )
    .add(
        compensatable(
            "create_order",
            participant="orders",
            command="orders.create",
            compensation="orders.cancel",
            input={"order_id": "order_id", "customer_id": "customer_id", "items": "items"},
            output={"order_status": "status"},
            timeout_ms=5_000,
        )
    )
    .parallel(
        "reserve",
        [
            compensatable(
                "reserve_stock",
                participant="inventory",
                command="inventory.reserve",
                compensation="inventory.release",
                input={"order_id": "order_id", "items": "items"},
                output={"reservation_id": "reservation_id"},
                timeout_ms=5_000,
            ),
            compensatable(
                "authorize_payment",
                participant="payments",
                command="payments.authorize",
                compensation="payments.void",
                input={"order_id": "order_id", "customer_id": "customer_id", "amount": "total"},
                output={"authorization_id": "authorization_id"},
                retry=RetryPolicy(
                    max_attempts=4,
                    initial_delay_ms=500,
                    retriable_codes=("payments.unavailable", "payments.rate_limited"),
                ),
                timeout_ms=10_000,
            ),
        ],
    )
    .add(
        wait(
            "manager_approval",
            signal="order.approved",
            when="total > `1000`",
            timeout_ms=24 * 3_600_000,
            output={"approved_by": "approver"},
        ),
        pivot(
            "capture_payment",
            participant="payments",
            command="payments.capture",
            input={"authorization_id": "authorization_id", "amount": "total"},
            timeout_ms=10_000,
        ),
        retriable(
            "ship_order",
            participant="shipping",
            command="shipping.schedule",
            input={"order_id": "order_id", "address": "shipping_address"},
            output={"tracking_number": "tracking_number"},
            timeout_ms=10_000,
        ),
        retriable(
            "confirm_order",
            participant="orders",
            command="orders.confirm",
            input={"order_id": "order_id", "tracking_number": "tracking_number"},
            timeout_ms=5_000,
        ),
    )
    .build()
)
"""The order-placement saga."""


def load_yaml_twin() -> SagaDefinition:
    """Load ``order_placement.yaml``, which must equal :data:`ORDER_PLACEMENT`."""
    return load_file(YAML_PATH)
