"""A sweep's search space: read and checked, counted and drawn, without torch or Ray.

`sssl tune` reads the space before importing either, so a bad or oversized space is refused
at once; tuning/sweep.py runs it.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np

from sssl_dist.config import SSSLConfig, to_dict
from sssl_dist.yamlfile import load_yaml

# A sweep of more trials (configurations x folds) is refused unless --max-trials raises this:
# each trial is a training run, and the grid, sweep.json and Tune's state all grow with it (10^6
# configurations wrote an 87 MB sweep.json and then ran nothing visible for minutes). The
# paper's sweep (tuning/spaces/paper.yaml) is 540 trials.
MAX_TRIALS = 1000
SPACE_KEYS = ("search", "num_samples", "folds", "base", "params", "seed")


def load_space(path: str | Path) -> dict[str, Any]:
    """Search-space YAML: {search: grid|random, num_samples, folds, base: {...}, params: {...}}.

    A param is a list (grid values, or choices for random search) or, for random search only,
    {uniform: [lo, hi]} / {loguniform: [lo, hi]} / {randint: [lo, hi]}.
    """
    space = load_yaml(path, "search space") or {}
    if not isinstance(space, dict):
        raise ValueError(f"{path}: a search space is a mapping with the keys {SPACE_KEYS}")
    unknown = set(space) - set(SPACE_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown, key=str)}")
    if not isinstance(space.get("params"), dict) or not space["params"]:
        raise ValueError(f"{path}: 'params' must name at least one config field")
    fields = set(to_dict(SSSLConfig()))
    bad = set(space["params"]) - fields
    if bad:
        raise ValueError(f"{path}: {sorted(bad, key=str)} are not SSSLConfig fields")
    search = space.get("search", "grid")
    if search not in ("grid", "random"):
        raise ValueError(f"{path}: search must be grid or random")
    for name, values in space["params"].items():
        if isinstance(values, list) and not values:
            raise ValueError(f"{path}: {name} has an empty list of values")
        if search == "grid" and not isinstance(values, list):
            raise ValueError(f"{path}: grid search needs a list of values for {name}")
        if search == "random" and not isinstance(values, list):
            _check_distribution(path, name, values)
    folds = space.get("folds", "all")
    if folds != "all" and not (isinstance(folds, list) and folds and all(_whole(f) for f in folds)):
        raise ValueError(f"{path}: folds must be 'all' or a list of fold numbers, got {folds!r}")
    samples = space.get("num_samples", 8)
    if search == "random" and not _whole(samples):
        raise ValueError(f"{path}: num_samples must be a whole number, got {samples!r}")
    if search == "random" and samples < 1:
        raise ValueError(f"{path}: num_samples must be at least 1, got {samples}")
    return space


def _check_distribution(path: str | Path, name: str, spec: Any) -> None:
    """A random-search distribution: {uniform | loguniform | randint: [lo, hi]}, lo < hi."""
    kinds = ("uniform", "loguniform", "randint")
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in kinds:
        raise ValueError(f"{path}: {name} must be a list of choices or one of {kinds}: [lo, hi]")
    ((kind, bounds),) = spec.items()
    number = _whole if kind == "randint" else lambda x: isinstance(x, int | float)
    ok = isinstance(bounds, list) and len(bounds) == 2 and all(map(number, bounds))
    if not ok or not bounds[0] < bounds[1] or (kind == "loguniform" and bounds[0] <= 0):
        lows = "0 < lo < hi" if kind == "loguniform" else "lo < hi"
        raise ValueError(f"{path}: {name}: {kind} needs [lo, hi] with {lows}, got {bounds!r}")


def _whole(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def count_configurations(space: dict[str, Any]) -> int:
    """How many parameter sets `configurations` gives, without making them."""
    if space.get("search", "grid") == "grid":
        return math.prod(len(values) for values in space["params"].values())
    return int(space.get("num_samples", 8))


def configurations(space: dict[str, Any], limit: int | None = None) -> list[dict[str, Any]]:
    """The parameter sets to try (the first `limit` only, when given), with no extra
    dependency: a full grid, or random draws."""
    params = space["params"]
    if space.get("search", "grid") == "grid":
        keys = list(params)
        combos = itertools.islice(itertools.product(*params.values()), limit)
        return [dict(zip(keys, combo, strict=True)) for combo in combos]
    rng = np.random.default_rng(space.get("seed", 0))
    out = []
    for _ in range(min(count_configurations(space), limit or math.inf)):
        draw = {}
        for name, spec in params.items():
            if isinstance(spec, list):
                draw[name] = spec[int(rng.integers(len(spec)))]
            elif "uniform" in spec:
                draw[name] = float(rng.uniform(*spec["uniform"]))
            elif "loguniform" in spec:
                lo, hi = np.log(spec["loguniform"])
                draw[name] = float(np.exp(rng.uniform(lo, hi)))
            elif "randint" in spec:
                draw[name] = int(rng.integers(spec["randint"][0], spec["randint"][1] + 1))
            else:
                raise ValueError(f"cannot sample {name}: {spec}")
        out.append(draw)
    return out


def check_trial_count(path: str | Path, n_configs: int, n_folds: int, max_trials: int) -> None:
    """Refuse a sweep of more than `max_trials` trials, stating its size."""
    trials = n_configs * n_folds
    if trials > max_trials:
        raise ValueError(
            f"{path}: {n_configs:,} configuration(s) x {n_folds} fold(s) = {trials:,} trials, "
            f"more than --max-trials {max_trials:,}: narrow the space, or raise --max-trials "
            "if you mean it"
        )
