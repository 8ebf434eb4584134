"""The arms of a comparison: the default three, an arms YAML, or `--arm NAME KEY=VALUE ...`.

Apart from compare.py, which imports torch and Ray, so that a bad arms file is refused
before either is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sssl_dist.config import PAPER_CONFIG, parse_overrides, read_config_file


def default_arms() -> dict[str, dict[str, Any]]:
    """Inherited labels, the paper's SSSL (its global split, its last epoch:
    configs/paper_global_split.yaml) and SSSL with this repository's defaults."""
    return {
        "inherit": {"method": "inherit"},
        "sssl-paper": {"method": "sssl", **read_config_file(PAPER_CONFIG)},
        "sssl": {"method": "sssl"},
    }


# The two arms that bound what any split or step can gain on shards with per-second truth
# (DESIGN.md, "Measuring a noisy-label method against its ceiling"): the default step on a
# perfect split (X = the segments whose inherited label is right), and plain CE on every
# segment's true label. `--ceiling` adds them; shards without truth refuse them.
CEILING_ARMS: dict[str, dict[str, Any]] = {
    "oracle-split": {"method": "sssl", "split_evidence": "oracle"},
    "oracle-labels": {"method": "inherit", "train_labels": "truth"},
}


def read_arms(path: str | Path) -> dict[str, dict[str, Any]]:
    """An arms YAML: a mapping of arm name to its config overrides (a mapping, maybe empty)."""
    data = read_config_file(path)
    bad = [name for name, o in data.items() if not isinstance(o, dict | type(None))]
    if bad:
        raise ValueError(f"{path}: each arm must map to config overrides; not so for {bad}")
    names = [str(name) for name in data]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:  # 1 and "1" are two YAML keys, but one arm name
        raise ValueError(f"{path}: arm {twice[0]!r} is named twice")
    return {str(name): dict(o or {}) for name, o in data.items()}


def parse_arm(words: list[str]) -> tuple[str, dict[str, Any]]:
    """`--arm NAME KEY=VALUE ...` -> (NAME, {KEY: VALUE})."""
    if not words or "=" in words[0]:
        raise ValueError(f"--arm needs a name first, then KEY=VALUE overrides: {words}")
    return words[0], parse_overrides(words[1:])
