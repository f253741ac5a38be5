"""The chaos run: real processes, a seeded kill schedule, then the invariant checker.

Theory of operation
-------------------
:func:`run_chaos` sets up a fresh deployment (topic prefix, two PostgreSQL schemas: the
coordinator's and the services'), starts OS processes. With one coordinator:

* ``saga coordinator --no-relay`` (coordinator loop and timers),
* ``saga relay`` (the relays of the replies partitions, in a process of their own);

with ``coordinators=N`` (2 or more): N ``saga coordinator`` processes, each running the
relays of the partitions it owns, and one more that the monkey adds and removes during
the run, so partitions keep moving. Then ``participant_replicas`` copies of

* ``saga chaos participants`` (the four example services in one process, their own
  relays, and a :class:`saga.testing.FaultInjector` on every participant: replies sent
  twice, late, out of order), all on the services' one database; with 2 or more, the
  last copy dies inside a relay's Kafka transaction (``crash_in_transaction_after``)
  and is restarted —

and then, concurrently:

* a *driver* starts ``config.sagas`` order-placement sagas (a seeded mix of the
  ``simulate`` failure modes, so outcomes mix completed and compensated), as the API
  would: one :func:`saga.coordinator.start_saga` transaction each, except every
  ``kafka_starts_every``-th, whose start request goes to the starts topic twice (a
  resend): each must start exactly one saga;
* a *monkey* follows a seeded random schedule: it SIGKILLs a coordinator, the relay
  or a participants replica at random moments and restarts it after a random pause,
  adds and removes the extra coordinator, (3-broker mode) SIGKILLs one Kafka broker
  and starts it again, and (``postgres_kills``) SIGKILLs the PostgreSQL postmaster and
  starts it again, SIGKILLing and restarting one of the other processes while the
  database is down (it must wait for the database, not exit);
* a *reporter* prints progress.

With ``postgres_kills`` the run brings its own PostgreSQL
(:class:`saga.chaos._postgres.DedicatedPostgres`: a durable cluster with its own data
directory and port, stopped at the end) and puts both schemas there; otherwise it uses
``postgres_url``. Either way it prints the database's durability settings at the start
(:func:`saga.store.durability`): the figures only hold on a durable database.

When the driver is done and the chaos window is over, the processes are left alone
until every saga is final (or parked as ``stuck``) and both outboxes are drained, or
until nothing moved for ``quiet_s`` seconds, or the global deadline. Then every process
is stopped by PID (also on failure), and :mod:`saga.chaos._invariants` reads the
databases and topics and computes the figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from aiokafka import AIOKafkaProducer
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import StartRequest, new_message_id
from saga.chaos._broker import cluster_running, ensure_cluster, restart_broker, stop_cluster
from saga.chaos._faults import format_faults
from saga.chaos._invariants import (
    FINAL,
    PARKED,
    InvariantReport,
    check_invariants,
    collect_evidence,
)
from saga.chaos._postgres import DedicatedPostgres
from saga.chaos._processes import ManagedProcess
from saga.coordinator import DefinitionCache, register_replies_partitions, start_saga
from saga.errors import ConfigError, StoreUnavailable, TransportError
from saga.kafka import (
    close_quietly,
    delete_topics_with_prefix,
    deployment_topics,
    ensure_topics,
    idempotent_producer,
    translate_kafka_errors,
)
from saga.store import Durability, SqlStore, create_engine, durability, translate_errors, upgrade
from saga.store.tables import outbox, sagas
from saga.testing import ReplyFaults
from saga.topics import Topics
from services.orders import order_placement_input

Progress = Callable[[str], None]

PARTICIPANTS: Final = ("inventory", "payments", "orders", "shipping")
DEFINITIONS: Final = "saga.definition.examples.order_placement:ORDER_PLACEMENT"
TRIPLE_BOOTSTRAP: Final = "127.0.0.1:29092,127.0.0.1:29192,127.0.0.1:29292"

DEFAULT_MIX: Final[tuple[tuple[str | None, float], ...]] = (
    (None, 0.55),
    ("payment_declined", 0.15),
    ("out_of_stock", 0.10),
    ("inventory_timeout", 0.05),
    ("shipping_flaky", 0.15),
)
"""``simulate`` failure modes of the example services and how often the driver picks each."""


@dataclass(frozen=True, kw_only=True)
class ChaosConfig:
    """What one chaos run does; everything random comes from ``seed``."""

    postgres_url: str = ""
    """Base PostgreSQL URL (asyncpg); the run creates two fresh schemas in it (ignored with
    ``postgres_kills``: the run's own PostgreSQL holds them)."""
    bootstrap_servers: str = "127.0.0.1:19092"
    """Kafka bootstrap servers (ignored with ``brokers=3``: the local 3-broker cluster)."""
    sagas: int = 200
    """How many sagas the driver starts."""
    seed: int = 1
    """Seed of the saga mix, the kill schedule and the reply faults."""
    brokers: int = 1
    """1: the given broker; 3: the local 3-broker cluster, and one broker is restarted."""
    workdir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "saga-chaos")
    """Where the process logs go (one sub-directory per run)."""
    start_rate: float = 8.0
    """Sagas started per second."""
    chaos_tail_s: float = 15.0
    """The monkey goes on this long after the last saga was started."""
    kill_every_s: tuple[float, float] = (3.0, 8.0)
    """Pause between two kills (uniform)."""
    down_s: tuple[float, float] = (0.1, 2.0)
    """How long a killed process stays down (uniform)."""
    broker_restarts: int = 1
    """Broker restarts in 3-broker mode."""
    postgres_kills: int = 0
    """SIGKILLs of the PostgreSQL postmaster (each followed by a restart after a pause).
    With 1 or more the run starts a durable PostgreSQL of its own (own data directory
    under the local infrastructure's state directory, own port on 127.0.0.1 from
    ``postgres_port``), puts its schemas there, and stops it at the end."""
    postgres_port: int = 25432
    """First port tried for the run's own PostgreSQL (the first free one is used)."""
    faults: ReplyFaults | None = None
    """Reply faults of the participants; default: duplicates, delays and reordering."""
    mix: tuple[tuple[str | None, float], ...] = DEFAULT_MIX
    """``simulate`` modes and weights."""
    quiet_s: float = 45.0
    """With no progress for this long, unfinished sagas count as lost."""
    deadline_s: float = 900.0
    """Global deadline of the whole run (set-up, chaos, settling, checks)."""
    partitions: int = 3
    """Partitions of the deployment's topics."""
    coordinators: int = 1
    """Coordinator replicas. 1: one ``saga coordinator --no-relay`` and one ``saga relay``.
    2 or more: that many ``saga coordinator`` processes, each running the relays of the
    partitions it owns, and one more that the monkey adds and removes during the run."""
    participant_replicas: int = 1
    """Replicas of the participants process (all four services, one shared database).
    With 2 or more, the last one is killed inside a relay transaction
    (``crash_in_transaction_after``) and restarted."""
    crash_in_transaction_after: int = 20
    """The fault replica dies inside its relays' N-th Kafka transaction (counted over
    all its relays; it counts again from 0 after each restart)."""
    producer_per: str = "process"
    """``RelayConfig.producer_per`` of every process (``SAGA_RELAY_PRODUCER_PER``), or
    ``mixed``: ``process`` and ``lane`` in turn, in the order the processes are listed
    (as in a rolling change of the setting; the lanes move between both kinds)."""
    kafka_starts_every: int = 3
    """Every N-th saga is started through the starts topic (a start request published
    twice, as a producer's resend would) instead of a direct start; 0: never."""
    log_level: str = "WARNING"
    """Log level of the processes."""
    keep_schemas: bool = False
    """Keep the PostgreSQL schemas and the topics (both are kept anyway when an
    invariant fails)."""

    def __post_init__(self) -> None:
        if self.sagas < 1:
            raise ValueError("sagas must be >= 1")
        if self.brokers not in (1, 3):
            raise ValueError("brokers must be 1 or 3")
        if self.start_rate <= 0:
            raise ValueError("start_rate must be > 0")
        if self.coordinators < 1 or self.participant_replicas < 1:
            raise ValueError("coordinators and participant_replicas must be >= 1")
        if self.postgres_kills < 0:
            raise ValueError("postgres_kills must be >= 0")
        if self.producer_per not in ("lane", "process", "mixed"):
            raise ValueError(
                f"producer_per must be lane, process or mixed, not {self.producer_per!r}"
            )
        if not self.postgres_url and not self.postgres_kills:
            raise ValueError("postgres_url is needed (unless postgres_kills brings a server)")

    def reply_faults(self) -> ReplyFaults:
        """The participants' reply faults."""
        return self.faults or ReplyFaults(
            seed=self.seed, duplicate_rate=0.1, delay_ms=0, delay_jitter_ms=150, reorder=True
        )


