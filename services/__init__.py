"""Example participants of the order-placement saga: orders, inventory, payments, shipping.

Order placement: reserve inventory (compensation: release) -> authorize payment
(compensation: void) -> confirm order (the pivot) -> schedule shipping (retriable).
Run one with ``python -m services.inventory`` or all four in one process with
:func:`run_all` (:func:`run_services` for a subset).
"""

from __future__ import annotations

from typing import Any


async def run_all(settings: Any, **kwargs: Any) -> None:
    """Run all four example services in one process; see ``services._runner.run_services``."""
    from services._runner import run_all as _run_all

    await _run_all(settings, **kwargs)


async def run_services(settings: Any, *args: Any, **kwargs: Any) -> None:
    """Run some example services in one process; see ``services._runner.run_services``."""
    from services._runner import run_services as _run_services

    await _run_services(settings, *args, **kwargs)


__all__ = ["run_all", "run_services"]
