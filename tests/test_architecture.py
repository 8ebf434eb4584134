"""The layers of docs/architecture.md: imports point down only, and no import circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sssl_dist"
# Each layer and the layers of ours it may import (docs/architecture.md).
ALLOWED = {
    "config": {"yamlfile"},
    "yamlfile": set(),
    "data": {"config", "yamlfile"},
    "method": {"data", "config", "yamlfile"},
    "files": {"method", "data", "config", "yamlfile"},
    "outputs": {"files", "method", "data", "config", "yamlfile"},
    "rank": {"files", "method", "data", "config", "yamlfile"},
    "driver": {"rank", "outputs", "files", "method", "data", "config", "yamlfile"},
}


def _layer(module: str) -> str:
    return module.split(".")[1] if module.startswith("sssl_dist.") else ""


def _imports(path: Path, ours: tuple[str, ...] = ("sssl_dist",)) -> set[str]:
    """The modules of the packages `ours` a file imports, at any depth of the file (lazy
    imports count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in ours:  # from sssl_dist import x
                found |= {f"{node.module}.{a.name}" for a in node.names}
            elif node.module.split(".")[0] in ours:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] in ours}
    return found


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        out.append((".".join(rel.parts), path))
    return out


@pytest.mark.parametrize("module, path", _modules(), ids=lambda v: str(v))
def test_every_import_points_down_a_layer(module, path):
    layer = _layer(module)
    if layer in ("cli", "__main__", "__init__"):
        return  # the command line may import everything
    assert not _imports(path, ("shards", "tuning")), "the library never imports its users"
    for imported in _imports(path):
        other = _layer(imported)
        if other == layer:
            continue
        assert other in ALLOWED[layer], f"{module} ({layer}) imports {imported} ({other})"


def test_there_is_no_import_circle():
    graph = {module: {m for m in _imports(path)} for module, path in _modules()}
    seen, stack = set(), []

    def visit(node: str) -> None:
        if node in stack:
            raise AssertionError(
                "import circle: " + " -> ".join([*stack[stack.index(node) :], node])
            )
        if node in seen or node not in graph:
            return
        stack.append(node)
        for nxt in graph[node]:
            visit(nxt)
        stack.pop()
        seen.add(node)

    for module in graph:
        visit(module)
