"""Load definitions from YAML/JSON (with a little sugar) and dump them back.

The terse form accepted on top of the model's own fields:

* ``depends_on`` may be left out: a step then depends on the previous *stage* (the
  previous step, or every member of the previous parallel group); the first stage
  depends on nothing.
* ``- parallel: {name: reserve, steps: [...]}`` declares a group whose members all depend
  on the previous stage; the next stage depends on all members.
* ``kind`` may be left out when it is implied: ``signal`` means ``wait`` and
  ``compensation`` means ``compensatable``.
* durations may be written as ``timeout: 5s`` (also ``deadline``, ``initial_delay`` and
  ``max_delay``), with the units ``ms``, ``s``, ``m``, ``h`` and ``d``; a bare number is
  milliseconds. The ``*_ms`` fields are accepted as they are.

The full form written by :func:`dump_yaml` (every field, explicit ``depends_on``) loads
back to an equal model. Errors name the path in the *source* document, e.g.
``steps[1].parallel.steps[0].retry.max_attempts``.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from saga.definition._model import RetryPolicy, SagaDefinition, Step
from saga.errors import DefinitionError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION_KEYS = ("timeout", "deadline", "initial_delay", "max_delay", "lock_timeout")
_STEP_INDEX = re.compile(r"^steps\[(\d+)\]")


def parse_duration_ms(value: object, path: str) -> int:
    """Parse ``250ms``, ``5s``, ``10m``, ``1h``, ``2d`` or a number of milliseconds."""
    if isinstance(value, bool):
        raise DefinitionError(f"not a duration: {value!r}", path=path)
    if isinstance(value, int):
        return value
    match = _DURATION.match(str(value))
    if match is None:
        raise DefinitionError(f"not a duration: {value!r} (e.g. 500ms, 5s, 10m, 1h)", path=path)
    number, unit = match.groups()
    ms = float(number) * _UNIT_MS[unit or "ms"]
    if ms > 2**53:  # also infinity, which int() cannot convert
        raise DefinitionError(f"duration too large: {str(value)[:40]!r}", path=path)
    return int(ms)


def _durations(data: Mapping[str, Any], path: str) -> dict[str, Any]:
    out = dict(data)
    for key in _DURATION_KEYS:
        if key in out:
            where = f"{path}.{key}" if path else key
            if f"{key}_ms" in out:
                raise DefinitionError(f"give either {key!r} or '{key}_ms', not both", path=where)
            out[f"{key}_ms"] = parse_duration_ms(out.pop(key), where)
    for key in ("retry", "compensation_retry"):
        if isinstance(out.get(key), Mapping):
            out[key] = _durations(out[key], f"{path}.{key}")
    return out


_STEP_KEYS: frozenset[str] = frozenset(Step.model_fields) | set(_DURATION_KEYS)
_RETRY_KEYS: frozenset[str] = frozenset(RetryPolicy.model_fields) | {"initial_delay", "max_delay"}
_DEFINITION_KEYS: frozenset[str] = frozenset(SagaDefinition.model_fields) | {
    "deadline",
    "lock_timeout",
}


def _check_keys(data: Mapping[str, Any], known: Collection[str], path: str) -> None:
    """Name the first unknown key, and the known key it is probably a misspelling of."""
    for key in data:
        if key in known:
            continue
        where = f"{path}.{key}" if path else str(key)
        guess = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.75)
        hint = f"; did you mean {guess[0]!r}?" if guess else f" (known: {', '.join(sorted(known))})"
        raise DefinitionError(f"unknown key {key!r}{hint}", path=where)


def _expand_step(raw: object, path: str, depends_on: list[str], group: str | None) -> Any:
    if not isinstance(raw, Mapping):
        return raw  # pydantic reports the type error with the path
    _check_keys(raw, _STEP_KEYS, path)
    for key in ("retry", "compensation_retry"):
        if isinstance(raw.get(key), Mapping):
            _check_keys(raw[key], _RETRY_KEYS, f"{path}.{key}")
    step = _durations(raw, path)
    if "kind" not in step:
        if "signal" in step:
            step["kind"] = "wait"
        elif "compensation" in step:
            step["kind"] = "compensatable"
        else:
            raise DefinitionError(
                "'kind' is required (compensatable, pivot, retriable or wait)",
                path=f"{path}.kind",
            )
    step.setdefault("depends_on", list(depends_on))
    if group is not None:
        step.setdefault("group", group)
    return step


def _expand(data: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Expand the sugar; return the model-shaped dict and the source path of each step."""
    _check_keys(data, _DEFINITION_KEYS, "")
    out = _durations(data, "")
    raw_steps = out.get("steps")
    if not isinstance(raw_steps, list):
        return out, []
    steps: list[Any] = []
    paths: list[str] = []
    previous: list[str] = []
    for i, raw in enumerate(raw_steps):
        path = f"steps[{i}]"
        if isinstance(raw, Mapping) and "parallel" in raw:
            if len(raw) != 1:
                raise DefinitionError("a parallel entry has only the 'parallel' key", path=path)
            group = raw["parallel"]
            if not isinstance(group, Mapping) or not isinstance(group.get("steps"), list):
                raise DefinitionError("expected {name: ..., steps: [...]}", path=f"{path}.parallel")
            if set(group) - {"name", "steps"}:
                extra = sorted(set(group) - {"name", "steps"})
                raise DefinitionError(f"unknown keys {extra}", path=f"{path}.parallel")
            name = group.get("name")
            if not isinstance(name, str):
                raise DefinitionError("a parallel group needs a name", path=f"{path}.parallel.name")
            members: list[str] = []
            for j, member in enumerate(group["steps"]):
                member_path = f"{path}.parallel.steps[{j}]"
                steps.append(_expand_step(member, member_path, previous, name))
                paths.append(member_path)
                if isinstance(member, Mapping) and isinstance(member.get("name"), str):
                    members.append(member["name"])
            if not members:
                raise DefinitionError("a parallel group needs steps", path=f"{path}.parallel")
            previous = members
        else:
            steps.append(_expand_step(raw, path, previous, None))
            paths.append(path)
            if isinstance(raw, Mapping) and isinstance(raw.get("name"), str):
                previous = [raw["name"]]
    out["steps"] = steps
    return out, paths


