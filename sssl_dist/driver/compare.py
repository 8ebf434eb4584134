"""`sssl compare`: does one arm beat another on this shard set, and by how much.

An arm is a name and its config overrides (`inherit`, the paper's SSSL, ours, a rung of an
ablation). Every arm runs on identical folds and seeds: for each task and each repetition r
the fold assignment and the training seed are `seed + r` (repeated stratified k-fold, song
grouped), the same for every arm, so the differences are paired. All cells (task x arm x
repetition) go through `cv.run_arms`, whose folds share the parallel slots; a re-run resumes
every fold where it stopped.

Each pair of arms gets the corrected repeated k-fold t, its CI and p, the Bayesian correlated
t-test's probabilities, win/tie/loss counts, the detectable gain and a one-line verdict
(stats.py), on song accuracy; where the shards carry per-second truth, segment accuracy against
the truth and the noise AUC get the same statistics as secondary evidence.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sssl_dist.config import SSSLConfig, with_overrides
from sssl_dist.data.folds import check_shards_serve
from sssl_dist.data.segments import ShardSet
from sssl_dist.driver.cv import check_same_report, run_arms
from sssl_dist.method.tasks import Compared, targets_of_config, task_named
from sssl_dist.outputs.results import draw_plots
from sssl_dist.outputs.stats import DEFAULT_ROPE, compare_paired

log = logging.getLogger(__name__)

COMPARISON_MD, COMPARISON_JSON, FOREST_PNG = "comparison.md", "comparison.json", "forest.png"
# Which figures are compared, the first being the one every verdict is about, is the task's
# (`Task.compared`): for classification, song accuracy, then on shards with per-second truth
# the segment accuracy against it and the noise AUC.
PAIRINGS = ("all", "baseline", "ladder")
# What the design sets for every cell, so that the arms are paired: an arm's own value of
# one of these would be replaced without a word (`Design.cells`).
DESIGN_KEYS = ("task", "n_folds", "seed")


@dataclass(frozen=True)
class Design:
    """What a comparison runs: arms x tasks x repeats x n_folds folds."""

    arms: dict[str, dict[str, Any]]
    tasks: tuple[str, ...]
    n_folds: int
    repeats: int = 1
    rope: float = DEFAULT_ROPE
    pairing: str = "all"
    folds: tuple[int, ...] | None = None  # a subset (smoke runs); None: all n_folds

    def __post_init__(self) -> None:
        if len(self.arms) < 2:
            raise ValueError(f"a comparison needs at least 2 arms, got {list(self.arms)}")
        for name, overrides in self.arms.items():
            fixed = [key for key in DESIGN_KEYS if key in overrides]
            if fixed:
                raise ValueError(
                    f"arm {name!r} sets {fixed[0]}, which a comparison sets for every arm alike "
                    "(--tasks, --folds, --set seed=N): drop it from the arm"
                )
        if self.repeats < 1:
            raise ValueError(f"--repeats must be at least 1, got {self.repeats}")
        if not 0 < self.rope < 1:
            # Held as a fraction, given and shown in accuracy points (as --rope takes it).
            raise ValueError(
                f"--rope is in accuracy points, above 0 and below 100: got {100 * self.rope:g}"
            )
        if self.pairing not in PAIRINGS and ":" not in self.pairing:
            raise ValueError(
                f"--pairs must be one of {PAIRINGS} or a list A:B,C:D, got {self.pairing!r}"
            )
        pairs = self.pairs()
        unknown = {arm for pair in pairs for arm in pair} - set(self.arms)
        if unknown:
            raise ValueError(f"--pairs names arms that are not compared: {sorted(unknown)}")
        itself = [a for a, b in pairs if a == b]
        if itself:
            raise ValueError(f"--pairs compares {itself[0]!r} with itself: name two arms")
        seen = set()
        for a, b in pairs:
            if (a, b) in seen:
                raise ValueError(f"--pairs lists {a}:{b} twice")
            if (b, a) in seen:
                raise ValueError(f"--pairs lists {b}:{a} and {a}:{b}, one pair both ways round")
            seen.add((a, b))

    def pairs(self) -> list[tuple[str, str]]:
        """(a, b) pairs, each read as the gain of b over a."""
        names = list(self.arms)
        if ":" in self.pairing:  # explicit: "inherit:filter,filter:pseudo"
            pairs = []
            for item in self.pairing.split(","):
                pair = tuple(name.strip() for name in item.split(":"))
                if len(pair) != 2 or not all(pair):
                    raise ValueError(f"--pairs takes A:B pairs joined by commas, not {item!r}")
                pairs.append(pair)
            return pairs
        if self.pairing == "baseline":
            return [(names[0], b) for b in names[1:]]
        if self.pairing == "ladder":
            return list(zip(names, names[1:], strict=False))
        return [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]

    def cell(self, task: str, arm: str, repeat: int) -> str:
        """A cell's report directory under the comparison's: task/arm[-repeatR]."""
        return f"{task}/{arm}" + (f"-repeat{repeat}" if repeat else "")

    def cells(self, base: SSSLConfig) -> dict[str, dict[str, Any]]:
        """Every cell's overrides of `base`: the arm's, its task, and the repetition's seed."""
        out = {}
        for task in self.tasks:
            for r in range(self.repeats):
                for arm, overrides in self.arms.items():
                    extra = {"task": task, "n_folds": self.n_folds, "seed": base.seed + r}
                    out[self.cell(task, arm, r)] = {**overrides, **extra}
        return out


