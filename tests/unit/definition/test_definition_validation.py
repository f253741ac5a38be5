"""Invalid definitions: each error names the path of the offending field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from saga.definition import RetryPolicy, SagaBuilder, compensatable, load_file, load_yaml, pivot
from saga.errors import DefinitionError

A = {"name": "a", "participant": "x", "command": "a.do", "compensation": "a.undo"}
B = {"name": "b", "participant": "x", "command": "b.do", "compensation": "b.undo"}
P = {"name": "p", "kind": "pivot", "participant": "x", "command": "p.do"}
R = {"name": "r", "kind": "retriable", "participant": "x", "command": "r.do"}
W = {"name": "w", "signal": "go", "timeout": "1s"}


def _yaml(steps: list[object], **top: object) -> str:
    return yaml.safe_dump({"name": "s", "version": 1, **top, "steps": steps})


# (id, steps, path, words in the message)
ROWS = [
    ("compensatable after the pivot", [A, P, B], "steps[2].kind", "after the pivot"),
    ("two pivots", [A, P, {**P, "name": "p2"}], "steps[2].kind", "at most one pivot"),
    (
        "retriable with bounded retries",
        [A, P, {**R, "retry": {"max_attempts": 5}}],
        "steps[2].retry.max_attempts",
        "retriable",
    ),
    ("retriable before the pivot", [R, P], "steps[0].kind", "before the pivot"),
    ("retriable without a pivot", [A, R], "steps[1].kind", "has none"),
    (
        "unknown reference",
        [A, {**B, "depends_on": ["zz"]}],
        "steps[1].depends_on[0]",
        "unknown step",
    ),
    ("duplicate names", [A, {**B, "name": "a"}], "steps[1].name", "duplicate"),
    ("invalid condition", [{**A, "when": "a[?"}], "steps[0].when", "invalid JMESPath"),
    (
        "invalid input mapping",
        [{**A, "input": {"k": "foo("}}],
        "steps[0].input.k",
        "invalid JMESPath",
    ),
    (
        "unknown function",
        [{**A, "output": {"k": "nope(x)"}}],
        "steps[0].output.k",
        "invalid JMESPath",
    ),
    (
        "wait step without timeout",
        [A, {"name": "w", "signal": "go"}],
        "steps[1].timeout_ms",
        "timeout_ms",
    ),
    ("wait step with a command", [{**W, "command": "x"}], "steps[0].command", "sends nothing"),
    (
        "cycle",
        [{**A, "depends_on": ["b"]}, {**B, "depends_on": ["a"]}],
        "steps[1].depends_on",
        "cycle",
    ),
    ("self dependency", [{**A, "depends_on": ["a"]}], "steps[0].depends_on[0]", "itself"),
    (
        "pivot is not a cut",
        [A, {**P, "depends_on": ["a"]}, {**B, "depends_on": ["a"]}],
        "steps[2].depends_on",
        "before or after",
    ),
    (
        "compensatable without compensation",
        [{**P, "kind": "compensatable"}],
        "steps[0].compensation",
        "needs",
    ),
    (
        "pivot with compensation",
        [{**P, "compensation": "u"}],
        "steps[0].compensation",
        "cannot be compensated",
    ),
    (
        "missing kind",
        [{"name": "x", "participant": "x", "command": "c"}],
        "steps[0].kind",
        "required",
    ),
    ("bad kind", [{**P, "kind": "magic"}], "steps[0].kind", "Input should be"),
    ("bad name", [{**A, "name": "has space"}], "steps[0].name", "pattern"),
    ("unknown field", [{**A, "colour": "red"}], "steps[0].colour", "unknown key 'colour'"),
    (
        "a misspelled key is named, with the key it resembles",
        [{k: v for k, v in {**A, "compensaton": A["compensation"]}.items() if k != "compensation"}],
        "steps[0].compensaton",
        "unknown key 'compensaton'; did you mean 'compensation'?",
    ),
    (
        "a misspelled retry key",
        [A, {**B, "retry": {"max_atempts": 2}}],
        "steps[1].retry.max_atempts",
        "did you mean 'max_attempts'?",
    ),
    ("negative timeout", [{**A, "timeout_ms": -1}], "steps[0].timeout_ms", "greater than"),
    ("bad duration", [{**A, "timeout": "soon"}], "steps[0].timeout", "not a duration"),
    ("jitter above 1", [{**A, "retry": {"jitter": 2}}], "steps[0].retry.jitter", "less than"),
    ("no steps", [], "steps", "at least one step"),
    (
        "reserved compensation key",
        [{**A, "input": {"output": "x"}}],
        "steps[0].input.output",
        "reserved",
    ),
    (
        "error inside a parallel group names the source path",
        [
            A,
            {
                "parallel": {
                    "name": "g",
                    "steps": [B, {**B, "name": "c", "retry": {"max_attempts": 0}}],
                }
            },
        ],
        "steps[1].parallel.steps[1].retry.max_attempts",
        "greater than",
    ),
    (
        "parallel group without a name",
        [A, {"parallel": {"steps": [B]}}],
        "steps[1].parallel.name",
        "name",
    ),
]


@pytest.mark.parametrize(("steps", "path", "words"), [pytest.param(*r[1:], id=r[0]) for r in ROWS])
def test_invalid_definition_names_the_path(steps: list[object], path: str, words: str) -> None:
    with pytest.raises(DefinitionError) as err:
        load_yaml(_yaml(steps))
    assert err.value.path == path, err.value.message
    assert words in err.value.reason


@pytest.mark.parametrize(
    ("top", "path"),
    [
        pytest.param({"version": 0}, "version", id="version below 1"),
        pytest.param({"deadline": "0s"}, "deadline_ms", id="zero deadline"),
        pytest.param({"name": "bad name"}, "name", id="bad saga name"),
    ],
)
def test_invalid_header(top: dict[str, object], path: str) -> None:
    with pytest.raises(DefinitionError) as err:
        load_yaml(_yaml([A], **top))
    assert err.value.path == path


def test_a_misspelled_top_level_key_is_named() -> None:
    with pytest.raises(DefinitionError) as err:
        load_yaml(yaml.safe_dump({"name": "s", "version": 1, "stepz": [A]}))
    assert err.value.path == "stepz"
    assert "did you mean 'steps'?" in err.value.reason


def test_a_yaml_syntax_error_names_the_file_and_the_position(tmp_path: Path) -> None:
    file = tmp_path / "orders.yaml"
    file.write_text("name: s\nversion: 1\nsteps:\n  - name: [unclosed\n")
    with pytest.raises(DefinitionError) as err:
        load_file(file)
    message = err.value.message
    assert f"not valid YAML ({file}, line 5, column 1)" in message, message
    assert "<unicode string>" not in message
    bad_json = tmp_path / "orders.json"
    bad_json.write_text("{")
    with pytest.raises(DefinitionError, match=r"not valid JSON \(.*orders\.json\)"):
        load_file(bad_json)


def test_a_retriable_step_with_a_retry_mapping_keeps_unbounded_attempts() -> None:
    defn = load_yaml(_yaml([A, P, {**R, "retry": {"initial_delay": "2s"}}]))
    retry = defn.step("r").retry
    assert retry.max_attempts is None, "the user never wrote max_attempts"
    assert retry.initial_delay_ms == 2000


def test_not_yaml_or_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError):
        load_yaml("name: [unclosed")
    with pytest.raises(DefinitionError):
        load_yaml("- just a list")
    with pytest.raises(DefinitionError):
        load_file(tmp_path / "missing.yaml")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{")
    with pytest.raises(DefinitionError):
        load_file(bad_json)


def test_builder_errors_are_definition_errors_with_paths() -> None:
    builder = SagaBuilder("s").add(
        compensatable("a", participant="x", command="a", compensation="u"),
        pivot("p", participant="x", command="p"),
        compensatable("b", participant="x", command="b", compensation="u"),
    )
    with pytest.raises(DefinitionError) as err:
        builder.build()
    assert err.value.path == "steps[2].kind"


def test_retry_policy_validates_at_construction() -> None:
    with pytest.raises(ValueError, match="max_delay_ms"):
        RetryPolicy(initial_delay_ms=10, max_delay_ms=5)
