"""Test helpers shipped with the library (fault injection for participants)."""

from saga.testing._faults import INJECTED_HEADER, FaultInjector, ReplyFaults

__all__ = ["INJECTED_HEADER", "FaultInjector", "ReplyFaults"]
