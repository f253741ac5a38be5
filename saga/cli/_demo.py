"""``saga demo``: the order-placement saga end to end on the embedded default.

Everything runs in this process against the local Kafka broker: the coordinator (with
its relay and timers) on a SQLite file, and the four example services (inventory,
payments, orders, shipping) on a second SQLite file with their own relay — two
databases, as two real deployments would have. A fresh topic prefix keeps every run
apart. It places orders that succeed and orders that compensate, shows progress while
they run, prints each saga's timeline and final status, and exits 0 when every saga
ended as expected. It prints the durability settings of the coordinator's database
first (:func:`saga.store.durability`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from saga.cli import _options as opt
from saga.cli._common import configure_logging, settings

TERMINAL = {"completed", "compensated", "stuck", "aborted"}
_NOISY = {"message_id", "event", "definition_hash", "causation_id", "input"}
"""Audit details left out of the printed timeline (they are in ``--json``)."""


@dataclass(frozen=True)
class DemoOrder:
    """One order the demo places, and how its saga must end."""

    label: str
    simulate: str | None
    expected: str


ORDERS = (
    DemoOrder("apples and a pear, all goes well", None, "completed"),
    DemoOrder("payment declined: release the stock", "payment_declined", "compensated"),
    DemoOrder("out of stock: nothing to undo", "out_of_stock", "compensated"),
    DemoOrder("inventory never answers: timeout, release", "inventory_timeout", "compensated"),
    DemoOrder("shipping flaky after the pivot: retried", "shipping_flaky", "completed"),
)


def order_input(n: int, order: DemoOrder) -> dict[str, Any]:
    """The saga input of the demo's ``n``-th order."""
    from services.orders import order_placement_input

    return order_placement_input(
        f"order-{n}-{uuid.uuid4().hex[:6]}",
        f"customer-{n}",
        [{"sku": "sku-apple", "quantity": 2}, {"sku": "sku-pear", "quantity": 1}],
        4200,
        order.simulate,
    )


@click.command("demo")
@click.option("--timeout", default=90.0, show_default=True, help="Give up after this many seconds.")
@opt.json("Print the outcome as JSON.")
@opt.folder("--workdir", "Keep the databases here (and keep the run's topics).")
def demo(timeout: float, as_json: bool, workdir: Path | None) -> None:
    """Run the order-placement demo against the local Kafka broker (SQLite, one process)."""
    s = settings()
    _quiet_library_logs(s.log_level if "SAGA_LOG_LEVEL" in os.environ else None)
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="saga-demo-") as tmp:
        root = workdir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        keep = workdir is not None
        outcome = asyncio.run(_run(s.kafka_bootstrap_servers, root, timeout, console, keep=keep))
    failures = [o for o in outcome if o["status"] != o["expected"]]
    if as_json:
        click.echo(json.dumps(outcome, indent=2, default=str))
    else:
        _print(outcome)
    if failures:
        raise click.ClickException(
            f"{len(failures)} saga(s) did not end as expected; "
            "rerun with SAGA_LOG_LEVEL=DEBUG to see why"
        )


async def _run(
    bootstrap: str, root: Path, time_limit: float, console: Console, *, keep: bool
) -> list[dict[str, Any]]:
    """Run the demo; its topics are deleted at the end unless ``keep`` (databases kept)."""
    from saga.errors import TransportError
    from saga.kafka import delete_topics_with_prefix

    prefix = f"demo-{uuid.uuid4().hex[:8]}."
    try:
        return await _run_demo(bootstrap, prefix, root, time_limit, console)
    finally:
        if not keep:
            with contextlib.suppress(TransportError):
                await delete_topics_with_prefix(bootstrap, prefix)


async def _run_demo(
    bootstrap: str, prefix: str, root: Path, time_limit: float, console: Console
) -> list[dict[str, Any]]:
    from saga.coordinator import CoordinatorConfig, CoordinatorRuntime, RuntimeConfig, start_saga
    from saga.definition.examples.order_placement import ORDER_PLACEMENT
    from saga.relay import RelayConfig
    from saga.settings import Settings
    from saga.store import durability
    from saga.topics import Topics
    from services import run_services

    topics = Topics(prefix=prefix)
    config = RuntimeConfig(
        database_url=f"sqlite+aiosqlite:///{root / 'coordinator.db'}",
        bootstrap_servers=bootstrap,
        topics=topics,
        coordinator=CoordinatorConfig(poll_timeout_ms=50),
        relay=RelayConfig(poll_interval_ms=20, linger_ms=0),
        partitions=3,
    )
    service_settings = Settings(
        database_url=f"sqlite+aiosqlite:///{root / 'services.db'}",
        kafka_bootstrap_servers=bootstrap,
        topic_prefix=prefix,
        partitions=3,
    )
    console.print(f"[bold]saga demo[/] topics {prefix}*  databases in {root}")
    stop_services = asyncio.Event()
    services_ready = asyncio.Event()
    async with CoordinatorRuntime(config, [ORDER_PLACEMENT]) as runtime:
        database = await durability(runtime.engine)
        console.print(
            f"database: {database.describe()}", highlight=False, markup=False, soft_wrap=True
        )
        services = asyncio.create_task(
            run_services(service_settings, stop=stop_services, ready=services_ready)
        )
        coordinator = asyncio.create_task(runtime.run())
        try:
            waited = time.monotonic()
            await _until_ready(runtime, services_ready, [services, coordinator], console)
            console.print(
                f"ready after {time.monotonic() - waited:.1f} s: the coordinator and the"
                " services have joined their consumer groups"
            )
            started = []
            for n, order in enumerate(ORDERS, 1):
                result = await start_saga(
                    runtime.store,
                    runtime.definitions,
                    topics,
                    ORDER_PLACEMENT.name,
                    order_input(n, order),
                    now=datetime.now(UTC),
                    idempotency_key=f"{prefix}order-{n}",
                )
                started.append((order, result.saga_id))
                console.print(f"  placed order {n}: {order.label}  (saga {result.saga_id})")
            statuses = await _wait(runtime, [sid for _, sid in started], time_limit, console)
            outcome = []
            for order, sid in started:
                trail = await runtime.store.audit_trail(str(sid))
                outcome.append(
                    {
                        "saga_id": str(sid),
                        "order": order.label,
                        "expected": order.expected,
                        "status": statuses[sid],
                        "timeline": [
                            {
                                "at": r.recorded_at.isoformat(),
                                "kind": r.kind,
                                "step": r.step,
                                "attempt": r.attempt,
                                "detail": r.detail,
                            }
                            for r in trail
                        ],
                    }
                )
            return outcome
        finally:
            runtime.stop()
            stop_services.set()
            await asyncio.gather(coordinator, services, return_exceptions=True)


