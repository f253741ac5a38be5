"""Test helpers shipped with the library (fault injection for participants)."""

from saga.testing._faults import FaultInjector, ReplyFaults

__all__ = ["FaultInjector", "ReplyFaults"]
