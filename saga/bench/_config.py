"""What one benchmark run does: a frozen value object validated at construction."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from saga.errors import ConfigError
from saga.relay import ProducerPer, RelayMode

Database = Literal["sqlite", "postgres"]
"""Where the coordinator and the participants keep their state."""

DEFAULT_POSTGRES_URL = "postgresql+asyncpg://saga@127.0.0.1:15432/saga"
"""The local PostgreSQL that ``deploy/local/up --postgres`` starts."""


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """Options of ``saga bench`` (see :func:`saga.bench.run_bench`)."""

    sagas: int = 1_000
    """Sagas started in each measured phase (warm-up sagas come on top)."""
    concurrency: int = 200
    """Most sagas in flight at once (the driver starts more as others finish)."""
    rate: float | None = None
    """Offered load in sagas per second; ``None`` runs flat out (bounded by concurrency)."""
    steps: int = 3
    """Steps per saga, spread round-robin over the three bench participants."""
    payload_bytes: int = 100
    """Size of the opaque string every command carries (and every participant stores)."""
    failure_ratio: float = 0.0
    """Share of sagas whose last step fails for good, so the others are compensated."""
    database: Database = "postgres"
    """``postgres`` (a fresh schema per process role) or ``sqlite`` (a file per role)."""
    postgres_url: str = DEFAULT_POSTGRES_URL
    """Server the fresh bench schemas are created in (``database="postgres"``)."""
    bootstrap_servers: str = "127.0.0.1:19092"
    """Kafka bootstrap servers."""
    relay_mode: RelayMode = "exactly_once"
    """Mode of every relay (the coordinator's and the participants')."""
    producer_per: ProducerPer = "process"
    """Whose producer every exactly-once relay publishes with (``RelayConfig.producer_per``)."""
    warmup: int = 20
    """Sagas run (and not measured) before each measured phase: connections, joins."""
    partitions: int = 6
    """Partitions of every bench topic."""
    baseline: bool = False
    """Also measure the same message pattern with bare aiokafka (no database, no engine)."""
    baseline_commit_interval_ms: int = 0
    """Exactly-once baseline: keep each Kafka transaction open this long, adding every
    batch polled meanwhile (0: one transaction per polled batch, as the relays do)."""
    scale_preload: int = 0
    """After the first phase, preload this many finished sagas (PostgreSQL) and rerun."""
    timeout_s: float = 600.0
    """Give up on a phase after this long."""
    workdir: Path | None = None
    """Where process logs (and SQLite files) go; a temporary directory when ``None``."""
    keep: bool = False
    """Keep the schemas, topics and files of the run (default: drop them)."""
    profile_dir: Path | None = None
    """Record each process with ``py-spy`` (if installed) during the measured phases."""
    coordinators: int = 1
    """Coordinator processes, all configured alike."""
    relay_process: bool = False
    """Run the coordinators' relays in ``saga relay`` processes (one beside each
    coordinator, as ``saga coordinator --no-relay`` expects) instead of inside the
    coordinators (the default deployment)."""
    coordinator_max_batch: int = 500
    """``CoordinatorConfig.max_batch`` of the coordinator process."""
    participant_max_batch: int = 500
    """``ParticipantConfig.max_batch`` of each participant process."""
    sample_interval_s: float = 0.5
    """How often the outbox backlog is sampled."""

    def __post_init__(self) -> None:
        if self.sagas < 1:
            raise ConfigError(f"sagas must be >= 1, not {self.sagas}")
        if self.concurrency < 1:
            raise ConfigError(f"concurrency must be >= 1, not {self.concurrency}")
        if self.rate is not None and self.rate <= 0:
            raise ConfigError(f"rate must be > 0, not {self.rate}")
        if self.coordinators < 1:
            raise ConfigError(f"coordinators must be >= 1, not {self.coordinators}")
        if self.coordinators > self.partitions:
            raise ConfigError(
                f"coordinators ({self.coordinators}) must not exceed partitions"
                f" ({self.partitions}): a coordinator without a partition has nothing to do"
            )
        if self.steps < 1:
            raise ConfigError(f"steps must be >= 1, not {self.steps}")
        if self.payload_bytes < 0:
            raise ConfigError(f"payload_bytes must be >= 0, not {self.payload_bytes}")
        if not 0.0 <= self.failure_ratio <= 1.0:
            raise ConfigError(f"failure_ratio must be in [0, 1], not {self.failure_ratio}")
        if self.failure_ratio and self.steps < 2:
            raise ConfigError("failure_ratio needs at least 2 steps (something to compensate)")
        if self.database not in ("sqlite", "postgres"):
            raise ConfigError(f"database must be sqlite or postgres, not {self.database!r}")
        if self.producer_per not in ("lane", "process"):
            raise ConfigError("producer_per must be lane or process")
        if self.relay_mode not in ("exactly_once", "at_least_once"):
            raise ConfigError("relay_mode must be exactly_once or at_least_once")
        if self.warmup < 1:
            raise ConfigError("warmup must be >= 1 (it also proves the pipeline is up)")
        if self.partitions < 1:
            raise ConfigError("partitions must be >= 1")
        if self.scale_preload < 0:
            raise ConfigError("scale_preload must be >= 0")
        if self.scale_preload and self.database != "postgres":
            raise ConfigError("the scale mode preloads with generate_series: it needs postgres")
        if self.timeout_s <= 0 or self.sample_interval_s <= 0:
            raise ConfigError("timeout_s and sample_interval_s must be > 0")
