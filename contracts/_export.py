"""Generate JSON Schema and AsyncAPI documents from the message registry.

The generated files live in ``contracts/schemas/`` and are committed, so reviewers see
every contract change as a diff; ``tests/contract/test_contracts_schemas.py`` fails
when they are stale or when a change is not backward compatible (see ``_compat``).

The output is deterministic (same models, same bytes), which is what makes the
staleness test possible.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Protocol

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from contracts.envelope import (
    ENVELOPE_SCHEMA_VERSION,
    REPLY_FAILED,
    REPLY_SUCCEEDED,
    Envelope,
    MessageKind,
)

JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
ENVELOPE_FILE: Final = "envelope.json"
ASYNCAPI_FILE: Final = "asyncapi.json"

# Default topic names; they mirror saga.topics.Topics (this package must not import
# saga, and a test pins the two together).
REPLIES_TOPIC: Final = "saga.replies"
DLQ_TOPIC: Final = "saga.dlq"
COMMANDS_SUFFIX: Final = ".commands"
REPLY_SUFFIX: Final = ".reply"

_TRACE_HEADERS: Final[dict[str, Any]] = {
    "type": "object",
    "description": "W3C trace context, copied from command to reply.",
    "properties": {
        "traceparent": {"type": "string", "description": "W3C traceparent"},
        "tracestate": {"type": "string", "description": "W3C tracestate"},
    },
}
_DLQ_HEADERS: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "saga.dlq.reason": {"type": "string", "description": "Why the record is poison."},
        "saga.dlq.source.topic": {"type": "string"},
        "saga.dlq.source.partition": {"type": "string", "description": "decimal"},
        "saga.dlq.source.offset": {"type": "string", "description": "decimal"},
        "saga.dlq.consumer": {"type": "string", "description": "Who rejected it."},
    },
    "required": ["saga.dlq.reason", "saga.dlq.source.topic"],
}


class StepLike(Protocol):
    """What :func:`build_asyncapi` reads from a definition's step."""

    @property
    def participant(self) -> str | None:
        """Participant receiving the command (``None`` for wait steps)."""

    @property
    def command(self) -> str | None:
        """Message type of the command."""

    @property
    def compensation(self) -> str | None:
        """Message type of the compensation, if any."""


class DefinitionLike(Protocol):
    """What :func:`build_asyncapi` reads from a saga definition."""

    @property
    def name(self) -> str:
        """Name of the saga type."""

    @property
    def steps(self) -> Sequence[StepLike]:
        """The steps."""


def message_schema(model: type[BaseModel]) -> dict[str, Any]:
    """Return the standalone JSON Schema (draft 2020-12) of one message model."""
    return {"$schema": JSON_SCHEMA_DIALECT, **model.model_json_schema()}


def schema_documents(messages: Mapping[str, type[BaseModel]]) -> dict[str, dict[str, Any]]:
    """Return ``file name -> JSON Schema`` for the envelope and every registered type."""
    docs = {ENVELOPE_FILE: message_schema(Envelope)}
    for message_type in sorted(messages):
        docs[f"{message_type}.json"] = message_schema(messages[message_type])
    return docs


def _participant_commands(
    definitions: Iterable[DefinitionLike], messages: Mapping[str, type[BaseModel]]
) -> dict[str, dict[str, MessageKind | None]]:
    # participant -> {message type -> kind}; kind is None when it cannot be known.
    out: dict[str, dict[str, MessageKind | None]] = {}
    definitions = list(definitions)
    for definition in definitions:
        for step in definition.steps:
            if step.participant is None:
                continue
            entry = out.setdefault(step.participant, {})
            if step.command:
                entry[step.command] = MessageKind.COMMAND
            if step.compensation:
                entry[step.compensation] = MessageKind.COMPENSATION
    if not definitions:
        for message_type in messages:
            if message_type.endswith(REPLY_SUFFIX) or message_type.startswith("reply."):
                continue
            participant, _, _verb = message_type.partition(".")
            out.setdefault(participant, {})[message_type] = None
    return {p: dict(sorted(types.items())) for p, types in sorted(out.items())}


