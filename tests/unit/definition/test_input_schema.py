"""Input schemas: checked when a definition loads, applied to a start, linted against mappings."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import BaseModel, Field

from saga.cli import cli
from saga.definition import (
    SagaBuilder,
    compensatable,
    dump_yaml,
    lint_warnings,
    load_yaml,
    pivot,
    validate_input,
)
from saga.definition.examples.order_placement import ORDER_PLACEMENT
from saga.errors import DefinitionError, InvalidInput

YAML = """\
name: shipping
version: 1
input_schema:
  type: object
  required: [order_id]
  properties:
    order_id: {type: string}
    lines:
      type: array
      items:
        type: object
        properties: {qty: {type: integer, minimum: 1}}
steps:
  - name: reserve
    participant: inventory
    command: inventory.reserve
    compensation: inventory.release
    input: {order_id: order_id, customer: customr_id}
    output: {reservation_id: reservation_id}
  - name: charge
    kind: pivot
    participant: payment
    command: payment.charge
    input: {reservation: reservation_id, lines: lines}
"""


class Line(BaseModel):
    sku: str
    qty: int = Field(ge=1)


class Order(BaseModel):
    order_id: str
    lines: list[Line]


def test_the_input_is_validated_and_the_error_names_the_field() -> None:
    defn = load_yaml(YAML)
    validate_input(defn.input_schema, {"order_id": "o-1", "lines": [{"qty": 2}]})
    with pytest.raises(InvalidInput) as err:
        validate_input(defn.input_schema, {"order_id": "o-1", "lines": [{"qty": 0}]})
    assert err.value.path == "input.lines[0].qty"
    assert "minimum of 1" in err.value.reason
    with pytest.raises(InvalidInput) as err:
        validate_input(defn.input_schema, {"lines": []})
    assert err.value.path == "input"
    assert "'order_id' is a required property" in err.value.reason


def test_a_pydantic_model_gives_the_builder_its_schema() -> None:
    defn = (
        SagaBuilder("typed", input_model=Order)
        .add(compensatable("a", participant="x", command="a.do", compensation="a.undo"))
        .add(pivot("p", participant="x", command="p.do"))
        .build()
    )
    assert defn.input_schema == Order.model_json_schema()
    with pytest.raises(InvalidInput) as err:
        validate_input(defn.input_schema, {"order_id": "o", "lines": [{"sku": "s", "qty": 0}]})
    assert err.value.path == "input.lines[0].qty"


def test_a_schema_that_is_not_json_schema_fails_at_load_with_its_path() -> None:
    with pytest.raises(DefinitionError) as err:
        load_yaml(YAML.replace("type: integer, minimum: 1", "type: integer, minimum: one"))
    assert err.value.path.startswith("input_schema")
    assert "not a valid JSON Schema" in err.value.reason


def test_definitions_without_the_new_fields_keep_their_content_hash() -> None:
    body = ORDER_PLACEMENT.canonical()
    assert "input_schema" not in body
    assert "triggers" not in body
    assert ORDER_PLACEMENT.content_hash == load_yaml(dump_yaml(ORDER_PLACEMENT)).content_hash


def test_lint_warns_about_a_mapping_that_reads_an_undeclared_field(tmp_path: Path) -> None:
    defn = load_yaml(YAML)
    assert lint_warnings(defn) == [
        "steps[0].input.customer: reads 'customr_id', which the input schema does not"
        " declare and no step's output writes"
    ], "reservation_id is written by a step's output; lines and order_id are declared"
    file = tmp_path / "shipping.yaml"
    file.write_text(YAML)
    result = CliRunner().invoke(cli, ["lint", str(file)])
    assert result.exit_code == 0, "a warning is not an error"
    assert "warning: steps[0].input.customer: reads 'customr_id'" in result.output
    assert lint_warnings(ORDER_PLACEMENT) == [], "no schema: nothing to compare with"
