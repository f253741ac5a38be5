"""The backward-compatibility checker: every kind of break is found; safe changes pass."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts import MESSAGES, breaking_changes


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()


class Line(_Strict):
    sku: str
    quantity: int


class V1(_Strict):
    order_id: str
    amount_cents: int
    note: str | None = None
    lines: list[Line] = Field(default_factory=list)
    status: Literal["new", "paid"] = "new"


def test_identical_schemas_are_compatible() -> None:
    assert breaking_changes(_schema(V1), _schema(V1)) == []


def test_every_registered_schema_is_compatible_with_itself() -> None:
    for model in MESSAGES.values():
        assert breaking_changes(_schema(model), _schema(model)) == []


def test_adding_an_optional_field_is_compatible() -> None:
    class V2(V1):
        currency: str = "EUR"

    assert breaking_changes(_schema(V1), _schema(V2)) == []


def test_widening_a_type_and_adding_enum_values_is_compatible() -> None:
    class V2(_Strict):
        order_id: str | None
        amount_cents: float
        note: str | None = None
        lines: list[Line] = Field(default_factory=list)
        status: Literal["new", "paid", "refunded"] = "new"

    assert breaking_changes(_schema(V1), _schema(V2)) == []


def test_making_a_required_field_optional_is_compatible() -> None:
    class V2(_Strict):
        order_id: str
        amount_cents: int = 0
        note: str | None = None
        lines: list[Line] = Field(default_factory=list)
        status: Literal["new", "paid"] = "new"

    assert breaking_changes(_schema(V1), _schema(V2)) == []


def test_a_removed_field_is_breaking() -> None:
    class V2(_Strict):
        order_id: str
        amount_cents: int
        lines: list[Line] = Field(default_factory=list)
        status: Literal["new", "paid"] = "new"

    assert breaking_changes(_schema(V1), _schema(V2)) == ["$.note: field removed"]


def test_a_changed_type_is_breaking() -> None:
    class V2(_Strict):
        order_id: int
        amount_cents: int
        note: str | None = None
        lines: list[Line] = Field(default_factory=list)
        status: Literal["new", "paid"] = "new"

    problems = breaking_changes(_schema(V1), _schema(V2))
    assert problems == ["$.order_id: type changed from string to integer"]


def test_narrowing_a_union_is_breaking() -> None:
    class V2(_Strict):
        order_id: str
        amount_cents: int
        note: str = ""
        lines: list[Line] = Field(default_factory=list)
        status: Literal["new", "paid"] = "new"

    assert breaking_changes(_schema(V1), _schema(V2)) == [
        "$.note: type changed from null | string to string"
    ]


def test_a_new_required_field_is_breaking() -> None:
    class V2(V1):
        customer_id: str

    assert breaking_changes(_schema(V1), _schema(V2)) == ["$.customer_id: new required field"]


def test_an_optional_field_becoming_required_is_breaking() -> None:
    class V2(_Strict):
        order_id: str
        amount_cents: int
        note: str | None
        lines: list[Line] = Field(default_factory=list)
        status: Literal["new", "paid"] = "new"

    assert breaking_changes(_schema(V1), _schema(V2)) == ["$.note: optional field became required"]


def test_changes_inside_nested_models_are_found() -> None:
    class Line2(_Strict):
        sku: str
        quantity: str

    class V2(_Strict):
        order_id: str
        amount_cents: int
        note: str | None = None
        lines: list[Line2] = Field(default_factory=list)
        status: Literal["new", "paid"] = "new"

    assert breaking_changes(_schema(V1), _schema(V2)) == [
        "$.lines[].quantity: type changed from integer to string"
    ]


def test_removed_enum_values_are_breaking() -> None:
    class V2(_Strict):
        order_id: str
        amount_cents: int
        note: str | None = None
        lines: list[Line] = Field(default_factory=list)
        status: Literal["new"] = "new"

    problems = breaking_changes(_schema(V1), _schema(V2))
    assert any("enum values removed" in p and "paid" in p for p in problems), problems


def test_tightened_bounds_and_patterns_are_breaking() -> None:
    class V2(_Strict):
        order_id: str = Field(max_length=10, pattern=r"^o-")
        amount_cents: int = Field(ge=1)
        note: str | None = None
        lines: list[Line] = Field(default_factory=list)
        status: Literal["new", "paid"] = "new"

    problems = breaking_changes(_schema(V1), _schema(V2))
    assert {p.split(":")[0] for p in problems} == {"$.order_id", "$.amount_cents"}
    assert len(problems) == 3