READY_TIMEOUT_S = 60.0
"""How long the demo waits for the consumer groups to form before placing orders."""


async def _until_ready(
    runtime: Any, services_ready: asyncio.Event, tasks: list[asyncio.Task[Any]], console: Console
) -> None:
    """Wait until the coordinator and every participant consume their partitions.

    Orders placed earlier would wait for a group to finish joining, and their first
    step would time out and be retried for no reason the demo means to show.
    """
    deadline = time.monotonic() + READY_TIMEOUT_S
    with console.status("starting: joining the consumer groups ...") as spinner:
        while True:
            for task in tasks:
                if task.done():
                    error = task.exception() if not task.cancelled() else None
                    raise click.ClickException(f"the demo stopped while starting: {error!r}")
            waiting = runtime.readiness()
            if waiting is None and not services_ready.is_set():
                waiting = "the example services are joining their consumer groups"
            if waiting is None:
                return
            if time.monotonic() > deadline:
                raise click.ClickException(
                    f"not ready after {READY_TIMEOUT_S:.0f} s ({waiting}); is the Kafka broker "
                    "at KAFKA_BOOTSTRAP_SERVERS healthy?"
                )
            spinner.update(f"starting: {waiting} ...")
            await asyncio.sleep(0.05)


class _KafkaNoise(logging.Filter):
    """Drops the Kafka client's chatter while groups form; keeps the errors that matter.

    aiokafka logs a retriable failure of a coordinator lookup as an error ("Group
    Coordinator Request failed", the broker is still electing one) and a lost
    coordinator as a warning, then retries by itself. Its other errors pass.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether ``record`` is shown."""
        if not record.name.startswith("aiokafka"):
            return True
        if record.levelno < logging.ERROR:
            return False
        args = record.args if isinstance(record.args, tuple) else ()
        return not any(getattr(arg, "retriable", False) for arg in args)


def _quiet_library_logs(level: str | None) -> None:
    """Log warnings and errors only (or ``level``), without the Kafka client's chatter.

    At ``DEBUG`` (``SAGA_LOG_LEVEL=DEBUG``) nothing is filtered.
    """
    configure_logging(level or "WARNING")
    if (level or "").upper() == "DEBUG":
        return
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _KafkaNoise) for f in handler.filters):
            handler.addFilter(_KafkaNoise())


async def _wait(
    runtime: Any, saga_ids: list[uuid.UUID], time_limit: float, console: Console
) -> dict[uuid.UUID, str]:
    deadline = time.monotonic() + time_limit
    statuses: dict[uuid.UUID, str] = {}
    last = ""
    with console.status("running sagas ...") as spinner:
        while time.monotonic() < deadline:
            for sid in saga_ids:
                row = await runtime.store.get_saga(str(sid))
                statuses[sid] = row.status if row else "missing"
            done = sum(1 for v in statuses.values() if v in TERMINAL)
            line = f"{done}/{len(saga_ids)} sagas finished"
            if line != last:
                spinner.update(line)
                last = line
            if done == len(saga_ids):
                break
            await asyncio.sleep(0.1)
    return statuses


def _print(outcome: list[dict[str, Any]]) -> None:
    console = Console()
    for o in outcome:
        console.rule(f"{o['order']}  ->  [bold]{o['status']}[/]")
        table = Table(show_header=True, header_style="bold", box=None)
        for col in ("time", "what", "step", "attempt", "detail"):
            table.add_column(col)
        t0 = datetime.fromisoformat(o["timeline"][0]["at"]) if o["timeline"] else None
        for r in o["timeline"]:
            at = datetime.fromisoformat(r["at"])
            offset = f"+{(at - t0).total_seconds() * 1000:.0f} ms" if t0 else ""
            detail = ", ".join(
                f"{k}={v}" for k, v in r["detail"].items() if k not in _NOISY and v is not None
            )
            table.add_row(offset, r["kind"], r["step"] or "", str(r["attempt"] or ""), detail[:70])
        console.print(table)
    summary = Table(title="outcome", show_header=True, header_style="bold")
    for col in ("saga", "order", "expected", "status"):
        summary.add_column(col)
    for o in outcome:
        ok = o["status"] == o["expected"]
        summary.add_row(
            o["saga_id"][:8],
            o["order"],
            o["expected"],
            ("[green]" if ok else "[red]") + o["status"],
        )
    console.print(summary)
