"""Fuzz the definition loader: a definition or a DefinitionError naming the field, never a crash."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from saga.definition import definition_from_dict, load_yaml
from saga.definition.examples.order_placement import YAML_PATH
from saga.errors import DefinitionError

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

BASE: dict[str, Any] = yaml.safe_load(YAML_PATH.read_text())

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | st.sampled_from(["5s", "250ms", "-1s", "9" * 400 + "s", "1.5m", "0", "compensatable"])
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=15,
)


def rejection(
    data: Any, loader: Callable[[Any], object] = definition_from_dict
) -> DefinitionError | None:
    """Load with ``loader``; return the DefinitionError (any other exception fails the test)."""
    try:
        loader(data)
    except DefinitionError as exc:
        return exc
    return None


def yaml_rejection(text: str) -> DefinitionError | None:
    return rejection(text, load_yaml)


def load(data: Any) -> None:
    error = rejection(data)
    assert error is None or error.reason.strip(), "a rejection must say what is wrong"


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside the base definition."""
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out.extend(paths(v, (*prefix, k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.extend(paths(v, (*prefix, i)))
    return out


ALL_PATHS = paths(BASE)


def replaced(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    node: Any = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return data


def deleted(path: tuple[Any, ...]) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    node: Any = data
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]
    return data


def test_the_base_document_loads() -> None:
    assert rejection(BASE) is None


@FUZZ
@given(values)
def test_arbitrary_data_loads_or_is_rejected_cleanly(data: Any) -> None:
    load(data)


@FUZZ
@given(path=st.sampled_from(ALL_PATHS), value=values)
def test_one_field_replaced_loads_or_names_a_path(path: tuple[Any, ...], value: Any) -> None:
    error = rejection(replaced(path, value))
    if error is not None:
        assert error.reason.strip()
        top = str(path[0])
        if top != "steps":
            # A bad top-level field is reported at that field (or the model as a whole).
            assert error.path in {"", f"{top}_ms"} or error.path.startswith(top)


@FUZZ
@given(path=st.sampled_from(ALL_PATHS))
def test_one_field_removed_loads_or_names_a_path(path: tuple[Any, ...]) -> None:
    load(deleted(path))


@FUZZ
@given(st.text(max_size=300))
def test_arbitrary_yaml_text_loads_or_is_rejected_cleanly(text: str) -> None:
    error = yaml_rejection(text)
    assert error is None or error.reason.strip()


def test_a_huge_duration_is_a_definition_error_naming_the_field() -> None:
    data = copy.deepcopy(BASE)
    data["steps"][0]["timeout"] = "9" * 400 + "s"
    error = rejection(data)
    assert error is not None, "an absurd duration was accepted"
    assert error.path == "steps[0].timeout"
    assert "too large" in error.reason


def test_deeply_nested_yaml_is_rejected_cleanly() -> None:
    error = yaml_rejection("a: " + "[" * 5000 + "]" * 5000)
    assert error is not None
    assert error.reason.strip()
