"""Fault injection: a chaos run over real processes, and the invariant checker.

``saga chaos --sagas N --seed S [--brokers 3]`` calls :func:`run_chaos`; the
:mod:`tests.faults` suite calls the same function with a CI-sized count. See
``_controller`` (the run), ``_invariants`` (the figures), ``_processes`` (OS processes
by PID), ``_broker`` (broker restarts), ``_postgres`` (a PostgreSQL of the run's own,
SIGKILLed and restarted) and ``_proxy`` (a TCP proxy for outages).
"""

from saga.chaos._broker import (
    DedicatedBroker,
    cluster_running,
    ensure_cluster,
    free_port,
    free_port_pair,
    restart_broker,
    stop_cluster,
)
from saga.chaos._controller import ChaosConfig, ChaosResult, run_chaos, saga_input
from saga.chaos._faults import format_faults, parse_faults
from saga.chaos._invariants import (
    FIGURES,
    Effects,
    Evidence,
    InvariantReport,
    OutboxSnapshot,
    SagaSnapshot,
    TopicMessage,
    check_invariants,
    collect_evidence,
    read_topics,
    snapshot_saga,
)
from saga.chaos._postgres import DedicatedPostgres
from saga.chaos._processes import ManagedProcess
from saga.chaos._proxy import TcpProxy
from saga.chaos._services import run_faulty_services

__all__ = [
    "FIGURES",
    "ChaosConfig",
    "ChaosResult",
    "DedicatedBroker",
    "DedicatedPostgres",
    "Effects",
    "Evidence",
    "InvariantReport",
    "ManagedProcess",
    "OutboxSnapshot",
    "SagaSnapshot",
    "TcpProxy",
    "TopicMessage",
    "check_invariants",
    "cluster_running",
    "collect_evidence",
    "ensure_cluster",
    "format_faults",
    "free_port",
    "free_port_pair",
    "parse_faults",
    "read_topics",
    "restart_broker",
    "run_chaos",
    "run_faulty_services",
    "saga_input",
    "snapshot_saga",
    "stop_cluster",
]
