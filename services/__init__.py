"""Example participants of the order-placement saga: orders, inventory, payments, shipping.

Order placement: reserve inventory (compensation: release) -> authorize payment
(compensation: void) -> confirm order (the pivot) -> schedule shipping (retriable).
Run one with ``python -m services.inventory`` or all four in one process with
:func:`run_all` (:func:`run_services` for a subset).
"""

from __future__ import annotations

from services._runner import run_all, run_services

__all__ = ["run_all", "run_services"]
