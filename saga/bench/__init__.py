"""``saga bench``: throughput, latency and cost of sagas against real Kafka and a database.

See :mod:`saga.bench._run` for what is measured and how.
"""

from saga.bench._config import DEFAULT_POSTGRES_URL, BenchConfig, Database
from saga.bench._definition import PARTICIPANTS, SAGA_TYPE, BenchCommand, bench_definition
from saga.bench._report import percentile, render
from saga.bench._run import run_bench

__all__ = [
    "DEFAULT_POSTGRES_URL",
    "PARTICIPANTS",
    "SAGA_TYPE",
    "BenchCommand",
    "BenchConfig",
    "Database",
    "bench_definition",
    "percentile",
    "render",
    "run_bench",
]
