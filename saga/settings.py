"""Settings of the `saga` processes, read once from the environment (prefix ``SAGA_``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from saga.relay import RelayConfig
from saga.store import DEFAULT_URL
from saga.topics import Topics


class Settings(BaseSettings):
    """Everything the CLI and services read from the environment.

    Only the shell reads this; it passes typed objects down (no ``os.environ`` below).
    """

    model_config = SettingsConfigDict(env_prefix="SAGA_", extra="ignore", frozen=True)

    database_url: str = DEFAULT_URL
    """SQLAlchemy URL: ``sqlite+aiosqlite:///FILE`` (default) or ``postgresql+asyncpg://...``."""
    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:19092",
        validation_alias=AliasChoices("SAGA_KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"),
    )
    """Kafka bootstrap servers (``SAGA_KAFKA_BOOTSTRAP_SERVERS`` or ``KAFKA_BOOTSTRAP_SERVERS``)."""
    topic_prefix: str = ""
    """Put before every topic name."""
    inbox_retention_s: float | None = Field(default=None, gt=0)
    """How long `saga coordinator` keeps inbox ids (seconds); unset: as long as the replies
    topic keeps its records (its ``retention.ms``). Shorter than that, a duplicate older
    than this is processed again (a warning says so at start)."""
    partitions: int = 6
    """Partitions of the replies and commands topics created by `saga admin topics`."""
    replication_factor: int = 1
    """Replication factor of the topics created by `saga admin topics`."""
    relay_producer_per: Literal["lane", "process"] = "process"
    """Whose Kafka producer the relays publish with: one per outbox lane (fenced by
    transactional id) or one per process for all of its lanes (fenced by the consumer
    group's generation; fewer Kafka transactions). See ``RelayConfig.producer_per``."""
    definitions: str = ""
    """Comma-separated YAML files or Python modules (``pkg.mod:attr``) with saga definitions."""
    api_host: str = "127.0.0.1"
    """Address the HTTP API binds to."""
    api_port: int = 8080
    """Port of the HTTP API."""
    api_tokens: str = ""
    """Bearer tokens of the HTTP API: ``token:role:name,...`` (roles: viewer, operator).
    Empty: no authentication, and the API only binds to a loopback address."""
    health_host: str = "127.0.0.1"
    """Address of the health endpoints of `saga coordinator`, `saga relay` and the example
    services."""
    health_port: int = 0
    """Port of those health endpoints (``/healthz``, ``/readyz``, ``/metrics``); 0: off."""
    log_level: str = "INFO"
    """Log level of the process."""
    log_format: str = "text"
    """``text`` (greppable lines with saga_id, step, ... fields) or ``json`` (one object a line)."""
    traces_exporter: str = "none"
    """Where spans go: ``none``, ``console`` or ``otlp`` (OTLP/HTTP)."""
    metrics_exporter: str = "none"
    """Where metrics go: ``none``, ``prometheus`` (the API's ``/metrics``), ``console`` or
    ``otlp``."""
    otlp_endpoint: str = ""
    """OTLP/HTTP collector base URL, e.g. ``http://127.0.0.1:4318`` (empty: OTel's default)."""

    def relay_config(self, **options: Any) -> RelayConfig:
        """The relay options of this deployment, with ``options`` on top."""
        return RelayConfig(
            checkpoint_replication_factor=self.replication_factor,
            producer_per=self.relay_producer_per,
            **options,
        )

    @property
    def topics(self) -> Topics:
        """The topic names of this deployment."""
        return Topics(prefix=self.topic_prefix)