def _loc_to_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif "[" in part or "-" in part:
            continue  # pydantic's validator labels, not fields
        else:
            path += f".{part}" if path else part
    return path


def _source_path(path: str, sources: list[str]) -> str:
    match = _STEP_INDEX.match(path)
    if match is None or int(match.group(1)) >= len(sources):
        return path
    return sources[int(match.group(1))] + path[match.end() :]


def definition_from_dict(data: Mapping[str, Any]) -> SagaDefinition:
    """Build a definition from a mapping in the terse or the full form.

    Raises:
        DefinitionError: The data is not a valid definition; ``path`` names the field.
    """
    if not isinstance(data, Mapping):
        raise DefinitionError(f"a definition is a mapping, not {type(data).__name__}")
    expanded, sources = _expand(data)
    try:
        return SagaDefinition.model_validate(expanded)
    except ValidationError as exc:
        err = exc.errors()[0]
        path = _source_path(_loc_to_path(err["loc"]), sources)
        raise DefinitionError(err["msg"], path=path) from exc
    except DefinitionError as exc:
        path = _source_path(exc.path, sources)
        if path == exc.path:
            raise
        raise DefinitionError(exc.reason, path=path) from exc


def load_yaml(text: str, *, source: str = "definition") -> SagaDefinition:
    """Load a definition from YAML (or JSON, which is YAML) text.

    Args:
        text: The YAML.
        source: What the text is (a file name), for the position of a syntax error.

    Raises:
        DefinitionError: The text is not YAML or not a valid definition.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}, line {mark.line + 1}, column {mark.column + 1}" if mark else source
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise DefinitionError(f"not valid YAML ({where}): {problem}") from exc
    except yaml.YAMLError as exc:
        raise DefinitionError(f"not valid YAML ({source}): {exc}") from exc
    except RecursionError as exc:
        raise DefinitionError("not valid YAML: nested too deeply") from exc
    return definition_from_dict(data)


def load_file(path: str | Path) -> SagaDefinition:
    """Load a definition from a ``.yaml``/``.yml`` or ``.json`` file (what ``saga lint`` runs).

    Raises:
        DefinitionError: The file cannot be read or is not a valid definition.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise DefinitionError(f"cannot read {file}: {exc.strerror}") from exc
    if file.suffix == ".json":
        try:
            return definition_from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise DefinitionError(f"not valid JSON ({file}): {exc}") from exc
    return load_yaml(text, source=str(file))


def definition_to_dict(defn: SagaDefinition) -> dict[str, Any]:
    """Return the full, JSON-compatible form of ``defn`` (what the content hash covers)."""
    return defn.canonical()


def dump_yaml(defn: SagaDefinition) -> str:
    """Return ``defn`` as YAML in the full form; :func:`load_yaml` gives back an equal model."""
    return yaml.safe_dump(definition_to_dict(defn), sort_keys=False, allow_unicode=True)