def run_comparison(
    base: SSSLConfig,
    shards: ShardSet,
    out: Path,
    design: Design,
    *,
    workers: int = 0,
    parallel: int = 1,
    use_gpu: bool = False,
    share_warmup: bool = True,
    start_ray: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Train every cell, then compare the arms (cells with the same warm-up train it once:
    warmup.py); writes comparison.md, comparison.json and the
    forest plot into `out`, and returns the comparison. Every cell is checked before
    `start_ray` is called."""
    cells = design.cells(base)
    check_cells(base, shards, out, cells, design.folds)
    start_ray()
    folds = list(design.folds) if design.folds is not None else None
    summaries: dict[str, dict[str, Any]] = {}
    for name, summary, minutes in run_arms(
        base,
        shards,
        lambda name: out / name,
        cells,
        folds=folds,
        workers=workers,
        parallel=parallel,
        use_gpu=use_gpu,
        share_warmup=share_warmup,
    ):
        summaries[name] = summary
        log.info("cell %s finished (%.1f min since the comparison started)", name, minutes)
    comparison = summarise_comparison(base, shards, design, summaries)
    write_comparison(out, comparison)
    return comparison


def check_cells(
    base: SSSLConfig,
    shards: ShardSet,
    out: Path,
    cells: dict[str, dict[str, Any]],
    folds: tuple[int, ...] | None = None,
) -> None:
    """Before any training: every cell's config is valid, the shards serve every task with
    these folds and every arm (a ceiling arm needs per-second truth), and no cell's directory
    holds a report of another configuration."""
    from sssl_dist.driver.fold import check_shards

    configs = {name: with_overrides(base, overrides) for name, overrides in cells.items()}
    for name, cfg in configs.items():
        try:
            check_shards(cfg, shards)
        except ValueError as exc:
            raise ValueError(f"arm {name.split('/')[1]}: {exc}") from None
    check_shards_serve(shards, configs.values(), folds, targets_of_config)
    for name, cfg in configs.items():
        check_same_report(out / name, cfg, shards)


def per_fold(summary: dict[str, Any], key: str) -> dict[int, float]:
    """One metric of a cell, fold by fold in fold order (folds finish in any order when they
    run side by side; the comparison must not depend on it), for the folds that report it."""
    folds = sorted(summary["per_fold"].items(), key=lambda item: int(item[0]))
    return {int(f): r[key] for f, r in folds if _finite(r.get(key))}


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def paired_vectors(
    design: Design, summaries: dict[str, dict[str, Any]], task: str, a: str, b: str, key: str
) -> tuple[list[float], list[float], list[str]]:
    """The two arms' values of `key` over the (repeat, fold) results both have, in one order."""
    xs, ys, where = [], [], []
    for r in range(design.repeats):
        fa = per_fold(summaries[design.cell(task, a, r)], key)
        fb = per_fold(summaries[design.cell(task, b, r)], key)
        for f in sorted(set(fa) & set(fb)):
            xs.append(fa[f])
            ys.append(fb[f])
            where.append(f"r{r}f{f}")
    return xs, ys, where


def warmup_epochs_used(
    base: SSSLConfig, design: Design, summaries: dict[str, dict[str, Any]], task: str, arm: str
) -> dict[str, Any]:
    """Which epoch each fold of an arm evaluated (0-based), and how many fell in the warm-up
    (where an SSSL arm exports what plain training on inherited labels would)."""
    cfg = with_overrides(base, design.arms[arm])
    epochs = {}
    for r in range(design.repeats):
        for f, e in per_fold(summaries[design.cell(task, arm, r)], "evaluated_epoch").items():
            epochs[f"r{r}f{f}"] = int(e)
    in_warmup = sum(e < cfg.warmup_epochs for e in epochs.values())
    return {
        "evaluated_epoch": epochs,
        "in_warmup": in_warmup if cfg.method != "inherit" else None,
        "warmup_epochs": cfg.warmup_epochs,
        "method": cfg.method,
    }


def compare_metric(
    design: Design,
    summaries: dict[str, dict[str, Any]],
    task: str,
    a: str,
    b: str,
    spec: Compared,
    songs: int,
) -> dict[str, Any] | None:
    """b against a on one figure. A figure where lower is better (RMSE) is compared as its
    reduction, so "helps" means the same for every figure."""
    xs, ys, where = paired_vectors(design, summaries, task, a, b, spec.key)
    if not xs:
        return None
    out: dict[str, Any] = {"a": xs, "b": ys, "where": where}
    if spec != Compared(spec.key, spec.name, design.rope, truth_only=spec.truth_only):
        out["shown"] = {  # how the figure is worded, where it is not an accuracy in points
            "name": spec.name,
            "scale": spec.scale,
            "unit": spec.unit,
            "digits": spec.digits,
            "lower_is_better": spec.lower_is_better,
        }
    if len(xs) < 2:
        note = f"not tested: {len(xs)} paired fold result, a comparison needs at least 2"
        return {"stats": None, "verdict": note, **out}
    sign = -1.0 if spec.lower_is_better else 1.0
    c = compare_paired(
        [sign * x for x in xs],
        [sign * y for y in ys],
        design.n_folds,
        design.repeats,
        spec.rope,
        songs,
        spec.span,
    )
    return {"stats": c.to_dict(), "verdict": c.sentence(spec.scale, spec.unit, spec.digits), **out}


def summarise_comparison(
    base: SSSLConfig, shards: ShardSet, design: Design, summaries: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Everything comparison.md and comparison.json show: Table 3, the pairs' statistics and
    verdicts, the evaluated epochs; every per-fold figure is kept, so anyone can recompute."""
    songs = len(shards.songs)
    truth = shards.has_truth
    tasks = {}
    for task in design.tasks:
        compared = task_named(task).compared(shards.songs, design.rope)
        table = {}
        for arm in design.arms:
            vals = {
                key: [
                    v
                    for r in range(design.repeats)
                    for v in per_fold(summaries[design.cell(task, arm, r)], key).values()
                ]
                for key in task_named(task).table_keys
            }
            table[arm] = {k: v for k, v in vals.items() if v}
        pairs = []
        for a, b in design.pairs():
            metrics = {}
            for spec in compared:
                if spec.truth_only and not truth:
                    continue
                m = compare_metric(design, summaries, task, a, b, spec, songs)
                if m is not None:
                    metrics[spec.key] = m
            pairs.append({"a": a, "b": b, "metrics": metrics})
        epochs = {
            arm: warmup_epochs_used(base, design, summaries, task, arm) for arm in design.arms
        }
        tasks[task] = {"table": table, "pairs": pairs, "epochs": epochs}
        if compared[0].key != "test_acc":  # the table's columns, where not accuracy and F1
            tasks[task]["columns"] = list(task_named(task).table_keys)
        shares = headroom_shares(base, design, summaries, task, compared[:2])
        if shares:
            tasks[task]["headroom"] = shares
    return {
        "design": {
            "arms": design.arms,
            "tasks": list(design.tasks),
            "n_folds": design.n_folds,
            "repeats": design.repeats,
            "folds": list(design.folds) if design.folds is not None else None,
            "rope": design.rope,
            "pairs": design.pairs(),
        },
        "songs": songs,
        "shards": str(shards.root),
        "shards_digest": shards.digest(),
        "has_truth": truth,
        "tasks": tasks,
        "cells": {name: str(name) for name in summaries},
    }


def ceiling_roles(base: SSSLConfig, design: Design) -> tuple[str | None, str | None]:
    """(the plain-training arm, the oracle-labels arm) of a design, found by what they train:
    CE on the inherited labels, and CE on the true labels. None where the design has none."""
    plain = oracle = None
    for arm, overrides in design.arms.items():
        cfg = with_overrides(base, overrides)
        if cfg.method == "inherit" and cfg.train_labels == "inherited" and plain is None:
            plain = arm
        if cfg.method == "inherit" and cfg.train_labels == "truth" and oracle is None:
            oracle = arm
    return plain, oracle


def headroom_shares(
    base: SSSLConfig,
    design: Design,
    summaries: dict[str, dict[str, Any]],
    task: str,
    compared: tuple[Compared, ...],
) -> dict[str, Any] | None:
    """Each arm's share of the headroom, (arm − inherit) / (oracle-labels − inherit), on song
    accuracy and segment accuracy against the truth: the mean gains over the folds all three
    have. None without both bounding arms. A share is None where the oracle does not beat
    inherit on those folds (there is no headroom to share)."""
    plain, oracle = ceiling_roles(base, design)
    if plain is None or oracle is None:
        return None
    out: dict[str, Any] = {"inherit": plain, "oracle": oracle, "metrics": {}}
    for key in [c.key for c in compared if not c.lower_is_better]:
        ceiling_x, ceiling_y, where = paired_vectors(design, summaries, task, plain, oracle, key)
        if not where:
            continue
        room = float(np.mean(ceiling_y) - np.mean(ceiling_x))
        shares: dict[str, Any] = {}
        for arm in design.arms:
            xs, ys, at = paired_vectors(design, summaries, task, plain, arm, key)
            common = [i for i, w in enumerate(at) if w in where]
            gain = float(np.mean([ys[i] - xs[i] for i in common])) if common else float("nan")
            shares[arm] = {
                "gain": gain,
                "share": gain / room if room > 0 and common else None,
            }
        out["metrics"][key] = {"headroom": room, "arms": shares}
    return out


def write_comparison(out: Path, comparison: dict[str, Any]) -> None:
    """comparison.json and comparison.md first, then the forest plot."""
    from sssl_dist.outputs.tables import comparison_markdown

    out.mkdir(parents=True, exist_ok=True)
    (out / COMPARISON_JSON).write_text(json.dumps(comparison, indent=1, default=_json))
    (out / COMPARISON_MD).write_text(comparison_markdown(comparison) + "\n")
    draw_plots(out, lambda: _forest(comparison, out / FOREST_PNG))


def _forest(comparison: dict[str, Any], path: Path) -> None:
    from sssl_dist.outputs.report import plot_forest

    plot_forest(comparison, path)


def _json(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(type(obj))
