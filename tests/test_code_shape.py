"""The house rules a reader relies on, checked: files under 400 lines, function bodies under 60 lines (a typer
command's long signature does not count: the body starts at its first statement), and a runtime core small
enough to read in one sitting."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "cli", "export", "kernels", "reference", "serve", "clipsam", "benchmarks", "tests")
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60
# engine/*.py, the runtime core (its backends/ and text/ subpackages, and eval / bench / edit, apart).
MAX_CORE_MODULES = 18


def _python_files() -> list[Path]:
    files = [ROOT / "conftest.py"]
    for package in PACKAGES:
        files += sorted((ROOT / package).rglob("*.py"))
    return [path for path in files if path.is_file()]


def _long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.body[0].lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append(f"{node.name} (line {node.lineno}): {length} lines")
    return found


def test_the_checks_see_the_repository() -> None:
    files = _python_files()
    assert len(files) > 100 and ROOT / "engine" / "pipeline.py" in files


@pytest.mark.parametrize("path", _python_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_file_and_function_sizes(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_FILE_LINES, f"{lines} lines"
    assert _long_functions(path) == []


def test_a_long_function_is_caught(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES + 1))
    sample = tmp_path / "sample.py"
    sample.write_text(f"def f(\n    a,\n    b,\n):\n{body}\n", encoding="utf-8")
    assert _long_functions(sample) == [f"f (line 1): {MAX_FUNCTION_LINES + 1} lines"]


def test_the_runtime_core_reads_in_one_sitting() -> None:
    core = sorted(path.name for path in (ROOT / "engine").glob("*.py") if path.name != "__init__.py")
    assert len(core) <= MAX_CORE_MODULES, core
