"""Fold statistics shared by every table: mean ± std over folds, and paired differences."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (ddof 1) of the finite values; (nan, 0) when there are none."""
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if not arr.size:
        return float("nan"), 0.0
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def pct(mean: float, std: float) -> str:
    """'61.0 ± 8.9' for a fraction mean ± std, in %."""
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def pct_mean_std(metrics: dict[str, Any], key: str) -> str:
    """'61.0 ± 8.9' (in %) for metrics[key] = {mean, std}; '—' when the metric is absent."""
    if key not in metrics:
        return "—"
    return pct(metrics[key]["mean"], metrics[key]["std"])


def paired_difference(
    a: dict[str, Any], b: dict[str, Any], key: str = "test_acc"
) -> dict[str, float]:
    """b - a on the same folds: mean, std and a paired t statistic (is the gain larger than
    the fold-to-fold spread?), and on how many folds b was better / worse."""
    folds = sorted(set(a["per_fold"]) & set(b["per_fold"]))
    d = np.array([b["per_fold"][f][key] - a["per_fold"][f][key] for f in folds], dtype=float)
    counts = {"folds": d.size, "better": int((d > 0).sum()), "worse": int((d < 0).sum())}
    if d.size < 2:
        mean = float(d.mean()) if d.size else float("nan")
        return {"mean": mean, "std": 0.0, "t": float("nan"), **counts}
    sd = float(d.std(ddof=1))
    return {
        "mean": float(d.mean()),
        "std": sd,
        "t": float(d.mean() / (sd / np.sqrt(d.size))) if sd > 0 else float("inf"),
        **counts,
    }
