"""Sweep plots: metric vs each hyperparameter, per-fold spread, split quality over epochs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

NON_PARAMS = {"config", "folds"}


def write_sweep_plots(out: Path, summary: dict[str, Any]) -> None:
    """Three figures of a sweep: metric against each parameter, per-fold spread, split over
    epochs."""
    _plot_metric_vs_params(out, summary["rows"])
    _plot_fold_spread(out, summary["per_config"])
    _plot_split_over_epochs(out, summary["histories"])


def _plot_metric_vs_params(out: Path, rows: list[dict[str, Any]]) -> None:
    params = [k for k in rows[0] if k not in NON_PARAMS and not k.endswith(("_mean", "_std"))]
    # 1. metric vs each hyperparameter (validation: what selection sees; test: what is reported)
    fig, axes = plt.subplots(1, len(params), figsize=(3.6 * len(params), 3), squeeze=False)
    for ax, p in zip(axes[0], params, strict=True):
        values = sorted({r[p] for r in rows}, key=str)
        pos = {v: i for i, v in enumerate(values)}
        for metric, colour in (("val_acc", "tab:blue"), ("test_acc", "tab:orange")):
            xs = [pos[r[p]] + (0.08 if metric == "test_acc" else -0.08) for r in rows]
            ax.errorbar(
                xs,
                [r[f"{metric}_mean"] for r in rows],
                [r[f"{metric}_std"] for r in rows],
                fmt="o",
                color=colour,
                ms=4,
                capsize=2,
                label=metric,
            )
        ax.set_xticks(range(len(values)), [str(v) for v in values])
        ax.set_xlabel(p)
        ax.set_ylabel("song-level accuracy")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "metric_vs_params.png", dpi=110)
    plt.close(fig)


def _plot_fold_spread(out: Path, per: dict[str, dict]) -> None:
    # 2. per-fold spread of test accuracy for each configuration
    keys = sorted(per)
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(keys)), 3.5))
    ax.boxplot([[f["test_acc"] for f in per[k].values()] for k in keys], showmeans=True)
    for i, k in enumerate(keys, start=1):
        ys = [f["test_acc"] for f in per[k].values()]
        ax.scatter(np.full(len(ys), i), ys, s=10, color="k", zorder=3)
    ax.set_xticks(range(1, len(keys) + 1), keys, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("test accuracy per fold")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "fold_spread.png", dpi=110)
    plt.close(fig)


def _plot_split_over_epochs(out: Path, histories: dict[str, dict]) -> None:
    # 3. clean fraction and noise AUC over epochs, mean over folds, per configuration
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for key, folds in sorted(histories.items()):
        for ax, metric in zip(axes, ("clean_fraction", "noise_auc"), strict=True):
            by_epoch: dict[int, list[float]] = {}
            for hist in folds.values():
                for h in hist:
                    if metric in h:
                        by_epoch.setdefault(h["epoch"] + 1, []).append(h[metric])
            if by_epoch:
                ep = sorted(by_epoch)
                ax.plot(ep, [np.mean(by_epoch[e]) for e in ep], marker="o", ms=3, label=key)
    for ax, title in zip(axes, ("GMM clean fraction", "noise-detection ROC-AUC"), strict=True):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "split_over_epochs.png", dpi=110)
    plt.close(fig)
