"""One measured phase and its figures.

The sagas, the CPU and memory of every process and of the machine, the step latencies
the participants recorded and the outbox backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any

from rich.progress import Progress
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from saga.bench._config import BenchConfig
from saga.bench._definition import rows_table, step_name
from saga.bench._phase import PhaseTimes, Tracker, run_phase
from saga.bench._procs import Worker, Workers, infrastructure_cpu, machine_cpu, peak_rss_mb
from saga.bench._report import phase_figures, process_figures
from saga.kafka import end_offsets
from saga.store import tables as t

log = logging.getLogger("saga.bench")


async def warmup(
    tracker: Tracker,
    starter: Any,
    cfg: BenchConfig,
    workers: Workers,
    progress: Progress | None,
    phase: str,
) -> None:
    """Run ``cfg.warmup`` unmeasured sagas before ``phase``."""
    await run_phase(
        tracker,
        starter,
        sagas=cfg.warmup,
        concurrency=min(cfg.concurrency, cfg.warmup),
        rate=None,
        timeout_s=max(cfg.timeout_s, 120.0),
        workers=workers,
        progress=progress,
        label=f"{phase}: warm-up",
    )


async def timed_phase(
    phase: str,
    label: str,
    tracker: Tracker,
    starter: Any,
    cfg: BenchConfig,
    workers: Workers,
    measured: list[Worker],
    progress: Progress | None,
) -> tuple[PhaseTimes, dict[str, Any]]:
    """Run the ``cfg.sagas`` of ``phase``; its times and the machine's figures.

    The CPU of every worker is marked at ``<phase>:start`` and ``<phase>:end``, the
    peak RSS of each of ``measured`` at ``<phase>:rss``.
    """
    workers.mark(f"{phase}:start")
    machine_start, infra_start = machine_cpu(), infrastructure_cpu()
    times = await run_phase(
        tracker,
        starter,
        sagas=cfg.sagas,
        concurrency=cfg.concurrency,
        rate=cfg.rate,
        timeout_s=cfg.timeout_s,
        workers=workers,
        progress=progress,
        label=label,
    )
    workers.mark(f"{phase}:end")
    machine = machine_figures(machine_start, machine_cpu(), infra_start, times, cfg.sagas)
    for w in measured:
        w.cpu_marks[f"{phase}:rss"] = peak_rss_mb(w.pid)
    return times, machine


async def measured_phase(
    phase: str,
    tracker: Tracker,
    starter: Any,
    cfg: BenchConfig,
    workers: Workers,
    measured: list[Worker],
    engine: AsyncEngine,
    part_engines: dict[str, AsyncEngine],
    progress: Progress | None,
    checkpoints: str,
) -> dict[str, Any]:
    sampler_stop = asyncio.Event()
    counts_before = await transaction_counts(cfg.bootstrap_servers, checkpoints, engine)
    samples: list[dict[str, float]] = []
    profiling = cfg.profile_dir is not None and workers.start_profilers(cfg.profile_dir, phase)
    driver_start = os.times()
    t0 = time.time()
    async with asyncio.TaskGroup() as tg:
        sampler = tg.create_task(
            sample_backlog(engine, part_engines, samples, t0, cfg.sample_interval_s, sampler_stop)
        )
        try:
            times, machine = await timed_phase(
                phase, f"{phase}: sagas", tracker, starter, cfg, workers, measured, progress
            )
        finally:
            sampler_stop.set()
        await sampler
    driver_end = os.times()
    counts_after = await transaction_counts(cfg.bootstrap_servers, checkpoints, engine)
    driver_kernel = driver_end.system - driver_start.system
    driver_cpu = driver_end.user - driver_start.user + driver_kernel
    if profiling:
        await workers.stop_profilers()
    latencies, steps_done = await step_latencies(part_engines, tracker, times, cfg)
    processes = process_figures(measured, phase, cfg.sagas)
    processes["driver"] = {
        "cpu_s": round(driver_cpu, 3),
        "cpu_s_per_saga": round(driver_cpu / cfg.sagas, 6),
        "kernel_share": round(driver_kernel / driver_cpu, 3) if driver_cpu else 0.0,
        "cpu_util": 0.0,
        "peak_rss_mb": round(own_peak_rss_mb(), 1),
    }
    figures = phase_figures(tracker, times, latencies, steps_done, processes)
    figures["outbox_backlog"] = backlog_summary(samples)
    figures["transactions_per_saga"] = {
        name: round((counts_after[name] - counts_before[name]) / cfg.sagas, 2)
        for name in counts_after
        if name in counts_before
    }
    figures["machine"] = machine
    return figures


async def transaction_counts(
    bootstrap: str, checkpoints: str, engine: AsyncEngine
) -> dict[str, float]:
    """Kafka transactions and database commits so far (what a phase's difference counts).

    ``kafka``: every relay transaction writes one checkpoint record and one commit marker
    to the checkpoint topic, so half its end offsets. ``database``: ``xact_commit`` of
    the database (PostgreSQL only), so every process that uses it, statements outside a
    transaction included (each is one).
    """
    counts: dict[str, float] = {}
    try:
        ends = await end_offsets(bootstrap, [(checkpoints, 0)])
        counts["kafka"] = sum(ends.values()) / 2
        if engine.dialect.name == "postgresql":
            async with engine.connect() as conn:
                commits = await conn.execute(
                    text(
                        "SELECT xact_commit FROM pg_stat_database"
                        " WHERE datname = current_database()"
                    )
                )
                counts["database"] = float(commits.scalar_one())
    except Exception:  # a figure left out, not a failed run
        log.debug("transaction counts unavailable", exc_info=True)
    return counts


def machine_figures(
    start: tuple[float, float],
    end: tuple[float, float],
    infra_start: dict[str, float],
    times: PhaseTimes,
    sagas: int,
) -> dict[str, Any]:
    """How busy the whole machine was (every process, the broker, PostgreSQL, others)."""
    busy, total = end[0] - start[0], end[1] - start[1]
    infra = {
        name: {
            "cpu_s_per_saga": round((seconds - infra_start.get(name, 0.0)) / sagas, 6),
            "cpu_util": round((seconds - infra_start.get(name, 0.0)) / times.elapsed_s, 3),
        }
        for name, seconds in infrastructure_cpu().items()
    }
    return {
        "cores": os.cpu_count() or 1,
        "busy_cores": round(busy / times.elapsed_s, 2),
        "busy_share": round(busy / total, 3) if total else 0.0,
        "shared_servers": infra,
    }


def own_peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def step_latencies(
    part_engines: dict[str, AsyncEngine], tracker: Tracker, times: PhaseTimes, cfg: BenchConfig
) -> tuple[list[float], int]:
    """Latencies (s) of the commands that followed a reply, and commands handled."""
    ids = set(tracker.started_at)
    first = step_name(0)
    latencies: list[float] = []
    handled = 0
    for name, engine in part_engines.items():
        table = rows_table(name)
        query = select(
            table.c.saga_id,
            table.c.step,
            table.c.attempt,
            table.c.kind,
            table.c.command_at,
            table.c.read_at,
        ).where(table.c.read_at >= times.started_at - 1)
        async with engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        for r in rows:
            if r.saga_id not in ids:
                continue
            handled += 1
            if r.kind == "command" and r.step == first and r.attempt == 1:
                continue
            latencies.append(r.read_at - r.command_at)
    # A step that failed for good rolled its row back; it was handled all the same.
    handled += sum(1 for f in tracker.finished.values() if f.status == "compensated")
    return latencies, handled


async def sample_backlog(
    engine: AsyncEngine,
    part_engines: dict[str, AsyncEngine],
    samples: list[dict[str, float]],
    t0: float,
    interval_s: float,
    stop: asyncio.Event,
) -> None:
    query = select(func.count()).select_from(t.outbox).where(t.outbox.c.published_at.is_(None))
    while not stop.is_set():
        try:
            async with engine.connect() as conn:
                coord = int((await conn.execute(query)).scalar_one())
            parts = 0
            for e in part_engines.values():
                async with e.connect() as conn:
                    parts += int((await conn.execute(query)).scalar_one())
            samples.append(
                {"t": round(time.time() - t0, 2), "coordinator": coord, "participants": parts}
            )
        except Exception:  # a failed sample is a gap in the series, not a failed run
            log.debug("backlog sample failed", exc_info=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval_s):
                await stop.wait()


def backlog_summary(samples: list[dict[str, float]]) -> dict[str, Any]:
    coord = [s["coordinator"] for s in samples] or [0]
    parts = [s["participants"] for s in samples] or [0]
    return {
        "max_coordinator": max(coord),
        "mean_coordinator": round(sum(coord) / len(coord), 1),
        "max_participants": max(parts),
        "series": samples,
    }
