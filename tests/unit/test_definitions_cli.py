"""``saga lint`` and ``saga graph``: what a definition author sees in the terminal."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from saga.cli import cli

GOOD = """\
name: orders
version: 1
steps:
  - name: reserve
    participant: inventory
    command: inventory.reserve
    compensation: inventory.release
  - name: charge
    kind: pivot
    participant: payment
    command: payment.charge
  - name: notify
    kind: retriable
    participant: mail
    command: mail.send
    retry: {initial_delay: 2s}
"""


def test_lint_accepts_a_retriable_step_whose_retry_leaves_out_max_attempts(
    tmp_path: Path,
) -> None:
    file = tmp_path / "orders.yaml"
    file.write_text(GOOD)
    result = CliRunner().invoke(cli, ["lint", str(file)])
    assert result.exit_code == 0, result.output
    assert "ok (orders v1, 3 steps" in result.output


def test_lint_names_the_misspelled_key_and_the_file(tmp_path: Path) -> None:
    misspelled = tmp_path / "misspelled.yaml"
    misspelled.write_text(GOOD.replace("compensation:", "compensaton:"))
    broken = tmp_path / "broken.yaml"
    broken.write_text(GOOD.replace("retry: {initial_delay: 2s}", "retry: {initial_delay: 2s"))
    result = CliRunner().invoke(cli, ["lint", str(misspelled), str(broken)])
    assert result.exit_code == 1
    assert (
        f"{misspelled}: steps[0].compensaton: unknown key 'compensaton';"
        " did you mean 'compensation'?" in result.output
    )
    assert f"{broken}: not valid YAML ({broken}, line " in result.output
    assert "<definition>" not in result.output
    assert "<unicode string>" not in result.output
    assert "2 of 2 definition(s) invalid" in result.output


def test_graph_states_with_a_name_says_the_name_is_not_used() -> None:
    result = CliRunner().invoke(cli, ["graph", "--states", "order_placement"])
    assert result.exit_code == 2
    assert "--states draws the status table, which every saga shares" in result.output
    table = CliRunner().invoke(cli, ["graph", "--states"])
    assert table.exit_code == 0
    assert table.output.startswith("stateDiagram")