@dataclass(kw_only=True)
class ChaosResult:
    """The outcome of :func:`run_chaos`."""

    report: InvariantReport
    """The invariant figures."""
    kills: dict[str, int]
    """SIGKILLs per process (``broker``: broker restarts; ``postgres``: postmaster kills)."""
    unexpected_exits: dict[str, int]
    """Processes that exited by themselves (they were restarted)."""
    settled: bool
    """Whether every saga was final or parked and both outboxes drained in time."""
    elapsed_s: float
    prefix: str
    """Topic prefix of the run."""
    schemas: tuple[str, str]
    """The coordinator's and the services' PostgreSQL schemas."""
    logs: Path
    """Directory of the process logs."""
    database: Durability | None = None
    """The durability settings of the database the run used (read at the start)."""
    kafka_starts: int = 0
    """Sagas the driver started through the starts topic (each request sent twice)."""

    @property
    def ok(self) -> bool:
        """Whether every invariant holds."""
        return self.report.ok


def _with_schema(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}search_path={schema}"


async def _execute(url: str, sql: str) -> None:
    engine = create_engine(url)
    try:
        with translate_errors("chaos: set up the schema"):
            async with engine.begin() as conn:
                await conn.execute(text(sql))
    finally:
        await engine.dispose()


def saga_input(n: int, simulate: str | None, run: str) -> dict[str, Any]:
    """The input of the driver's ``n``-th order-placement saga."""
    return order_placement_input(
        f"{run}-order-{n}",
        f"customer-{n % 97}",
        [{"sku": "sku-apple", "quantity": 1 + n % 3}, {"sku": "sku-pear", "quantity": 1}],
        1000 + n,
        simulate,
    )


