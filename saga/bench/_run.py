"""``run_bench``: set up a fresh deployment, run the phases, collect the figures.

Theory of operation
-------------------
Every run gets a fresh topic prefix and fresh databases: on PostgreSQL one schema per
role (``bench_<run>`` for the coordinator, ``bench_<run>_<participant>`` for each
participant: a service owns its database), on SQLite one file per role. The harness then
starts, each as its own process (stopped by PID at the end):

- the coordinator runtime (coordinator loop, timers and the relays of the partitions it
  owns, as ``saga coordinator`` runs by default; ``--coordinators N`` starts N of them,
  sharing the replies partitions),
- with ``--relay-process``, the coordinators run without relays and ``saga relay``
  publishes their outbox instead (one per coordinator, sharing the partitions' relays
  through their group),
- three bench participants in transactional mode, each running the relay of its own
  outbox in the same process.

This process (the *driver*) starts sagas by writing them into the coordinator's
database — the same writes :func:`saga.coordinator.start_saga` makes, but many sagas per
transaction — and learns that a saga ended from the lifecycle events topic
(``saga.completed``, ``saga.compensated``, ``saga.stuck``, ``saga.aborted``).

Measurements
------------
- **Step latency**: reply consumed -> next command readable by the participant. Every
  command envelope's ``occurred_at`` is the coordinator's clock when it began applying
  the batch that consumed the reply (the engine stamps ``now``); the participant stores
  it next to its own clock when the handler started (``read_at``). The latency is
  ``read_at - occurred_at``: coordinator transaction, outbox relay, Kafka transaction
  commit, consumer fetch and the participant's batch up to that handler. The first
  command of a saga follows the start, not a reply, and is left out. All processes run
  on this machine, so they share one clock.
- **Saga duration**: driver clock at the start -> ``occurred_at`` of the terminal event.
- **Throughput**: finished sagas (and handled commands) / wall time from the first start
  to the last terminal event seen.
- **CPU seconds per saga** of each process: ``utime + stime`` from ``/proc/<pid>/stat``
  over the phase / sagas; **peak RSS**: ``VmHWM`` from ``/proc/<pid>/status``.
- **Outbox backlog**: unpublished outbox rows, sampled every ``sample_interval_s``.

Each phase is preceded by ``warmup`` unmeasured sagas (connections, group joins, JIT of
caches). The baselines run the same message pattern through bare aiokafka processes
(:mod:`saga.bench._worker`), at-least-once and with Kafka transactions, and the scale
phase reruns after preloading finished sagas (:mod:`saga.bench._scale`).

Modules: :mod:`saga.bench._deployment` (names and databases of a run),
:mod:`saga.bench._saga_phases` (the processes and phases), :mod:`saga.bench._driver`
(starting sagas, following their end), :mod:`saga.bench._measure` (a measured phase's
figures), :mod:`saga.bench._baseline` (bare aiokafka).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.progress import Progress

from saga.bench._baseline import baseline_phases
from saga.bench._config import BenchConfig
from saga.bench._deployment import Deployment
from saga.bench._procs import Workers
from saga.bench._saga_phases import saga_phases
from saga.store import Durability, create_engine, durability

log = logging.getLogger("saga.bench")


async def run_bench(
    config: BenchConfig,
    *,
    progress: Progress | None = None,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark described by ``config`` and return its report (JSON-able).

    At the start it reads the database's durability settings
    (:func:`saga.store.durability`) and passes ``say`` the line
    ``database: <settings> (durable)`` (or ``NOT durable: ...``): figures measured on a
    database that may forget commits are not those of a durable deployment.

    Report keys: ``config``; ``database`` (``backend``, ``settings``, ``durable``,
    ``description``); ``empty`` (the phase on an empty database), ``scale`` (after
    the preload), ``baseline`` (bare aiokafka, at-least-once) and
    ``baseline_exactly_once`` (bare aiokafka, a Kafka transaction per batch), each
    with ``sagas_per_s``, ``steps_per_s``, ``p50_step_ms``, ``p95_step_ms``,
    ``p99_step_ms``, the same for ``saga`` durations, ``outcomes``, ``processes`` (``{role: {cpu_s,
    cpu_s_per_saga, kernel_share, cpu_util, peak_rss_mb}}``), ``outbox_backlog`` and
    ``transactions_per_saga`` (``kafka``: relay transactions; ``database``: commits);
    top-level copies of the ``empty`` phase's main figures (``sagas_per_s``,
    ``p50_step_ms``, ``processes`` ...), and ``scale_ratio`` with the scale mode.

    Raises:
        saga.errors.ConfigError: A process failed or a phase timed out (logs are kept).
    """
    temporary = config.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="saga-bench-")) if temporary else config.workdir
    assert workdir is not None
    workdir.mkdir(parents=True, exist_ok=True)
    dep = Deployment(config, workdir)
    workers = Workers(workdir)
    report: dict[str, Any] = {"config": _config_dict(config), "run": dep.run}
    ok = False
    try:
        await dep.create_schemas()
        database = await _durability(dep)
        report["database"] = database.as_dict()
        if say is not None:
            say(f"database: {database.describe()}")
        await saga_phases(dep, workers, report, progress)
        if config.baseline:
            await baseline_phases(dep, workers, report, progress)
        ok = True
    except ExceptionGroup as group:
        raise _first_error(group) from group
    finally:
        await workers.close()
        if not config.keep:
            with contextlib.suppress(Exception):
                await dep.drop_schemas()
            with contextlib.suppress(Exception):
                await dep.delete_topics()
        if temporary and ok and not config.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        elif not ok:
            log.error("bench failed; process logs are in %s", workdir)
    empty = report.get("empty", {})
    for key in (
        "sagas_per_s",
        "steps_per_s",
        "p50_step_ms",
        "p95_step_ms",
        "p99_step_ms",
        "p50_saga_ms",
        "p95_saga_ms",
        "p99_saga_ms",
        "processes",
    ):
        if key in empty:
            report[key] = empty[key]
    return report


async def _durability(dep: Deployment) -> Durability:
    """The durability settings the coordinator's database runs with."""
    engine = create_engine(dep.urls["coordinator"])
    try:
        return await durability(engine)
    finally:
        await engine.dispose()


def _first_error(group: ExceptionGroup[Exception]) -> Exception:
    """The first real failure inside (nested) task groups."""
    first = group.exceptions[0]
    return _first_error(first) if isinstance(first, ExceptionGroup) else first


def _config_dict(config: BenchConfig) -> dict[str, Any]:
    data = asdict(config)
    result: dict[str, Any] = json.loads(json.dumps(data, default=str))
    return result
