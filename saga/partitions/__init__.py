"""Consuming with offsets and partition ownership in the database (one way, shared).

The coordinator and transactional participants both consume through
:class:`PartitionConsumer`; see ``_consumer`` for the theory of operation and
:mod:`saga.store` (``claim_partitions``, ``commit_offsets``) for the fencing SQL.
"""

from saga.partitions._consumer import PartitionConsumer, Records, member_name

__all__ = ["PartitionConsumer", "Records", "member_name"]