class _Run:
    """State of one run (the processes, counters, the driver's saga ids)."""

    def __init__(self, config: ChaosConfig, progress: Progress) -> None:
        self.config = config
        self.progress = progress
        self.rng = random.Random(config.seed)
        self.run_id = uuid.uuid4().hex[:8]
        self.prefix = f"chaos-{self.run_id}."
        self.topics = Topics(prefix=self.prefix)
        self.schemas = (f"chaos_{self.run_id}_coordinator", f"chaos_{self.run_id}_services")
        self.use_database(config.postgres_url)
        self.postgres: DedicatedPostgres | None = None
        """The run's own PostgreSQL (``postgres_kills``)."""
        self.bootstrap = TRIPLE_BOOTSTRAP if config.brokers == 3 else config.bootstrap_servers
        self.logs = config.workdir / f"{time.strftime('%Y%m%d-%H%M%S')}-{self.run_id}"
        self.started: list[str] = []
        self._producer_started = False
        self.kafka_starts = 0
        self.kills: Counter[str] = Counter()
        self.unexpected: Counter[str] = Counter()
        self.driving = True
        self.chaos_on = True
        self.t0 = time.monotonic()
        self.processes: dict[str, ManagedProcess] = {}
        self._restarting: set[str] = set()
        self.scaled: str | None = None
        """The coordinator the monkey adds and removes (``None`` with one coordinator)."""
        self.crashing: str | None = None
        """The participants replica that dies inside a relay transaction."""
        self.transaction_crashes = 0
        self.database: Durability | None = None

    def use_database(self, url: str) -> None:
        """Put the run's schemas on the server of ``url``."""
        self.base_url = url
        self.coordinator_url = _with_schema(url, self.schemas[0])
        self.services_url = _with_schema(url, self.schemas[1])

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def say(self, msg: str) -> None:
        self.progress(f"[chaos {self.elapsed():5.0f}s] {msg}")

    def build_processes(self) -> None:
        c = self.config
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("SAGA_") and k != "KAFKA_BOOTSTRAP_SERVERS"
        }
        common = {
            **base,
            "SAGA_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "SAGA_TOPIC_PREFIX": self.prefix,
            "SAGA_PARTITIONS": str(c.partitions),
            "SAGA_REPLICATION_FACTOR": str(3 if c.brokers == 3 else 1),
            "SAGA_LOG_LEVEL": c.log_level,
            "PYTHONUNBUFFERED": "1",
        }
        coordinator_env = {
            **common,
            "SAGA_DATABASE_URL": self.coordinator_url,
            "SAGA_DEFINITIONS": DEFINITIONS,
        }
        cli = [sys.executable, "-m", "saga.cli"]
        self.processes = {}
        if c.coordinators == 1:
            self._add("coordinator", [*cli, "coordinator", "--no-relay"], coordinator_env)
            self._add("relay", [*cli, "relay"], coordinator_env)
        else:
            for i in range(1, c.coordinators + 2):  # the last one comes and goes
                self._add(f"coordinator-{i}", [*cli, "coordinator"], coordinator_env)
            self.scaled = f"coordinator-{c.coordinators + 1}"
        services_env = {
            **common,
            "SAGA_DATABASE_URL": self.services_url,
            "SAGA_FAULTS": format_faults(c.reply_faults()),
        }
        for i in range(1, c.participant_replicas + 1):
            name = "participants" if c.participant_replicas == 1 else f"participants-{i}"
            env = dict(services_env)
            if c.participant_replicas > 1 and i == c.participant_replicas:
                env["SAGA_RELAY_CRASH_IN_TRANSACTION_AFTER"] = str(c.crash_in_transaction_after)
                self.crashing = name
            self._add(name, [*cli, "chaos", "participants"], env)

    def _add(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        producer_per = self.config.producer_per
        if producer_per == "mixed":
            producer_per = ("process", "lane")[len(self.processes) % 2]
        env = {**env, "SAGA_RELAY_PRODUCER_PER": producer_per}
        self.processes[name] = ManagedProcess(
            name, argv, env=env, log_path=self.logs / f"{name}.log"
        )

    def initial(self) -> list[str]:
        """The processes that run from the start (the scaled coordinator joins later)."""
        return [n for n in self.processes if n != self.scaled]

    # ------------------------------------------------------------------ the tasks

    async def drive(self, store: SqlStore, definitions: DefinitionCache) -> None:
        c = self.config
        modes = [m for m, _ in c.mix]
        weights = [w for _, w in c.mix]
        rng = random.Random(c.seed * 7919 + 1)
        interval = 1.0 / c.start_rate
        next_at = time.monotonic()
        producer = idempotent_producer(self.bootstrap)
        try:
            for n in range(c.sagas):
                simulate = rng.choices(modes, weights)[0]
                order = saga_input(n, simulate, self.run_id)
                key = f"{self.prefix}{n}"
                if c.kafka_starts_every and n % c.kafka_starts_every == c.kafka_starts_every - 1:
                    saga_id = await self._request_start(producer, order, key)
                    self.kafka_starts += 1
                else:
                    saga_id = await self._start(store, definitions, order, key)
                self.started.append(saga_id)
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        finally:
            await close_quietly(producer)
        self.driving = False
        self.say(f"driver: all {c.sagas} sagas started")

    async def _start(
        self, store: SqlStore, definitions: DefinitionCache, order: dict[str, Any], key: str
    ) -> str:
        """Start a saga as the API would: one transaction."""
        while True:
            try:
                result = await start_saga(
                    store,
                    definitions,
                    self.topics,
                    "order_placement",
                    order,
                    now=datetime.now(UTC),
                    idempotency_key=key,
                )
                return str(result.saga_id)
            except StoreUnavailable as exc:
                self.say(f"driver: database unavailable ({exc.message}); retrying")
                await asyncio.sleep(0.5)

    async def _request_start(
        self, producer: AIOKafkaProducer, order: dict[str, Any], key: str
    ) -> str:
        """Start a saga through the starts topic: the request published twice (a resend)."""
        request = StartRequest(
            saga_type="order_placement",
            input=order,
            idempotency_key=key,
            saga_id=new_message_id(),
            requested_by="chaos-driver",
        )
        for copy in (1, 2):
            while True:
                try:
                    with translate_kafka_errors("publish a start request"):
                        if copy == 1 and not self._producer_started:
                            await producer.start()
                            self._producer_started = True
                        await producer.send_and_wait(
                            self.topics.starts, request.to_bytes(), key=key.encode()
                        )
                    break
                except TransportError as exc:
                    self.say(f"driver: Kafka unavailable ({exc.message}); retrying")
                    await asyncio.sleep(0.5)
        return str(request.saga_id)

    async def monkey(self) -> None:
        c = self.config
        targets = [n for n in self.processes if n != self.scaled]
        broker_left = c.broker_restarts if c.brokers == 3 else 0
        postgres_left = c.postgres_kills if self.postgres is not None else 0
        driving_ended: float | None = None
        turn = 0
        while True:
            await asyncio.sleep(self.rng.uniform(*c.kill_every_s))
            if not self.driving:
                driving_ended = driving_ended or time.monotonic()
                tail_over = time.monotonic() - driving_ended > c.chaos_tail_s
                if tail_over and broker_left == 0 and postgres_left == 0:
                    break
            down = self.rng.uniform(*c.down_s)
            if broker_left and (self.rng.random() < 0.25 or not self.driving):
                broker_left -= 1
                node = self.rng.randint(1, 3)
                self.say(f"monkey: SIGKILL broker node {node}, restart after {down:.1f}s")
                self.kills["broker"] += 1
                await restart_broker(node, down_s=down)
                self.say(f"monkey: broker node {node} is back")
                continue
            if postgres_left and (self.rng.random() < 0.25 or not self.driving):
                postgres_left -= 1
                # `saga relay` touches the database only in its retrying loops.
                starters = [n for n in targets if n != "relay"]
                await self._crash_postgres(down, restart=self.rng.choice(starters))
                continue
            # The extra coordinator joins at the first turn, leaves at the third, and
            # comes and goes at random afterwards: partitions move both ways.
            turn += 1
            if self.scaled is not None and (turn in (1, 3) or self.rng.random() < 0.25):
                await self._scale(self.processes[self.scaled])
                continue
            await self._restart(self.rng.choice(targets), after=down)
        self.chaos_on = False
        self.say(f"monkey: done ({self._kill_text()}); letting the sagas settle")

    async def _restart(self, name: str, *, after: float, why: str = "") -> int:
        """SIGKILL the process ``name`` and start it again ``after`` seconds later.

        Returns:
            The size its log had before the start (where the new run's lines begin).
        """
        proc = self.processes[name]
        self._restarting.add(name)
        try:
            await proc.kill()
            self.kills[name] += 1
            self.say(f"monkey: SIGKILL {name}, {why or f'restart after {after:.1f}s'}")
            await asyncio.sleep(after)
            since = proc.log_path.stat().st_size if proc.log_path.exists() else 0
            proc.start()
            return since
        finally:
            self._restarting.discard(name)

    async def _crash_postgres(self, down: float, *, restart: str) -> None:
        """SIGKILL the run's PostgreSQL postmaster, wait ``down`` seconds, start it again.

        Meanwhile the process ``restart`` is SIGKILLed and started at once, so it starts
        while the database is down: it must wait for the database, not exit. The
        database stays down until its log says it waits (counted as ``outage_starts``)
        or it exited (the watchdog counts that as unexpected), at most 60 s.
        """
        assert self.postgres is not None
        pid = self.postgres.pid
        self.say(f"monkey: SIGKILL PostgreSQL postmaster (pid {pid}), restart after {down:.1f}s")
        if await self.postgres.crash() is not None:
            self.kills["postgres"] += 1
        since = await self._restart(restart, after=0.0, why="start it while PostgreSQL is down")
        proc = self.processes[restart]
        if await _logged(proc, "start-up: database unavailable", since, limit_s=60):
            self.kills["outage_starts"] += 1
            self.say(f"monkey: {restart} waits for the database")
        await asyncio.sleep(down)
        t = time.monotonic()
        await self.postgres.start()
        self.say(f"monkey: PostgreSQL is back after crash recovery ({time.monotonic() - t:.1f}s)")

    async def _scale(self, proc: ManagedProcess) -> None:
        """Add the extra coordinator, or remove it (SIGTERM: it finishes its batch)."""
        self._restarting.add(proc.name)
        try:
            if proc.alive:
                self.say(f"monkey: remove {proc.name} (SIGTERM); its partitions move")
                await proc.stop()
                self.kills["scale_down"] += 1
            else:
                self.say(f"monkey: add {proc.name}; partitions move to it")
                proc.start()
                self.kills["scale_up"] += 1
        finally:
            if not proc.alive:
                self._restarting.add(proc.name)  # stays down on purpose
            else:
                self._restarting.discard(proc.name)

    async def watchdog(self, stop: asyncio.Event) -> None:
        """Restart a process that exited by itself (counted as unexpected).

        The replica killed inside a relay transaction by its own fault injection is
        restarted too, counted under ``relay_mid_transaction``; once the chaos window
        is over it comes back without the fault.
        """
        while not stop.is_set():
            for name, proc in self.processes.items():
                if name not in self._restarting and not proc.alive:
                    if name == self.crashing and proc.returncode == -9:
                        self.kills["relay_mid_transaction"] += 1
                        self.say(f"watchdog: {name} died inside a relay transaction; restarting")
                        if not self.chaos_on:
                            proc.env.pop("SAGA_RELAY_CRASH_IN_TRANSACTION_AFTER", None)
                        proc.start()
                        continue
                    self.unexpected[name] += 1
                    self.say(f"watchdog: {name} exited with {proc.returncode}; restarting")
                    self.say(proc.log_tail(800))
                    proc.start()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await stop.wait()

    def _kill_text(self) -> str:
        return " ".join(f"{k}={v}" for k, v in sorted(self.kills.items())) or "no kills"

    async def status(self, engine: AsyncEngine, services: AsyncEngine) -> tuple[Counter[str], int]:
        with translate_errors("chaos: read the progress"):
            return await self._status(engine, services)

    async def _status(self, engine: AsyncEngine, services: AsyncEngine) -> tuple[Counter[str], int]:
        async with engine.connect() as conn:
            rows = await conn.execute(select(sagas.c.status, func.count()).group_by(sagas.c.status))
            statuses: Counter[str] = Counter({str(s): int(n) for s, n in rows})
            revisions = (await conn.execute(select(func.sum(sagas.c.revision)))).scalar() or 0
            backlog = await _backlog(conn)
        async with services.connect() as conn:
            backlog += await _backlog(conn)
        statuses["_backlog"] = backlog
        statuses["_revisions"] = int(revisions)
        return statuses, backlog

    async def report(self, engine: AsyncEngine, services: AsyncEngine, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await stop.wait()
            try:
                statuses, backlog = await self.status(engine, services)
            except StoreUnavailable:
                continue
            self.say(self._status_line(statuses, backlog))

    def _status_line(self, statuses: Counter[str], backlog: int) -> str:
        final = sum(statuses[s] for s in FINAL | PARKED)
        shown = " ".join(
            f"{s}={statuses[s]}"
            for s in ("running", "compensating", "completed", "compensated", "stuck")
        )
        return (
            f"started {len(self.started)}/{self.config.sagas}, final {final} ({shown}), "
            f"outbox backlog {backlog}, kills: {self._kill_text()}"
        )

    async def settle(self, engine: AsyncEngine, services: AsyncEngine, deadline: float) -> bool:
        """Wait until done, or nothing moved for ``quiet_s``, or the deadline."""
        last: tuple[int, int] | None = None
        last_change = time.monotonic()
        while time.monotonic() < deadline:
            try:
                statuses, backlog = await self.status(engine, services)
            except StoreUnavailable:
                await asyncio.sleep(1.0)
                continue
            done = sum(statuses[s] for s in FINAL | PARKED)
            if done >= len(self.started) and backlog == 0:
                self.say(f"settled: {self._status_line(statuses, backlog)}")
                return True
            signature = (statuses["_revisions"], backlog)
            if signature != last:
                last, last_change = signature, time.monotonic()
            elif time.monotonic() - last_change > self.config.quiet_s:
                self.say(f"no progress for {self.config.quiet_s:.0f}s; giving up waiting")
                return False
            await asyncio.sleep(0.5)
        self.say("global deadline reached while settling")
        return False


async def _backlog(conn: Any) -> int:
    query = select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))
    return int((await conn.execute(query)).scalar() or 0)


