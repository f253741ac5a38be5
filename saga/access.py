"""Who may call the HTTP API and its console: bearer tokens, roles, readiness checks.

Both :mod:`saga.api` (which re-exports these names) and :mod:`saga.console` read it.
Only the shell (``saga api``) reads the environment; it parses ``SAGA_API_TOKENS`` with
:func:`parse_tokens` and passes a frozen :class:`ApiConfig` down to :func:`create_app`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from saga.errors import ConfigError


class Role(StrEnum):
    """What a caller may do."""

    VIEWER = "viewer"
    """Read sagas, definitions and the audit trail."""
    OPERATOR = "operator"
    """Everything a viewer may do, plus start, signal, abort and the operator verbs."""

    def allows(self, required: Role) -> bool:
        """Whether this role may call a route that requires ``required``."""
        return required is Role.VIEWER or self is Role.OPERATOR


@dataclass(frozen=True, kw_only=True)
class Principal:
    """The authenticated caller of a request."""

    name: str
    """Who it is; written to the audit log as the actor of operator actions."""
    role: Role
    """What it may do."""


ANONYMOUS = Principal(name="local", role=Role.OPERATOR)
"""The caller when no token is configured (loopback only; see :func:`check_bind`)."""


@dataclass(frozen=True, kw_only=True)
class ApiConfig:
    """How the HTTP API authenticates callers and checks readiness."""

    tokens: Mapping[str, Principal] = field(default_factory=dict)
    """Bearer token -> principal. Empty: no authentication (loopback only)."""
    kafka_bootstrap_servers: str | None = None
    """Kafka bootstrap servers checked by ``/readyz``; ``None`` skips the Kafka check."""
    readiness_timeout_s: float = 2.0
    """How long one readiness check of the database or Kafka may take."""
    readiness_ttl_s: float = 5.0
    """How long a readiness result is reused before the next real check."""
    max_body_bytes: int = 1024 * 1024
    """Largest request body accepted."""

    def __post_init__(self) -> None:
        for token, principal in self.tokens.items():
            if not token or any(c.isspace() for c in token):
                raise ConfigError(f"API token of {principal.name!r} is empty or has spaces")
        if self.readiness_timeout_s <= 0 or self.readiness_ttl_s < 0:
            raise ConfigError("readiness_timeout_s must be > 0 and readiness_ttl_s >= 0")
        if self.max_body_bytes < 1024:
            raise ConfigError("max_body_bytes must be >= 1024")
        object.__setattr__(self, "tokens", MappingProxyType(dict(self.tokens)))

    @property
    def auth_enabled(self) -> bool:
        """Whether callers must present a bearer token."""
        return bool(self.tokens)


def parse_tokens(spec: str) -> dict[str, Principal]:
    """Parse ``token:role:name,token2:role2:name2`` (the ``SAGA_API_TOKENS`` format).

    Raises:
        ConfigError: An entry is malformed, names an unknown role, or repeats a token.
    """
    tokens: dict[str, Principal] = {}
    for raw in spec.split(","):
        entry = raw.strip()
        if not entry:
            continue
        parts = entry.split(":", 2)
        if len(parts) != 3 or not all(p.strip() for p in parts):
            raise ConfigError(
                "SAGA_API_TOKENS entries must look like token:role:name "
                f"(got an entry with {len(parts)} part(s))"
            )
        token, role, name = (p.strip() for p in parts)
        try:
            parsed_role = Role(role)
        except ValueError:
            known = ", ".join(r.value for r in Role)
            raise ConfigError(
                f"SAGA_API_TOKENS: unknown role {role!r} for {name!r} (use {known})"
            ) from None
        if token in tokens:
            raise ConfigError(f"SAGA_API_TOKENS: the token of {name!r} is used twice")
        tokens[token] = Principal(name=name, role=parsed_role)
    return tokens


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, config: ApiConfig) -> None:
    """Refuse to serve without authentication on an address other machines can reach.

    Raises:
        ConfigError: ``host`` is not a loopback address and no token is configured.
    """
    if not config.auth_enabled and not is_loopback(host):
        raise ConfigError(
            f"refusing to serve the API on {host} without authentication: set "
            "SAGA_API_TOKENS (token:role:name,...) or bind to 127.0.0.1"
        )
