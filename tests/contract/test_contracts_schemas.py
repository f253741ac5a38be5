"""The committed JSON Schema / AsyncAPI files match the models, and changes stay compatible."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import contracts
from contracts import (
    MESSAGES,
    REPLY_SUFFIX,
    _export,
    breaking_changes,
    build_asyncapi,
    export_files,
)
from saga.topics import Topics

SCHEMAS = Path(contracts.__file__).resolve().parent / "schemas"
REGENERATE = "run `saga contracts export` and commit contracts/schemas/"


def _committed() -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(SCHEMAS.glob("*.json"))}


def test_committed_schemas_are_not_stale() -> None:
    generated = export_files(MESSAGES)
    committed = _committed()
    assert sorted(committed) == sorted(generated), f"files differ; {REGENERATE}"
    stale = [name for name, text in generated.items() if committed[name] != text]
    assert not stale, f"stale: {stale}; {REGENERATE}"


@pytest.mark.parametrize("name", sorted(n for n in _committed() if n != _export.ASYNCAPI_FILE))
def test_models_stay_backward_compatible_with_the_committed_schema(name: str) -> None:
    committed = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    generated = json.loads(export_files(MESSAGES)[name])
    problems = breaking_changes(committed, generated)
    assert not problems, (
        f"{name} is not backward compatible: {problems}. Add a new message type (or a "
        "new optional field) instead of changing this one."
    )


def test_every_message_is_a_frozen_model_that_forbids_unknown_fields() -> None:
    for message_type, model in MESSAGES.items():
        assert model.model_config.get("frozen") is True, message_type
        assert model.model_config.get("extra") == "forbid", message_type


def test_every_command_has_an_output_model() -> None:
    commands = [t for t in MESSAGES if not t.endswith(REPLY_SUFFIX) and not t.startswith("reply.")]
    assert sorted(commands) == [
        "inventory.release",
        "inventory.reserve",
        "orders.confirm",
        "payments.authorize",
        "payments.void",
        "shipping.schedule",
    ]
    assert all(contracts.output_model(t) is not None for t in commands)


def test_export_topic_names_match_the_deployment_topics() -> None:
    topics = Topics()
    assert topics.replies == _export.REPLIES_TOPIC
    assert topics.dlq == _export.DLQ_TOPIC
    assert topics.commands("x") == "x" + _export.COMMANDS_SUFFIX


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_asyncapi_document_covers_every_topic_and_its_refs_resolve() -> None:
    doc = build_asyncapi((), MESSAGES)
    assert doc["asyncapi"].startswith("3.")
    assert set(doc["channels"]) == {
        "inventory.commands",
        "orders.commands",
        "payments.commands",
        "shipping.commands",
        "saga.replies",
        "saga.dlq",
    }
    assert set(doc["channels"]["payments.commands"]["messages"]) == {
        "payments.authorize",
        "payments.void",
    }
    for ref in _refs(doc):
        assert _resolve(doc, ref) is not None, ref


@dataclass(frozen=True)
class _Step:
    participant: str | None
    command: str | None
    compensation: str | None = None


@dataclass(frozen=True)
class _Definition:
    name: str
    steps: tuple[_Step, ...]


def test_asyncapi_from_definitions_uses_their_steps_and_kinds() -> None:
    definition = _Definition(
        "order_placement",
        (
            _Step("inventory", "inventory.reserve", "inventory.release"),
            _Step(None, None),  # a wait step
            _Step("billing", "billing.charge"),  # a type the registry does not know
        ),
    )
    doc = build_asyncapi([definition], MESSAGES)
    assert set(doc["channels"]) == {
        "inventory.commands",
        "billing.commands",
        "saga.replies",
        "saga.dlq",
    }
    release = doc["components"]["messages"]["inventory.release"]["payload"]["allOf"][1]
    assert release["properties"]["kind"] == {"enum": ["compensation"]}
    charge = doc["components"]["messages"]["billing.charge"]["payload"]["allOf"][1]
    assert charge["properties"]["payload"]["type"] == "object"
    for ref in _refs(doc):
        assert _resolve(doc, ref) is not None, ref


def test_export_is_deterministic() -> None:
    assert export_files(MESSAGES) == export_files(dict(reversed(list(MESSAGES.items()))))


def test_cli_check_reports_stale_files(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from saga.cli import cli

    runner = CliRunner()
    result = runner.invoke(cli, ["contracts", "export", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (
        runner.invoke(cli, ["contracts", "export", "--out", str(tmp_path), "--check"]).exit_code
        == 0
    )
    (tmp_path / "orders.confirm.json").write_text("{}\n")
    check = runner.invoke(cli, ["contracts", "export", "--out", str(tmp_path), "--check"])
    assert check.exit_code == 1
    assert "orders.confirm.json" in check.output


def test_cli_refuses_to_overwrite_with_a_breaking_change(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from saga.cli import cli

    class Old(BaseModel):
        order_id: str
        legacy: int

    (tmp_path / "orders.confirm.reply.json").write_text(json.dumps(Old.model_json_schema()))
    result = CliRunner().invoke(cli, ["contracts", "export", "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "$.legacy: field removed" in result.output


def test_the_order_placement_definition_fits_the_contracts() -> None:
    from saga.definition.examples.order_placement import ORDER_PLACEMENT

    for step in ORDER_PLACEMENT.steps:
        assert step.command in MESSAGES, step.name
        model = MESSAGES[step.command]
        assert set(step.input) <= set(model.model_fields), step.name
        required = {n for n, f in model.model_fields.items() if f.is_required()}
        assert required <= set(step.input), step.name
        output = contracts.output_model(step.command)
        assert output is not None
        assert set(step.output.values()) <= set(output.model_fields), step.name
        if step.compensation:
            compensation = MESSAGES[step.compensation]
            assert set(step.compensation_input or {}) <= set(compensation.model_fields), step.name
