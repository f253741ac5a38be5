"""Builder, loader, round trips, hashing, registry, graph."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from saga.definition import (
    KIND_TRAITS,
    UNBOUNDED,
    DefinitionRegistry,
    OnTimeout,
    SagaBuilder,
    SagaDefinition,
    StepKind,
    commands_topic,
    compensatable,
    definition_from_dict,
    definition_to_dict,
    dump_yaml,
    load_file,
    load_yaml,
    pivot,
    retriable,
    to_mermaid,
    wait,
)
from saga.definition.examples.order_placement import ORDER_PLACEMENT, YAML_PATH, load_yaml_twin
from saga.errors import DefinitionError

RICH = load_file(Path(__file__).parents[2] / "golden" / "order_fulfilment.yaml")


def test_example_builder_and_yaml_are_equal() -> None:
    assert load_yaml_twin() == ORDER_PLACEMENT
    assert load_file(YAML_PATH).content_hash == ORDER_PLACEMENT.content_hash


def test_round_trip_builder_dict_yaml_model() -> None:
    data = definition_to_dict(ORDER_PLACEMENT)
    text = yaml.safe_dump(data)
    assert load_yaml(text) == ORDER_PLACEMENT
    assert load_yaml(dump_yaml(ORDER_PLACEMENT)) == ORDER_PLACEMENT
    assert definition_from_dict(data) == ORDER_PLACEMENT
    assert SagaDefinition.model_validate_json(ORDER_PLACEMENT.model_dump_json()) == ORDER_PLACEMENT


def test_json_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "order.json"
    path.write_text(json.dumps(definition_to_dict(ORDER_PLACEMENT)))
    assert load_file(path) == ORDER_PLACEMENT


def test_example_shape() -> None:
    d = RICH
    assert [s.name for s in d.steps] == [
        "create_order",
        "reserve_stock",
        "authorize_payment",
        "manager_approval",
        "capture_payment",
        "ship_order",
        "confirm_order",
    ]
    assert d.step("reserve_stock").depends_on == ("create_order",)
    assert d.step("reserve_stock").group == "reserve"
    assert d.step("manager_approval").depends_on == ("reserve_stock", "authorize_payment")
    assert d.step("manager_approval").kind is StepKind.WAIT
    assert d.step("manager_approval").on_timeout is OnTimeout.FAIL
    assert d.step("ship_order").retry == UNBOUNDED
    assert d.pivot is not None
    assert d.pivot.name == "capture_payment"
    assert d.deadline_ms == 30 * 60_000


def test_builder_defaults_dependencies_to_previous_stage() -> None:
    d = (
        SagaBuilder("s")
        .add(compensatable("a", participant="x", command="a", compensation="ua"))
        .parallel(
            "g",
            [
                compensatable("b", participant="x", command="b", compensation="ub"),
                compensatable("c", participant="x", command="c", compensation="uc"),
            ],
        )
        .add(pivot("p", participant="x", command="p"))
        .add(retriable("r", participant="x", command="r", depends_on=["p"]))
        .build()
    )
    assert [s.depends_on for s in d.steps] == [(), ("a",), ("a",), ("b", "c"), ("p",)]


def test_terse_yaml_sugar() -> None:
    d = load_yaml(
        """
        name: s
        version: 2
        deadline: 1h
        steps:
          - {name: a, participant: x, command: a.do, compensation: a.undo, timeout: 1.5s}
          - {name: w, signal: go, timeout: 2m, on_timeout: continue}
          - {name: b, kind: pivot, participant: x, command: b.do,
             retry: {max_attempts: 5, initial_delay: 250ms, max_delay: 1m}}
        """
    )
    assert d.deadline_ms == 3_600_000
    assert d.step("a").kind is StepKind.COMPENSATABLE
    assert d.step("a").timeout_ms == 1500
    assert d.step("w").kind is StepKind.WAIT
    assert d.step("w").timeout_ms == 120_000
    assert d.step("b").retry.initial_delay_ms == 250
    assert d.step("b").retry.max_delay_ms == 60_000
    assert d.step("b").depends_on == ("w",)


def test_hash_is_stable_and_sensitive() -> None:
    h = ORDER_PLACEMENT.content_hash
    assert len(h) == 64
    assert load_yaml(dump_yaml(ORDER_PLACEMENT)).content_hash == h
    changed = ORDER_PLACEMENT.model_copy(update={"description": "other"})
    assert changed.content_hash != h


def test_registry_refuses_changed_content_under_same_version() -> None:
    reg = DefinitionRegistry()
    reg.register(ORDER_PLACEMENT)
    assert reg.register(load_yaml_twin()) is ORDER_PLACEMENT  # same content: no-op
    changed = ORDER_PLACEMENT.model_copy(update={"description": "other"})
    with pytest.raises(DefinitionError) as err:
        reg.register(changed)
    assert err.value.path == "version"
    assert ORDER_PLACEMENT.content_hash in err.value.message
    assert changed.content_hash in err.value.message
    v2 = changed.model_copy(update={"version": 2})
    reg.register(v2)
    assert reg.get("order_placement") is v2
    assert reg.get("order_placement", 1) is ORDER_PLACEMENT
    assert list(reg) == [ORDER_PLACEMENT, v2]
    assert len(reg) == 2
    assert ("order_placement", 1) in reg
    with pytest.raises(DefinitionError):
        reg.get("nope")
    with pytest.raises(DefinitionError):
        reg.get("order_placement", 9)


def test_mermaid_has_forward_and_compensation_edges() -> None:
    text = to_mermaid(RICH)
    assert text.startswith("flowchart TD")
    assert "create_order --> reserve_stock" in text
    assert "reserve_stock --> manager_approval" in text
    assert "start --> create_order" in text
    assert "confirm_order --> done" in text
    assert "reserve_stock -. compensate .-> reserve_stock__undo" in text
    assert "reserve_stock__undo -.-> create_order__undo" in text
    assert 'subgraph reserve["parallel: reserve"]' in text
    assert "capture_payment{{" in text
    assert "capture_payment__undo" not in text


def test_commands_topic() -> None:
    assert commands_topic("inventory") == "inventory.commands"
    assert commands_topic("inventory", prefix="prod.") == "prod.inventory.commands"


def test_wait_builder() -> None:
    spec = wait("w", signal="s", timeout_ms=10, on_timeout=OnTimeout.CONTINUE)
    assert spec.kind is StepKind.WAIT


def test_every_step_kind_has_traits() -> None:
    assert set(KIND_TRAITS) == set(StepKind)
    assert [k for k, t in KIND_TRAITS.items() if t.pivot] == [StepKind.PIVOT]
    assert [k for k, t in KIND_TRAITS.items() if t.compensatable] == [StepKind.COMPENSATABLE]
    assert [k for k, t in KIND_TRAITS.items() if t.waits_for_signal] == [StepKind.WAIT]
    assert [k for k, t in KIND_TRAITS.items() if t.retries_forever] == [StepKind.RETRIABLE]
    assert len({t.shape for t in KIND_TRAITS.values()}) == len(KIND_TRAITS)
