"""The independent auditor: lifecycle events in, per-saga outcomes and counts out.

Run it with ``python -m services.audit`` (``--help`` for options); its web view serves
``/sagas/{id}``, ``/outcomes`` and ``/counts``, and ``saga audit reconcile --auditor URL``
compares it with the coordinator's database. See ``_app.py`` for how it works.
"""

from __future__ import annotations

from services.audit._app import NAME, Auditor, AuditorConfig, build_app, topic_partitions
from services.audit._fold import SETTLED, STATUS_OF, fold_event, new_record

__all__ = [
    "NAME",
    "SETTLED",
    "STATUS_OF",
    "Auditor",
    "AuditorConfig",
    "build_app",
    "fold_event",
    "new_record",
    "topic_partitions",
]
