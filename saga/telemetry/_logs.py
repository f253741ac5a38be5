"""Structured logs: saga id, step, attempt, message id and trace id on every line.

The loops wrap the handling of each message in :func:`log_context`; a
:class:`ContextFilter` on the handler copies those fields onto every record logged
meanwhile (and the current span's trace id when no trace id was bound), and the
formatters print them — as ``key=value`` pairs after the message, or as one JSON object
per line (``SAGA_LOG_FORMAT=json``).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Final, Literal

from opentelemetry import trace

from saga.telemetry._ids import format_trace_id

FIELDS: Final = ("saga_id", "step", "attempt", "message_id", "trace_id")
"""The context fields every log line carries (``None`` when unknown)."""

LogFormat = Literal["text", "json"]
"""How log lines look."""

_CONTEXT: ContextVar[Mapping[str, object]] = ContextVar(
    "saga_log_context", default=MappingProxyType({})
)


@contextlib.contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Bind ``fields`` to every log record emitted in the block (nested blocks merge).

    Example::

        with log_context(saga_id=env.saga_id, step=env.step, attempt=env.attempt):
            log.info("handling")  # carries saga_id, step and attempt
    """
    merged = {**_CONTEXT.get(), **{k: v for k, v in fields.items() if v is not None}}
    token = _CONTEXT.set(MappingProxyType(merged))
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def current_log_context() -> Mapping[str, object]:
    """The fields bound by the enclosing :func:`log_context` blocks."""
    return dict(_CONTEXT.get())


class ContextFilter(logging.Filter):
    """Adds the :data:`FIELDS` (and any other bound field) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Copy the bound context onto ``record``; never drops a record."""
        bound = _CONTEXT.get()
        for name in FIELDS:
            if not hasattr(record, name):
                setattr(record, name, bound.get(name))
        for name, value in bound.items():
            if not hasattr(record, name):
                setattr(record, name, value)
        if getattr(record, "trace_id", None) is None:
            ctx = trace.get_current_span().get_span_context()
            if ctx.is_valid:
                record.trace_id = format_trace_id(ctx.trace_id)
        return True


def _context_of(record: logging.LogRecord) -> dict[str, object]:
    out: dict[str, object] = {}
    for name in FIELDS:
        value = getattr(record, name, None)
        if value is not None:
            out[name] = value if isinstance(value, int | float | bool) else str(value)
    return out


class TextFormatter(logging.Formatter):
    """``time level logger message key=value ...`` (only the fields that are known)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The plain line, then the known context fields."""
        line = super().format(record)
        extra = " ".join(f"{k}={v}" for k, v in _context_of(record).items())
        if not extra:
            return line
        head, sep, tail = line.partition("\n")  # keep tracebacks after the fields
        return f"{head} {extra}{sep}{tail}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context, exception."""

    def format(self, record: logging.LogRecord) -> str:
        """Encode ``record`` as a single JSON line."""
        data: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_context_of(record),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def configure_logging(level: str = "INFO", fmt: LogFormat | str = "text") -> None:
    """Log to stderr with context fields, as text lines or JSON lines.

    Like :func:`logging.basicConfig`, it leaves handlers that someone else installed on
    the root logger alone (it only adds the :class:`ContextFilter` to them); calling it
    again replaces the handler it installed before.

    Raises:
        ValueError: ``fmt`` is neither ``text`` nor ``json``.
    """
    if fmt not in ("text", "json"):
        raise ValueError(f"log format must be 'text' or 'json', not {fmt!r}")
    root = logging.getLogger()
    root.setLevel(level.upper())
    for old in [h for h in root.handlers if isinstance(h, _SagaHandler)]:
        root.removeHandler(old)
    if root.handlers:
        for other in root.handlers:
            if not any(isinstance(f, ContextFilter) for f in other.filters):
                other.addFilter(ContextFilter())
        return
    handler = _SagaHandler()
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)


class _SagaHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The stderr handler :func:`configure_logging` installs (recognised when called again)."""
