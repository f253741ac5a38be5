"""The ``SAGA_FAULTS`` mini-language: which reply faults a chaos participant injects.

A spec is a comma-separated list of ``key=value`` pairs, for example
``seed=1,duplicate=0.1,delay_ms=200,jitter_ms=100,reorder=1``. Keys:

``seed`` (int), ``duplicate`` (probability a reply is sent twice), ``drop`` (probability
a reply is dropped), ``drop_first`` (int), ``delay_ms`` (int), ``jitter_ms`` (int) and
``reorder`` (``1``/``0``, ``true``/``false``). An empty spec injects nothing.

Only the shell (the CLI) reads the environment; it calls :func:`parse_faults` on the text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from saga.errors import ConfigError
from saga.testing import ReplyFaults


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{text!r} is not a boolean (use 1 or 0)")


_KEYS: Final[dict[str, tuple[str, Callable[[str], Any]]]] = {
    "seed": ("seed", int),
    "duplicate": ("duplicate_rate", float),
    "drop": ("drop_rate", float),
    "drop_first": ("drop_first", int),
    "delay_ms": ("delay_ms", int),
    "jitter_ms": ("delay_jitter_ms", int),
    "reorder": ("reorder", _bool),
}


def parse_faults(spec: str) -> ReplyFaults:
    """Parse a ``SAGA_FAULTS`` spec into :class:`saga.testing.ReplyFaults`.

    Raises:
        ConfigError: An unknown key, a value of the wrong type or out of range; the
            message names the offending pair.
    """
    values: dict[str, Any] = {}
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"SAGA_FAULTS: {item!r} is not key=value")
        if key not in _KEYS:
            raise ConfigError(f"SAGA_FAULTS: unknown key {key!r}; choose from {sorted(_KEYS)}")
        field, convert = _KEYS[key]
        try:
            values[field] = convert(value.strip())
        except ValueError as exc:
            raise ConfigError(f"SAGA_FAULTS: {key}={value!r}: {exc}") from exc
    try:
        return ReplyFaults(**values)
    except ValueError as exc:
        raise ConfigError(f"SAGA_FAULTS: {exc}") from exc


def format_faults(faults: ReplyFaults) -> str:
    """The spec text of ``faults`` (the inverse of :func:`parse_faults`)."""
    parts = []
    for key, (field, _) in _KEYS.items():
        value = getattr(faults, field)
        parts.append(f"{key}={int(value) if isinstance(value, bool) else value}")
    return ",".join(parts)
