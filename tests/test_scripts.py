"""The benchmark and probe scripts import the package inside their functions (so `--help` is
quick), where a renamed or moved name only fails when a long grid starts. Every name they
import from the package must exist."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted([*ROOT.glob("benchmarks/*.py"), *ROOT.glob("dev/*.py")])


def _package_imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every `from sssl_dist... / shards... import name` in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        ours = isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0]
        if ours in ("sssl_dist", "shards"):
            found += [(node.module, alias.name) for alias in node.names]
    return found


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_name_a_script_imports_from_the_package_exists(script: Path):
    imports = _package_imports(script)
    missing = [
        f"{module}.{name}"
        for module, name in imports
        if not hasattr(importlib.import_module(module), name)
        and importlib.util.find_spec(f"{module}.{name}") is None
    ]
    assert not missing, f"{script.name} imports names that do not exist: {missing}"
