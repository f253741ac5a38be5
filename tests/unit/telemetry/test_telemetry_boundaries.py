"""Telemetry is a seam: the engine and the definitions never import OpenTelemetry."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("package", ["engine", "definition"])
def test_no_module_of_the_core_imports_opentelemetry_or_telemetry(package: str) -> None:
    for path in sorted((ROOT / "saga" / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(("opentelemetry", "saga.telemetry")), (path, name)


def test_importing_the_engine_and_definitions_loads_no_opentelemetry() -> None:
    # A bare ``saga`` package: ``saga/__init__.py`` re-exports the coordinator, which
    # uses telemetry; the engine and the definitions must not need it.
    code = (
        "import sys, types; "
        "pkg = types.ModuleType('saga'); pkg.__path__ = ['saga']; sys.modules['saga'] = pkg; "
        "import saga.engine, saga.definition; "
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry', 'saga.tel'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"
