"""The README's examples run: the Python and the YAML definition are the same saga."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from saga.definition import SagaDefinition, load_yaml

README = Path(__file__).resolve().parents[2] / "README.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_python_and_yaml_definitions_are_equal() -> None:
    python = next(b for b in _blocks("python") if "SagaBuilder(" in b)
    yaml_text = next(b for b in _blocks("yaml") if "steps:" in b)
    namespace: dict[str, Any] = {}
    exec(compile(python, "README.md", "exec"), namespace)
    built = namespace["ORDER_PLACEMENT"]
    assert isinstance(built, SagaDefinition)
    assert load_yaml(yaml_text) == built
    assert [s.kind for s in built.steps] == ["compensatable", "compensatable", "pivot", "retriable"]


def test_readme_names_the_two_commands() -> None:
    text = README.read_text()
    assert "bash deploy/tasks demo" in text
    assert "bash deploy/tasks test" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert "bash deploy/tasks test" in ci


def test_readme_participant_example_registers_its_handler() -> None:
    block = next(b for b in _blocks("python") if "Participant(" in b)
    namespace: dict[str, Any] = {}
    exec(compile(block, "README.md", "exec"), namespace)
    participant = namespace["payments"]
    assert "payments.authorize" in participant.registrations


def test_readme_saga_test_example_runs() -> None:
    block = next(b for b in _blocks("python") if "from saga.testing import" in b)
    namespace: dict[str, Any] = {}
    exec(compile(block, "README.md", "exec"), namespace)
    tests = [f for name, f in namespace.items() if name.startswith("test_") and callable(f)]
    assert len(tests) >= 3
    for test in tests:
        test()


def test_readme_explore_output_is_what_saga_explore_prints() -> None:
    from click.testing import CliRunner

    from saga.cli import cli

    section = README.read_text().split("## Test a saga", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(\w*)\n(.*?)```", section, flags=re.DOTALL)
    shown = next(text for lang, text in blocks if not lang)
    res = CliRunner().invoke(cli, ["explore", "order_placement"])
    assert res.exit_code == 0, res.output
    printed = res.stdout.splitlines()
    for line in shown.splitlines():
        if line.strip() != "...":
            assert line in printed, line


def test_readme_kafka_start_examples_load() -> None:
    refund = load_yaml(next(b for b in _blocks("yaml") if "triggers:" in b))
    assert refund.lock == "account_id"
    assert refund.lock_timeout_ms == 600_000
    assert [t.type for t in refund.triggers] == ["order.returned"]
    assert refund.input_schema is not None
    block = next(b for b in _blocks("python") if "request_start(" in b)
    namespace: dict[str, Any] = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert callable(namespace["place_order"])