@contextlib.contextmanager
def _stopped_at_exit(run: _Run) -> Iterator[None]:
    try:
        yield
    finally:
        for proc in run.processes.values():
            proc.stop_now()


async def run_chaos(config: ChaosConfig, progress: Progress = print) -> ChaosResult:
    """Run one chaos scenario end to end and check the invariants (see the module doc).

    Every process it starts is stopped by PID before it returns, also on failure.

    Raises:
        TimeoutError: The global deadline passed before the checks could run.
        ConfigError: The 3-broker cluster could not be started.
    """
    from saga.definition.examples.order_placement import ORDER_PLACEMENT

    run = _Run(config, progress)
    deadline = time.monotonic() + config.deadline_s
    started_cluster = False
    ok = False
    settled = False
    report: InvariantReport | None = None
    try:
        async with asyncio.timeout(config.deadline_s):
            if config.brokers == 3:
                started_cluster = not cluster_running(3)
                run.say("starting the 3-broker cluster" if started_cluster else "3-broker cluster")
                # The cluster serves chaos runs only: one this run starts, starts empty.
                run.bootstrap = await ensure_cluster(3, fresh=started_cluster)
            if config.postgres_kills:
                run.postgres = DedicatedPostgres.claim(config.postgres_port)
                run.say(
                    f"starting the run's own PostgreSQL on 127.0.0.1:{run.postgres.port} "
                    f"({run.postgres.directory})"
                )
                await run.postgres.start()
                run.use_database(run.postgres.url)
            for schema in run.schemas:
                await _execute(run.base_url, f'CREATE SCHEMA "{schema}"')
            run.say(f"topics {run.prefix}*, schemas {', '.join(run.schemas)}, logs in {run.logs}")
            engine = create_engine(run.coordinator_url)
            services = create_engine(run.services_url)
            try:
                run.database = await durability(engine)
                run.say(f"database: {run.database.describe()}")
                await upgrade(engine)
                store = SqlStore(engine)
                definitions = DefinitionCache(store)
                await definitions.register([ORDER_PLACEMENT])
                await ensure_topics(
                    run.bootstrap,
                    deployment_topics(
                        run.topics,
                        PARTICIPANTS,
                        partitions=config.partitions,
                        replication_factor=3 if config.brokers == 3 else 1,
                    ),
                )
                # As `saga admin topics` would: the driver may start sagas first.
                await register_replies_partitions(
                    store, run.bootstrap, run.topics, run.topics.coordinator_group
                )
                run.build_processes()
                with _stopped_at_exit(run):
                    for name in run.initial():
                        run.processes[name].start()
                    if run.scaled is not None:
                        run._restarting.add(run.scaled)  # down until the monkey adds it
                    await _wait_services_schema(run, services)
                    stop = asyncio.Event()
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(run.watchdog(stop))
                        tg.create_task(run.report(engine, services, stop))
                        driver = tg.create_task(run.drive(store, definitions))
                        monkey = tg.create_task(run.monkey())
                        await asyncio.gather(driver, monkey)
                        settled = await run.settle(engine, services, deadline - 60)
                        stop.set()
                    for proc in run.processes.values():
                        await proc.stop()
                run.say("all processes stopped; reading the databases and topics")
                evidence = await collect_evidence(
                    coordinator_url=run.coordinator_url,
                    services_url=run.services_url,
                    bootstrap_servers=run.bootstrap,
                    topic_names=[
                        *(run.topics.commands(p) for p in PARTICIPANTS),
                        run.topics.replies,
                        run.topics.events,
                        run.topics.dlq,
                    ],
                    timeout_s=max(10.0, deadline - time.monotonic() - 5),
                )
            finally:
                await engine.dispose()
                await services.dispose()
            report = check_invariants(
                evidence,
                started=run.started,
                compensatable={
                    ORDER_PLACEMENT.name: frozenset(
                        s.name for s in ORDER_PLACEMENT.steps if s.compensation
                    )
                },
                commands_topics={run.topics.commands(p) for p in PARTICIPANTS},
            )
            ok = report.ok
    finally:
        for proc in run.processes.values():
            proc.stop_now()
        if ok and not config.keep_schemas:
            for schema in run.schemas:
                with contextlib.suppress(StoreUnavailable, OSError):
                    await _execute(run.base_url, f'DROP SCHEMA "{schema}" CASCADE')
            # A passed run's topics are evidence nobody needs; a failed run keeps them.
            with contextlib.suppress(TransportError, OSError):
                await delete_topics_with_prefix(run.bootstrap, run.prefix)
        elif run.schemas:
            where = f" (in {run.postgres.directory})" if run.postgres is not None else ""
            run.say(
                f"kept topics {run.prefix}*, schemas {', '.join(run.schemas)}{where}"
                f" and logs in {run.logs}"
            )
        if run.postgres is not None:
            run.say("stopping the run's own PostgreSQL")
            try:
                await run.postgres.stop()
            except (ConfigError, TimeoutError) as exc:
                run.say(
                    f"could not stop the run's own PostgreSQL ({exc}); stop it with "
                    f"pg_ctl -D {run.postgres.directory / 'data'} stop"
                )
        if started_cluster:
            run.say("stopping the 3-broker cluster this run started")
            await stop_cluster(3)
    assert report is not None
    return ChaosResult(
        report=report,
        kills=dict(run.kills),
        unexpected_exits=dict(run.unexpected),
        settled=settled,
        elapsed_s=run.elapsed(),
        prefix=run.prefix,
        schemas=run.schemas,
        logs=run.logs,
        database=run.database,
        kafka_starts=run.kafka_starts,
    )


async def _wait_services_schema(run: _Run, services: AsyncEngine) -> None:
    """Wait until the participants process created its tables (the status query needs them)."""
    query = text(
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_schema = :s AND table_name = 'saga_outbox'"
    )
    while True:
        with translate_errors("chaos: wait for the services' tables"):
            async with services.connect() as conn:
                found = (await conn.execute(query, {"s": run.schemas[1]})).scalar()
        if found:
            return
        for name, proc in run.processes.items():
            if name.startswith("participants") and not proc.alive:
                raise RuntimeError(f"the {name} process exited:\n{proc.log_tail()}")
        await asyncio.sleep(0.2)


async def _logged(proc: ManagedProcess, text: str, since: int, *, limit_s: float) -> bool:
    """Whether ``proc`` logs ``text`` after byte ``since`` of its log within ``limit_s``.

    Gives up early (``False``) when the process is gone.
    """
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), proc.log_path.open("rb") as log:
            log.seek(since)
            if text.encode() in log.read():
                return True
        if not proc.alive:
            return False
        await asyncio.sleep(0.2)
    return False