def build_asyncapi(
    definitions: Iterable[DefinitionLike],
    messages: Mapping[str, type[BaseModel]],
    *,
    title: str = "saga-coordinator example domain",
    version: str = "1",
) -> dict[str, Any]:
    """Build an AsyncAPI 3.0 document of every topic and message.

    Channels: ``<participant>.commands`` for each participant, ``saga.replies`` and
    ``saga.dlq`` (unprefixed names; a deployment's prefix is put before each). Every
    Kafka value is an :class:`~contracts.Envelope` whose ``payload`` is the typed body,
    and every key is the saga id.

    Args:
        definitions: Saga definitions (anything with ``.name`` and ``.steps`` whose steps
            have ``.participant``, ``.command`` and ``.compensation``). When empty, the
            participants and their commands are derived from the registry: a type
            ``<participant>.<verb>`` (not ending in ``.reply``) is a command of
            ``<participant>``.
        messages: The registry, message type -> payload model.
        title: ``info.title`` of the document.
        version: ``info.version`` of the document.
    """
    participants = _participant_commands(definitions, messages)
    used_types = {t for types in participants.values() for t in types}
    used_types |= {REPLY_SUCCEEDED, REPLY_FAILED}
    used_types |= {t + REPLY_SUFFIX for t in used_types}
    models = {t: messages[t] for t in sorted(used_types) if t in messages}
    distinct: list[type[BaseModel]] = list(dict.fromkeys([Envelope, *models.values()]))
    refs, defs = models_json_schema(
        [(m, "validation") for m in distinct], ref_template="#/components/schemas/{model}"
    )
    schemas: dict[str, Any] = dict(sorted(defs.get("$defs", {}).items()))

    def payload_ref(message_type: str) -> dict[str, Any]:
        model = messages.get(message_type)
        if model is None:
            return {"type": "object", "description": "unregistered type: any JSON object"}
        return dict(refs[(model, "validation")])

    def envelope_of(message_type: str, kind: MessageKind | None) -> dict[str, Any]:
        kinds = (
            [kind.value] if kind else [MessageKind.COMMAND.value, MessageKind.COMPENSATION.value]
        )
        return {
            "allOf": [
                dict(refs[(Envelope, "validation")]),
                {
                    "type": "object",
                    "properties": {
                        "type": {"const": message_type},
                        "kind": {"enum": kinds},
                        "payload": payload_ref(message_type),
                    },
                },
            ]
        }

    def message(message_type: str, kind: MessageKind | None, summary: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": message_type,
            "title": message_type,
            "summary": summary,
            "contentType": "application/json",
            "headers": _TRACE_HEADERS,
            "payload": envelope_of(message_type, kind),
            "bindings": {"kafka": {"key": {"type": "string", "format": "uuid"}}},
        }
        output = messages.get(message_type + REPLY_SUFFIX)
        if output is not None:
            body["description"] = (
                f"On success the reply's `payload.output` is a {output.__name__} "
                f"(schema `{message_type + REPLY_SUFFIX}`)."
            )
        return body

    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    components_messages: dict[str, Any] = {}
    for participant, types in participants.items():
        channel_id = participant + COMMANDS_SUFFIX
        channel_messages: dict[str, Any] = {}
        for message_type, kind in types.items():
            summary = f"{(kind or 'command').capitalize()} for the {participant} participant."
            components_messages[message_type] = message(message_type, kind, summary)
            channel_messages[message_type] = {"$ref": f"#/components/messages/{message_type}"}
        channels[channel_id] = {
            "address": channel_id,
            "description": f"Commands and compensations for {participant}; key = saga id.",
            "messages": channel_messages,
        }
        operations[f"{participant}.receive"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "summary": f"{participant} handles its commands (read_committed).",
            "messages": [
                {"$ref": f"#/channels/{channel_id}/messages/{t}"} for t in channel_messages
            ],
        }

    reply_messages: dict[str, Any] = {}
    for reply_type in (REPLY_SUCCEEDED, REPLY_FAILED):
        components_messages[reply_type] = message(
            reply_type, MessageKind.REPLY, "A participant's reply to a command."
        )
        reply_messages[reply_type] = {"$ref": f"#/components/messages/{reply_type}"}
    channels[REPLIES_TOPIC] = {
        "address": REPLIES_TOPIC,
        "description": "Replies, timers and signals: the coordinator's input; key = saga id.",
        "messages": reply_messages,
    }
    operations["participants.reply"] = {
        "action": "send",
        "channel": {"$ref": f"#/channels/{REPLIES_TOPIC}"},
        "summary": "Participants reply to each command exactly once.",
        "messages": [{"$ref": f"#/channels/{REPLIES_TOPIC}/messages/{t}"} for t in reply_messages],
    }
    components_messages["dead_letter"] = {
        "name": "dead_letter",
        "title": "Dead letter",
        "summary": "A poison record: the original key and bytes, the reason in headers.",
        "contentType": "application/octet-stream",
        "headers": _DLQ_HEADERS,
        "payload": {"description": "The original record value, unchanged."},
    }
    channels[DLQ_TOPIC] = {
        "address": DLQ_TOPIC,
        "description": "Poison messages with the reason; nothing is dropped.",
        "messages": {"dead_letter": {"$ref": "#/components/messages/dead_letter"}},
    }
    operations["dlq.send"] = {
        "action": "send",
        "channel": {"$ref": f"#/channels/{DLQ_TOPIC}"},
        "summary": "Consumers park records they cannot decode.",
        "messages": [{"$ref": f"#/channels/{DLQ_TOPIC}/messages/dead_letter"}],
    }

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": title,
            "version": version,
            "description": (
                f"Topics and messages of the saga deployment (envelope schema version "
                f"{ENVELOPE_SCHEMA_VERSION}). Topic names are shown without the "
                "deployment's prefix. Generated by `saga contracts export`; do not edit."
            ),
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": components_messages, "schemas": schemas},
    }


def render(document: Mapping[str, Any]) -> str:
    """Serialize a generated document the way it is committed (stable, indented)."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def export_files(
    messages: Mapping[str, type[BaseModel]],
    definitions: Iterable[DefinitionLike] = (),
) -> dict[str, str]:
    """Return ``file name -> text`` of everything ``saga contracts export`` writes."""
    files = {name: render(doc) for name, doc in schema_documents(messages).items()}
    files[ASYNCAPI_FILE] = render(build_asyncapi(definitions, messages))
    return files
