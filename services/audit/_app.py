"""The independent auditor: a faust-streaming app over the lifecycle events topic.

Theory of operation
-------------------
The auditor reads nothing but the events topic (``<prefix>saga.events``; a test may
point it at a filtered copy). Two agents and two tables:

* ``on_events`` folds every event into the saga's record in the ``sagas`` table (see
  ``_fold.py``: final status, completed and compensated steps). When an event settles a
  saga (completed, compensated, aborted, stuck) it forwards the outcome, keyed by saga
  type, to the app's own ``<app id>-outcomes`` topic;
* ``on_outcomes`` counts the outcomes per saga type in a tumbling window over the event
  time (``occurred_at``) in the windowed ``outcome_counts`` table.

Forwarding re-partitions by saga type, so each count lives on one partition even when
several auditor workers share the work (the events topic is keyed by saga id). The
``sagas`` table is co-partitioned with the events topic: it gets the same number of
partitions, read from the broker at start.

Tables live in memory (``store="memory://"``) and are rebuilt from their changelog
topics when a worker starts. The web view (faust's aiohttp server) serves
``GET /sagas/{id}``, ``GET /outcomes?after=ID&limit=N`` (saga id order, the contract of
:func:`saga.audit.auditor_view`) and ``GET /counts``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import faust
from aiokafka.admin import AIOKafkaAdminClient

from contracts import START_REJECTED, ContractDecodeError, Envelope, MessageKind
from saga.errors import ConfigError
from saga.kafka import translate_kafka_errors
from saga.retry import Startup
from saga.topics import Topics
from services.audit._fold import fold_event

log = logging.getLogger("services.audit")

NAME = "audit"

METADATA_TRIES = 10
"""How often to look for the audited topic in the cluster metadata before giving up."""

MAX_PAGE = 1000
"""Most sagas one ``/outcomes`` page returns."""


@dataclass(frozen=True, kw_only=True)
class AuditorConfig:
    """How to run the auditor."""

    bootstrap_servers: str = "127.0.0.1:19092"
    """Kafka bootstrap servers."""
    topics: Topics = field(default_factory=Topics)
    """Topic names of the deployment (their prefix is the app id's prefix too)."""
    app_id: str = ""
    """Faust app id = consumer group and prefix of its own topics; default
    ``<topic prefix>saga-auditor``."""
    source_topic: str = ""
    """The topic to audit; default ``topics.events``."""
    web_host: str = "127.0.0.1"
    """Address the web view binds to."""
    web_port: int = 6066
    """Port of the web view."""
    window: timedelta = timedelta(minutes=1)
    """Size of the tumbling window of the outcome counts."""
    window_expires: timedelta = timedelta(days=1)
    """How long counted windows are kept."""
    replication_factor: int = 1
    """Replication factor of the auditor's own topics (changelogs, outcomes)."""
    data_dir: Path | None = None
    """faust's data directory; default a temporary one, removed at close."""

    def __post_init__(self) -> None:
        if self.window <= timedelta(0):
            raise ConfigError("the outcome window must be positive")
        if not 0 <= self.web_port <= 65535:
            raise ConfigError(f"web_port {self.web_port} is not a port")

    @property
    def resolved_app_id(self) -> str:
        """The app id in use."""
        return self.app_id or f"{self.topics.prefix}saga-auditor"

    @property
    def resolved_source(self) -> str:
        """The audited topic."""
        return self.source_topic or self.topics.events

    @property
    def url(self) -> str:
        """Base URL of the web view."""
        return f"http://{self.web_host}:{self.web_port}"


async def topic_partitions(bootstrap: str, topic: str) -> int:
    """How many partitions ``topic`` has.

    Raises:
        ConfigError: The topic does not exist.
        TransportError: Kafka cannot be reached.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    count = 0
    with translate_kafka_errors("read topic metadata"):
        await admin.start()
        try:
            for _ in range(METADATA_TRIES):  # a fresh topic may take a moment to show
                # Describe only a listed topic: a metadata request naming a missing topic
                # would make a broker with auto.create.topics.enable create it.
                if topic in await admin.list_topics():
                    described = await admin.describe_topics([topic])
                    count = sum(len(d.get("partitions") or ()) for d in described)
                    if count:
                        break
                await asyncio.sleep(0.2)
        finally:
            await admin.close()
    if not count:
        raise ConfigError(f"topic {topic} does not exist: create it with `saga admin topics`")
    return count


def _window_bounds(key: Any) -> tuple[str, float, float] | None:
    """``(count key, window start, window end)`` of a windowed table's raw key."""
    if isinstance(key, list | tuple) and len(key) == 2:
        inner, span = key
        if isinstance(span, list | tuple) and len(span) == 2:
            return str(inner), float(span[0]), float(span[1])
    return None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def build_app(config: AuditorConfig, partitions: int, data_dir: Path) -> faust.App:
    """The faust app of the auditor (not started).

    Args:
        config: How to run it.
        partitions: Partitions of the audited topic (the tables are co-partitioned).
        data_dir: faust's data directory.
    """
    app_id = config.resolved_app_id
    app = faust.App(
        app_id,
        broker=f"kafka://{config.bootstrap_servers.replace(',', ';kafka://')}",
        store="memory://",
        autodiscover=False,
        datadir=str(data_dir),
        topic_partitions=partitions,
        topic_replication_factor=config.replication_factor,
        consumer_auto_offset_reset="earliest",
        web_enabled=True,
        web_bind=config.web_host,
        web_host=config.web_host,
        web_port=config.web_port,
        web_in_thread=False,
    )
    # Table keys are text (saga id; "type|outcome"), values JSON.
    json_schema = faust.Schema(key_serializer="json", value_serializer="json")
    events = app.topic(config.resolved_source, key_serializer="raw", value_serializer="raw")
    outcomes = app.topic(
        f"{app_id}-outcomes",
        internal=True,
        partitions=partitions,
        key_serializer="raw",
        value_serializer="json",
    )
    sagas = app.Table("sagas", default=None, partitions=partitions, schema=json_schema)
    window_s = config.window.total_seconds()
    counts = (
        app.Table("outcome_counts", default=int, partitions=partitions, schema=json_schema)
        .tumbling(window_s, expires=config.window_expires.total_seconds())
        .relative_to(lambda event: float(event.value["occurred_at"]))
    )

    @app.agent(events, name="on_events")
    async def on_events(stream: Any) -> None:
        async for value in stream:
            try:
                env = Envelope.from_bytes(value)
            except ContractDecodeError as exc:
                log.warning("skipped a malformed event: %s", exc)
                continue
            if env.kind is not MessageKind.EVENT or env.type == START_REJECTED:
                continue  # a refused start request made no saga to audit
            key = str(env.saga_id)
            record, outcome = fold_event(sagas.get(key), env)
            sagas[key] = record
            if outcome is not None:
                await outcomes.send(
                    key=env.saga_type.encode(),
                    value={
                        "saga_id": key,
                        "saga_type": env.saga_type,
                        "outcome": outcome,
                        "occurred_at": env.occurred_at.timestamp(),
                    },
                )

    @app.agent(outcomes, name="on_outcomes")
    async def on_outcomes(stream: Any) -> None:
        async for value in stream:
            counts[f"{value['saga_type']}|{value['outcome']}"] += 1

    @app.page("/sagas/{saga_id}")
    async def saga_view(web: Any, request: Any, saga_id: str) -> Any:
        record = sagas.get(saga_id)
        if record is None:
            return web.json({"error": f"no events of saga {saga_id}"}, status=404)
        return web.json(record)

    @app.page("/outcomes")
    async def outcomes_view(web: Any, request: Any) -> Any:
        after = request.query.get("after", "")
        try:
            limit = max(1, min(MAX_PAGE, int(request.query.get("limit", MAX_PAGE))))
        except ValueError:
            return web.json({"error": "limit must be a number"}, status=400)
        ids = sorted(k for k in list(sagas.keys()) if k > after)
        page = ids[:limit]
        return web.json(
            {
                "sagas": [sagas[k] for k in page],
                "next": page[-1] if len(ids) > limit else None,
            }
        )

    @app.page("/counts")
    async def counts_view(web: Any, request: Any) -> Any:
        rows = []
        for raw, value in list(counts.table.items()):
            bounds = _window_bounds(raw)
            if bounds is None:
                continue
            inner, start, end = bounds
            saga_type, _, outcome = inner.rpartition("|")
            rows.append(
                {
                    "window_start": _iso(start),
                    "window_end": _iso(end),
                    "saga_type": saga_type,
                    "outcome": outcome,
                    "count": value,
                }
            )
        rows.sort(key=lambda r: (r["window_start"], r["saga_type"], r["outcome"]))
        return web.json({"window_seconds": window_s, "counts": rows})

    return app


class State(enum.Enum):
    """Lifecycle of an :class:`Auditor`."""

    UNOPENED = "unopened"
    RUNNING = "running"
    DRAINING = "draining"
    CLOSED = "closed"


class Auditor:
    """The auditor as an async context manager: ``async with Auditor(config) as a: ...``.

    Entering reads the audited topic's partition count, builds the faust app and starts
    it (consumer, tables, agents and the web view); leaving stops it.
    """

    def __init__(self, config: AuditorConfig) -> None:
        self.config = config
        self.state = State.UNOPENED
        self.app: faust.App | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._stop = asyncio.Event()
        self._startup = Startup("auditor start-up", self._stop, log)

    @property
    def url(self) -> str:
        """Base URL of the web view."""
        return self.config.url

    async def __aenter__(self) -> Auditor:
        if self.state is not State.UNOPENED:
            raise RuntimeError(f"the auditor is {self.state.value}; it can be opened once")
        self.state = State.RUNNING
        try:
            # Started before Kafka (or during an outage), it waits; stop() gives up.
            partitions = await self._startup(
                lambda: topic_partitions(self.config.bootstrap_servers, self.config.resolved_source)
            )
            data_dir = self.config.data_dir
            if data_dir is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="saga-auditor-")
                data_dir = Path(self._tmp.name)
            self.app = build_app(self.config, partitions, data_dir)
            await self.app.start()
        except Exception:
            await self._close()
            raise
        log.info(
            "auditing %s as %s; web view on %s",
            self.config.resolved_source,
            self.config.resolved_app_id,
            self.url,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._close()

    def readiness(self) -> str | None:
        """Why the auditor is not ready (``None``: ready; for ``/readyz``)."""
        if self._startup.waiting_for is not None:
            return f"starting: {self._startup.waiting_for}"
        app = self.app
        if self.state is not State.RUNNING:
            return f"the auditor is {self.state.value}"
        if app is None:
            return "starting"
        if app.rebalancing or not app.rebalancing_count:
            return f"joining the consumer group {self.config.resolved_app_id}"
        return None

    def stop(self) -> None:
        """End a start-up that waits for Kafka (opening then raises the last error)."""
        self._stop.set()

    async def _close(self) -> None:
        if self.state is State.CLOSED:
            return
        self.state = State.DRAINING
        try:
            if self.app is not None:
                await self.app.stop()
        finally:
            if self._tmp is not None:
                self._tmp.cleanup()
            self.state = State.CLOSED
