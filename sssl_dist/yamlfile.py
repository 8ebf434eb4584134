"""Reading a YAML file a user gives (a config, an arms file, a sweep space): safe and bounded.

`yaml.safe_load` runs no code, but an alias repeats a whole subtree, so a file of a few hundred
bytes can stand for billions of values: the object is built from shared pieces, and the first
thing that walks it (a digest, an error message, a copy) takes the machine's memory. Here the
composed document is measured before any object is built, and refused when its aliases would
expand to more than MAX_NODES nodes, when an alias contains itself, or when the file is larger
than MAX_BYTES. Anchors, aliases and merge keys (`<<: *paper`) within those bounds load as
before. A mapping that repeats a key is refused too: YAML keeps the last value silently, so a
repeated arm name would drop an arm.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 1 << 20  # 1 MiB: the largest config or search space shipped is under 2 KB
MAX_NODES = 100_000  # values and containers after expanding every alias
MERGE_TAG = "tag:yaml.org,2002:merge"


def load_yaml(path: str | Path, what: str = "YAML file") -> Any:
    """The document in `path`, or a one-line ValueError naming the file. `what` says what the
    file is in that message ("config file", "search space")."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} is not a file")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise ValueError(f"{path}: {size:,} bytes; a {what} may have at most {MAX_BYTES:,}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UTF-8 text file") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_expansion(node)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not a valid {what}: {yaml_problem(exc)}") from None
    except RecursionError:
        raise ValueError(f"{path}: not a valid {what}: nested too deeply") from None
    finally:
        loader.dispose()


def check_expansion(root: yaml.Node, limit: int = MAX_NODES) -> int:
    """How many nodes the document has with every alias expanded (a shared subtree counts
    once per use), counted without expanding it: each node's size is computed once. Raises a
    ComposerError past `limit`, for an alias inside itself, or for a repeated mapping key."""
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in _children(node))
            if size[key] > limit:
                raise _refused(
                    node,
                    f"its aliases expand to more than {limit:,} values (a small file can "
                    "otherwise stand for billions)",
                )
            continue
        if key in size:
            continue
        if key in on_path:
            raise _refused(node, "an alias refers to a value that contains it")
        on_path.add(key)
        if isinstance(node, yaml.MappingNode):
            _check_unique_keys(node)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in size)
    return size[id(root)]


def _children(node: yaml.Node) -> Iterator[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        yield from node.value
    elif isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            yield k
            yield v


def _check_unique_keys(node: yaml.MappingNode) -> None:
    """A key written twice in one mapping (keys a merge brings in may be overridden)."""
    seen = set()
    for k, _ in node.value:
        if not isinstance(k, yaml.ScalarNode) or k.tag == MERGE_TAG:
            continue
        if (k.tag, k.value) in seen:
            raise _refused(k, f"the key {k.value!r} appears twice in one mapping")
        seen.add((k.tag, k.value))


def _refused(node: yaml.Node, problem: str) -> yaml.composer.ComposerError:
    return yaml.composer.ComposerError(None, None, problem, node.start_mark)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """One line for a YAML error (PyYAML's own message spans several)."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return str(exc).splitlines()[0]
    where = f"line {exc.problem_mark.line + 1}: " if exc.problem_mark else ""
    problem = f"{where}{exc.problem}"
    if isinstance(exc, yaml.constructor.ConstructorError):
        problem += " (tags such as !!python/object are not allowed)"
    return problem
