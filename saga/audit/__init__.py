"""Audit tools over the store's hash-chained audit log and the lifecycle events.

* :func:`verify_saga` / :func:`verify_all`: check audit trails against their hash
  chains and the saga rows (altered, removed, inserted or relinked records);
* :func:`export_jsonl`: audit records of a time range as JSON Lines, streamed;
* :func:`reconcile`: the pure comparison of the database's view with an independent
  auditor's (``services/audit``), and :func:`reconcile_database` /
  :func:`auditor_view` to run it against a database and an auditor's web view.
"""

from saga.audit._client import auditor_outcome_pages, auditor_view
from saga.audit._compare import ReconcileReport, database_outcome_pages, reconcile_database
from saga.audit._export import export_jsonl, record_to_json
from saga.audit._reader import SagaHead, count_sagas
from saga.audit._reconcile import (
    SETTLED,
    Discrepancy,
    DiscrepancyKind,
    SagaOutcome,
    reconcile,
)
from saga.audit._verify import (
    AuditProblem,
    PageResult,
    Problem,
    check_saga,
    verify_all,
    verify_saga,
)

__all__ = [
    "SETTLED",
    "AuditProblem",
    "Discrepancy",
    "DiscrepancyKind",
    "PageResult",
    "Problem",
    "ReconcileReport",
    "SagaHead",
    "SagaOutcome",
    "auditor_outcome_pages",
    "auditor_view",
    "check_saga",
    "count_sagas",
    "database_outcome_pages",
    "export_jsonl",
    "reconcile",
    "reconcile_database",
    "record_to_json",
    "verify_all",
    "verify_saga",
]
