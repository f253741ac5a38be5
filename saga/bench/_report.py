"""Figures of a run: percentiles, per-process CPU and memory, and the printed table."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from saga.bench._phase import PhaseTimes, Tracker
from saga.bench._procs import Worker, peak_rss_mb


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of ``values`` (0.0 for none); monotonic in ``p``."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_figures(prefix: str, seconds: Sequence[float]) -> dict[str, float]:
    """``{prefix}p50_ms``... of latencies given in seconds (rounded to 0.01 ms)."""
    ms = [s * 1000 for s in seconds]
    out = {f"p{p}_{prefix}_ms": round(percentile(ms, p), 2) for p in (50, 95, 99)}
    out[f"max_{prefix}_ms"] = round(max(ms), 2) if ms else 0.0
    out[f"mean_{prefix}_ms"] = round(sum(ms) / len(ms), 2) if ms else 0.0
    return out


def process_figures(
    workers: Iterable[Worker], phase: str, sagas: int
) -> dict[str, dict[str, float]]:
    """CPU seconds (total and per saga) of each worker in ``phase`` and its peak RSS."""
    out: dict[str, dict[str, float]] = {}
    for w in workers:
        start = w.cpu_marks.get(f"{phase}:start")
        end = w.cpu_marks.get(f"{phase}:end")
        if start is None or end is None:
            continue
        cpu = max(end - start, 0.0)
        kernel = w.kernel_marks.get(f"{phase}:end", 0.0) - w.kernel_marks.get(f"{phase}:start", 0.0)
        out[w.role] = {
            "cpu_s": round(cpu, 3),
            "cpu_s_per_saga": round(cpu / sagas, 6) if sagas else 0.0,
            "kernel_share": round(kernel / cpu, 3) if cpu else 0.0,
            "cpu_util": 0.0,
            "peak_rss_mb": round(w.cpu_marks.get(f"{phase}:rss", 0.0) or peak_rss_mb(w.pid), 1),
        }
    return out


def phase_figures(
    tracker: Tracker,
    times: PhaseTimes,
    step_latencies_s: Sequence[float],
    steps_done: int,
    processes: dict[str, dict[str, float]],
) -> dict[str, Any]:
    """The figures of one phase (the JSON keys of the report)."""
    finished = list(tracker.finished.values())
    by_status: dict[str, int] = {}
    for f in finished:
        by_status[f.status] = by_status.get(f.status, 0) + 1
    elapsed = times.elapsed_s
    for proc in processes.values():
        proc["cpu_util"] = round(proc["cpu_s"] / elapsed, 3)
    return {
        "sagas": len(finished),
        "outcomes": by_status,
        "elapsed_s": round(elapsed, 3),
        "sagas_per_s": round(len(finished) / elapsed, 1),
        "steps": steps_done,
        "steps_per_s": round(steps_done / elapsed, 1),
        **latency_figures("step", step_latencies_s),
        "step_samples": len(step_latencies_s),
        **latency_figures("saga", [f.duration_s for f in finished]),
        "processes": processes,
    }


def render(report: dict[str, Any], console: Console) -> None:
    """Print the report as tables (after the line of the database's durability)."""
    cfg = report["config"]
    if "database" in report:
        console.print(
            f"database: {report['database']['description']}", highlight=False, soft_wrap=True
        )
    phases = [
        (name, report[name])
        for name in ("empty", "scale", "baseline", "baseline_exactly_once")
        if name in report
    ]
    # The run's description goes on a line of its own: as a table title it was wrapped
    # to the width of the table, one word per line for a narrow one.
    console.print(
        f"saga bench: {cfg['sagas']} sagas x {cfg['steps']} steps, {cfg['database']}, "
        f"relay {cfg['relay_mode']}"
        + (", a producer per lane" if cfg.get("producer_per") == "lane" else "")
        + (" in `saga relay`, " if cfg.get("relay_process") else ", ")
        + (f"rate {cfg['rate']}/s" if cfg["rate"] else "flat out")
        + f", concurrency {cfg['concurrency']}"
        + f", {cfg.get('coordinators', 1)} coordinator(s)",
        highlight=False,
        soft_wrap=True,
    )
    table = Table()
    table.add_column("figure")
    for name, _ in phases:
        table.add_column(name, justify="right")
    rows = [
        ("sagas/s", "sagas_per_s"),
        ("steps/s", "steps_per_s"),
        ("step p50 ms", "p50_step_ms"),
        ("step p95 ms", "p95_step_ms"),
        ("step p99 ms", "p99_step_ms"),
        ("saga p50 ms", "p50_saga_ms"),
        ("saga p95 ms", "p95_saga_ms"),
        ("saga p99 ms", "p99_saga_ms"),
        ("elapsed s", "elapsed_s"),
    ]
    for label, key in rows:
        table.add_row(label, *[str(p.get(key, "")) for _, p in phases])
    table.add_row("outcomes", *[_outcomes(p) for _, p in phases])
    console.print(table)

    procs = Table(
        title="processes (CPU s per saga, its kernel share, CPU utilisation, peak RSS MiB)"
    )
    procs.add_column("phase")
    procs.add_column("process")
    procs.add_column("cpu s/saga", justify="right")
    procs.add_column("kernel", justify="right")
    procs.add_column("cpu util", justify="right")
    procs.add_column("peak RSS MiB", justify="right")
    for name, p in phases:
        for role, f in p["processes"].items():
            procs.add_row(
                name,
                role,
                f"{f['cpu_s_per_saga']:.5f}",
                f"{f.get('kernel_share', 0.0):.0%}",
                f"{f['cpu_util']:.2f}",
                f"{f['peak_rss_mb']:.0f}",
            )
    console.print(procs)
    for name, p in phases:
        machine = p.get("machine")
        if machine:
            console.print(
                f"[bold]{name}[/]: machine busy {machine['busy_cores']} of {machine['cores']} "
                "cores (everything on the box, other users included); "
                + ", ".join(
                    f"{k} {v['cpu_util']} cores, {v['cpu_s_per_saga'] * 1000:.2f} ms CPU/saga"
                    for k, v in machine.get("shared_servers", {}).items()
                )
            )
        backlog = p.get("outbox_backlog")
        if backlog:
            console.print(
                f"[bold]{name}[/]: outbox backlog max coordinator={backlog['max_coordinator']} "
                f"participants={backlog['max_participants']} "
                f"mean coordinator={backlog['mean_coordinator']} "
                f"({len(backlog['series'])} samples)"
            )
        per_saga = p.get("transactions_per_saga")
        if per_saga:
            console.print(
                f"[bold]{name}[/]: per saga "
                + ", ".join(
                    f"{count} {label}"
                    for key, label in (
                        ("kafka", "Kafka transactions"),
                        ("database", "database commits"),
                    )
                    if (count := per_saga.get(key)) is not None
                )
            )
    if "empty" in report:
        e = report["empty"]
        for name, how in (
            ("baseline", "the bare aiokafka round trip"),
            ("baseline_exactly_once", "the bare aiokafka round trip with Kafka transactions"),
        ):
            b = report.get(name)
            if b and b["sagas_per_s"]:
                console.print(
                    f"saga throughput is {100 * e['sagas_per_s'] / b['sagas_per_s']:.1f}% of "
                    f"{how}; step p50 {e['p50_step_ms']} ms vs {b['p50_step_ms']} ms"
                )
    if "scale_ratio" in report:
        r = report["scale_ratio"]
        console.print(
            f"with {report['config']['scale_preload']} finished sagas preloaded: step latency "
            f"p50 x{r['p50_step']}, p99 x{r['p99_step']} of the empty database"
        )


def _outcomes(phase: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(phase.get("outcomes", {}).items()))
