"""Is a new JSON Schema of a message backward compatible with the old one?

Backward compatible means: a reader using the **new** schema accepts every message that
was valid under the **old** one, so messages already in Kafka (or sent by services not
yet upgraded) keep decoding. The checker is pure: two JSON Schema documents in, a list
of human-readable problems out (empty when compatible).

Breaking:

* a property was removed (models forbid unknown fields, so old messages would be refused);
* a property's type changed so that old values no longer fit (narrowed unions count);
* a new required property, or an optional property became required;
* enum values were removed, a ``const`` changed, a ``pattern`` changed, or a length or
  numeric bound was tightened.

Not breaking: adding an optional property, widening a type (e.g. ``string`` to
``string | null``), adding enum values, loosening bounds, changing descriptions.

Local references (``#/$defs/Name``) are followed in each document; only the shapes
pydantic generates are understood (``type``, ``anyOf``/``oneOf``, ``enum``, ``const``,
``properties``, ``items``, ``prefixItems``, ``additionalProperties``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Schema = Mapping[str, Any]

_LOWER_BOUNDS = ("minLength", "minItems", "minimum", "exclusiveMinimum", "minProperties")
_UPPER_BOUNDS = ("maxLength", "maxItems", "maximum", "exclusiveMaximum", "maxProperties")


def breaking_changes(old_schema: Schema, new_schema: Schema) -> list[str]:
    """List the backward-incompatible differences from ``old_schema`` to ``new_schema``.

    Args:
        old_schema: The committed JSON Schema of a message.
        new_schema: The JSON Schema the current model generates.

    Returns:
        One line per problem, each starting with the JSON path of the field (``$`` is the
        message itself); an empty list when every old message is still valid.
    """
    checker = _Checker(old_schema, new_schema)
    checker.compare(old_schema, new_schema, "$")
    return checker.problems


class _Checker:
    def __init__(self, old_root: Schema, new_root: Schema) -> None:
        self.old_root = old_root
        self.new_root = new_root
        self.problems: list[str] = []
        self._seen: set[tuple[int, int]] = set()

    def compare(self, old: Schema, new: Schema, path: str) -> None:
        old = _resolve(old, self.old_root)
        new = _resolve(new, self.new_root)
        key = (id(old), id(new))
        if key in self._seen:  # recursive models
            return
        self._seen.add(key)

        old_types, new_types = _types(old, self.old_root), _types(new, self.new_root)
        lost = old_types - new_types
        # "integer" values still fit a "number"; anything fits an untyped schema.
        if "any" in new_types or (lost == {"integer"} and "number" in new_types):
            lost = set()
        if lost:
            self.problems.append(
                f"{path}: type changed from {_show(old_types)} to {_show(new_types)}"
            )
            return
        self._compare_values(old, new, path)
        self._compare_bounds(old, new, path)

        old_objects = _branches(old, self.old_root, "object")
        new_objects = _branches(new, self.new_root, "object")
        if old_objects and new_objects:
            self._compare_objects(old_objects[0], new_objects[0], path)
        old_arrays = _branches(old, self.old_root, "array")
        new_arrays = _branches(new, self.new_root, "array")
        if old_arrays and new_arrays:
            self._compare_arrays(old_arrays[0], new_arrays[0], path)

    def _compare_values(self, old: Schema, new: Schema, path: str) -> None:
        old_enum, new_enum = _enum(old, self.old_root), _enum(new, self.new_root)
        if old_enum is not None and new_enum is not None:
            removed = [v for v in old_enum if v not in new_enum]
            if removed:
                self.problems.append(f"{path}: enum values removed: {removed!r}")
        elif old_enum is None and new_enum is not None:
            self.problems.append(f"{path}: restricted to the values {new_enum!r}")
        if old.get("pattern") != new.get("pattern") and "pattern" in new:
            self.problems.append(
                f"{path}: pattern changed from {old.get('pattern')!r} to {new['pattern']!r}"
            )

    def _compare_bounds(self, old: Schema, new: Schema, path: str) -> None:
        for name in _LOWER_BOUNDS:
            if name in new and (name not in old or new[name] > old[name]):
                self.problems.append(f"{path}: {name} tightened to {new[name]!r}")
        for name in _UPPER_BOUNDS:
            if name in new and (name not in old or new[name] < old[name]):
                self.problems.append(f"{path}: {name} tightened to {new[name]!r}")

    def _compare_objects(self, old: Schema, new: Schema, path: str) -> None:
        old_props: Mapping[str, Schema] = old.get("properties", {})
        new_props: Mapping[str, Schema] = new.get("properties", {})
        old_required = set(old.get("required", ()))
        open_new = new.get("additionalProperties", True) is not False
        for name, old_prop in old_props.items():
            if name not in new_props:
                if not open_new:
                    self.problems.append(f"{path}.{name}: field removed")
                continue
            self.compare(old_prop, new_props[name], f"{path}.{name}")
        for name in sorted(set(new.get("required", ())) - old_required):
            if name in old_props:
                self.problems.append(f"{path}.{name}: optional field became required")
            else:
                self.problems.append(f"{path}.{name}: new required field")
        old_extra = old.get("additionalProperties", True)
        new_extra = new.get("additionalProperties", True)
        if old_extra is not False and new_extra is False and not old_props:
            self.problems.append(f"{path}: no longer accepts arbitrary properties")
        elif isinstance(old_extra, Mapping) and isinstance(new_extra, Mapping):
            self.compare(old_extra, new_extra, f"{path}.*")

    def _compare_arrays(self, old: Schema, new: Schema, path: str) -> None:
        if isinstance(old.get("items"), Mapping) and isinstance(new.get("items"), Mapping):
            self.compare(old["items"], new["items"], f"{path}[]")
        old_prefix = old.get("prefixItems", [])
        new_prefix = new.get("prefixItems", [])
        for i, (o, n) in enumerate(zip(old_prefix, new_prefix, strict=False)):
            self.compare(o, n, f"{path}[{i}]")


def _resolve(schema: Schema, root: Schema) -> Schema:
    seen = 0
    while "$ref" in schema and seen < 50:
        ref = str(schema["$ref"])
        if not ref.startswith("#/"):
            return schema
        node: Any = root
        for part in ref[2:].split("/"):
            node = node[part]
        # Keep sibling keywords (pydantic puts "default"/"description" next to "$ref").
        schema = {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
        seen += 1
    return schema


def _alternatives(schema: Schema, root: Schema) -> list[Schema]:
    schema = _resolve(schema, root)
    for combinator in ("anyOf", "oneOf"):
        if combinator in schema:
            out: list[Schema] = []
            for branch in schema[combinator]:
                out.extend(_alternatives(branch, root))
            return out
    return [schema]


def _types(schema: Schema, root: Schema) -> set[str]:
    types: set[str] = set()
    for alt in _alternatives(schema, root):
        declared = alt.get("type")
        if isinstance(declared, str):
            types.add(declared)
        elif isinstance(declared, list):
            types.update(str(t) for t in declared)
        elif "const" in alt:
            types.add(_type_of(alt["const"]))
        elif "enum" in alt:
            types.update(_type_of(v) for v in alt["enum"])
        elif "properties" in alt:
            types.add("object")
        else:
            types.add("any")
    return types


def _enum(schema: Schema, root: Schema) -> list[Any] | None:
    values: list[Any] = []
    for alt in _alternatives(schema, root):
        if "const" in alt:
            values.append(alt["const"])
        elif "enum" in alt:
            values.extend(alt["enum"])
        elif alt.get("type") == "null":
            values.append(None)
        else:
            return None
    return values


def _branches(schema: Schema, root: Schema, json_type: str) -> list[Schema]:
    return [
        alt
        for alt in _alternatives(schema, root)
        if alt.get("type") == json_type or (json_type == "object" and "properties" in alt)
    ]


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _show(types: set[str]) -> str:
    return " | ".join(sorted(types)) or "nothing"
