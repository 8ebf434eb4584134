"""Plots for run reports and predictions (matplotlib, headless Agg backend).

- gmm_losses.png: per-epoch histograms of the normalised losses each GMM saw, the two fitted
  components and where the clean posterior crosses τ;
- split_over_epochs.png: clean fraction and, with ground truth, noise-detection AUC,
  precision and recall of U per epoch;
- confusion.png: song-level test confusion matrix pooled over folds;
- curves.png: segment emotion probabilities over time for a few test songs, with the true
  per-second quadrant shaded where known (the paper's Fig. 2).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sssl_dist.config import SSSLConfig  # noqa: E402
from sssl_dist.method.tasks import task_of  # noqa: E402

COLOURS = ("tab:orange", "tab:red", "tab:blue", "tab:green")  # Q1 happy ... Q4 calm


def _gauss(x: np.ndarray, mean: float, var: float) -> np.ndarray:
    return np.exp(-0.5 * (x - mean) ** 2 / var) / math.sqrt(2 * math.pi * var)


def _draw_gmm_fit(ax, fit: dict[str, Any], tau: float) -> None:
    """One fit's loss histogram, its two weighted components and where w crosses τ."""
    x = np.linspace(0, 1, 200)
    hist = np.asarray(fit.get("hist", []), dtype=float)
    if hist.size:
        width = 1 / hist.size
        density = hist / max(hist.sum() * width, 1e-12)
        ax.bar(
            np.arange(hist.size) * width, density, width=width, align="edge", color="0.8",
            label="losses",
        )  # fmt: skip
    if fit.get("degenerate"):
        ax.text(0.5, 0.5, fit["degenerate"], ha="center", transform=ax.transAxes, fontsize=8)
        return
    (m0, m1), (v0, v1), (w0, w1) = fit["means"], fit["variances"], fit["weights"]
    p0, p1 = w0 * _gauss(x, m0, v0), w1 * _gauss(x, m1, v1)
    ax.plot(x, p0, color="tab:blue", label="clean")
    ax.plot(x, p1, color="tab:red", label="noisy")
    post = p0 / np.maximum(p0 + p1, 1e-300)
    cross = np.nonzero((post[:-1] > tau) & (post[1:] <= tau))[0]
    if cross.size:
        ax.axvline(x[cross[0]], color="k", ls="--", lw=1, label=f"w = τ ({tau})")


def plot_gmm_epochs(
    history: list[dict[str, Any]],
    tau: float,
    path: Path,
    max_epochs: int = 4,
    label_names: tuple[str, ...] = (),
) -> bool:
    epochs = [h for h in history if h.get("gmm")]
    if not epochs:
        return False
    pick = sorted(
        {
            epochs[int(i)]["epoch"]
            for i in np.linspace(0, len(epochs) - 1, min(max_epochs, len(epochs)))
        }
    )
    rows = [h for h in epochs if h["epoch"] in pick]
    names = list(rows[0]["gmm"])
    fig, axes = plt.subplots(
        len(rows), len(names), figsize=(3.2 * len(names), 2.4 * len(rows)), squeeze=False
    )
    for r, h in enumerate(rows):
        for c, name in enumerate(names):
            ax = axes[r][c]
            _draw_gmm_fit(ax, h["gmm"][name], tau)
            shown = name
            if name.startswith("class ") and label_names:  # "class 2" -> "Q3"
                shown = label_names[int(name.split()[1])]
            ax.set_title(f"epoch {h['epoch'] + 1} · {shown}", fontsize=9)
            ax.set_xlabel("normalised loss", fontsize=8)
            ax.tick_params(labelsize=7)
            if r == 0 and c == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_split_over_epochs(histories: dict[int, list[dict[str, Any]]], path: Path) -> bool:
    keys = [
        ("clean_fraction", "clean fraction |X|/N"),
        ("noise_auc", "noise-detection ROC-AUC"),
        ("noise_precision", "precision of U"),
        ("noise_recall", "recall of U"),
    ]
    present = [(k, t) for k, t in keys if any(k in h for hist in histories.values() for h in hist)]
    if not present:
        return False
    fig, axes = plt.subplots(1, len(present), figsize=(3.4 * len(present), 2.8), squeeze=False)
    for ax, (key, title) in zip(axes[0], present, strict=True):
        for fold, hist in sorted(histories.items()):
            pts = [(h["epoch"] + 1, h[key]) for h in hist if key in h]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", ms=3, label=f"fold {fold}")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_confusion(
    true: list[int], pred: list[int], names: tuple[str, ...], path: Path, title: str
) -> None:
    k = len(names)
    cm = np.zeros((k, k), dtype=int)
    for t, p in zip(true, pred, strict=True):
        cm[t, p] += 1
    fig, ax = plt.subplots(figsize=(1.1 * k + 2, 1.1 * k + 1.5))
    ax.imshow(cm, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                cm[i, j],
                ha="center",
                va="center",
                color="white" if cm[i, j] > cm.max() / 2 else "black",
            )
    ax.set_xticks(range(k), names)
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _curve_axes(
    ax,
    probs: np.ndarray,
    starts: np.ndarray,
    length: int,
    names,
    truth=None,
    scale: tuple[float, float] = (0, 1),
    ylabel: str = "P(emotion)",
) -> None:
    centres = starts + length / 2
    for k, name in enumerate(names):
        ax.plot(
            centres,
            probs[:, k],
            color=COLOURS[k % len(COLOURS)] if len(names) == 4 else None,
            label=name,
            lw=1.5,
        )
    if truth:
        for s, q in enumerate(truth):
            if q is not None:  # an unrated second (dynamic annotations start at 15 s)
                ax.axvspan(s, s + 1, ymin=0, ymax=0.05, color=COLOURS[q], lw=0)
    ax.set_ylim(*scale)
    ax.set_xlabel("time (s)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def plot_emotion_curve(result: dict[str, Any], path: Path) -> None:
    """`sssl predict` output: one song's segment probabilities over time (paper Fig. 2)."""
    names = result["labels"]
    probs = np.array([[s[n] for n in names] for s in result["segments"]])
    starts = np.array([s["start_s"] for s in result["segments"]])
    fig, ax = plt.subplots(figsize=(8, 3))
    if "scale" in result:  # a regression model's ratings, on its data set's scale
        low, high = result["scale"]
        axes = {"scale": (low, high), "ylabel": f"rating ({low:g}-{high:g})"}
    else:
        axes = {}
    _curve_axes(ax, probs, starts, result["segment_seconds"], names, **axes)
    p = result["probability"]
    said = f"{result['decision']}" + ("" if p is None else f" (p = {p:.2f})")
    ax.set_title(f"{Path(result['file']).name}: {said}", fontsize=10)
    ax.legend(fontsize=8, loc="upper right", ncol=len(names))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _rating_curves(out: Path, cfg: SSSLConfig, run, names: tuple[str, ...]) -> None:
    """curves.png of a regression run: the segment ratings of up to 4 test songs over time, on
    the common scale [-1, 1], with each song's rating on its data set's scale in the title."""
    test_ids = run.fold_ids["test"][:4]
    if not test_ids:
        return
    fig, axes = plt.subplots(len(test_ids), 1, figsize=(8, 2.3 * len(test_ids)), squeeze=False)
    low, high = run.result["scale"]
    for ax, sid in zip(axes[:, 0], test_ids, strict=True):
        values = np.asarray(run.songs[sid])
        starts = np.arange(len(values)) * cfg.hop_seconds
        axes_kw = {"scale": (-1, 1), "ylabel": "rating (-1..1)"}
        _curve_axes(ax, values, starts, cfg.segment_seconds, names, **axes_kw)
        true, pred = run.result["test_true"].get(sid), run.result["test_pred"].get(sid)
        said = lambda v: ", ".join(f"{x:.2f}" for x in v) if v else "?"  # noqa: E731
        ax.set_title(
            f"{sid}: rated {said(true)}, predicted {said(pred)} (scale {low:g}-{high:g})",
            fontsize=9,
        )
    axes[0, 0].legend(fontsize=8, loc="upper right", ncol=len(names))
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)


def write_run_plots(
    out: Path, cfg: SSSLConfig, runs: dict, truth: dict[str, list[int]] | None = None
) -> None:
    """All plots of one cross-validation run into its report directory."""
    out = Path(out)
    histories = {f: r.history for f, r in runs.items()}
    first = min(runs)
    # A regression run's songs have ratings, not classes: its GMMs are per sign pattern, and
    # it has no confusion matrix; its curves are ratings on the common scale.
    values = "scale" in runs[first].result
    names = task_of(cfg).output_names
    plot_gmm_epochs(
        runs[first].history, cfg.tau, out / "gmm_losses.png", label_names=() if values else names
    )
    plot_split_over_epochs(histories, out / "split_over_epochs.png")
    if values:
        _rating_curves(out, cfg, runs[first], names)
        return
    true, pred = [], []
    for r in runs.values():
        for sid, p in r.result.get("test_pred", {}).items():
            true.append(r.result["test_true"][sid])
            pred.append(p)
    if true:
        plot_confusion(
            true,
            pred,
            task_of(cfg).output_names,
            out / "confusion.png",
            f"{cfg.method} · {cfg.task} · test songs of {len(runs)} fold(s)",
        )
    test_ids = runs[first].fold_ids["test"][:4]
    songs = runs[first].songs
    if test_ids:
        fig, axes = plt.subplots(len(test_ids), 1, figsize=(8, 2.3 * len(test_ids)), squeeze=False)
        names = task_of(cfg).output_names
        for ax, sid in zip(axes[:, 0], test_ids, strict=True):
            probs = np.asarray(songs[sid])
            starts = np.arange(len(probs)) * cfg.hop_seconds
            _curve_axes(
                ax,
                probs,
                starts,
                cfg.segment_seconds,
                names,
                (truth or {}).get(sid) if cfg.task == "quadrant" else None,
            )
            label = runs[first].result.get("test_true", {}).get(sid)
            guess = runs[first].result.get("test_pred", {}).get(sid)
            ax.set_title(
                f"{sid}: clip label {names[label] if label is not None else '?'}"
                f", predicted {names[guess] if guess is not None else '?'}"
                + (" (bar at the bottom: true quadrant per second)" if truth else ""),
                fontsize=9,
            )
        axes[0, 0].legend(fontsize=8, loc="upper right", ncol=len(names))
        fig.tight_layout()
        fig.savefig(out / "curves.png", dpi=110)
        plt.close(fig)


def plot_forest(comparison: dict[str, Any], path: Path) -> None:
    """`sssl compare`'s forest plot: one row per task, pair and metric, the mean gain with its
    corrected 95 % CI, the ROPE band, and every fold's difference as a dot (in points)."""
    rope = 100 * comparison["design"]["rope"]
    rows = [
        (f"{task}: {p['b']} − {p['a']}\n{key}", m)
        for task, t in comparison["tasks"].items()
        for p in t["pairs"]
        for key, m in p["metrics"].items()
        if m["stats"] is not None
    ]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(8, 0.7 * len(rows) + 1.2))
    ax.axvspan(-rope, rope, color="0.88", label=f"ROPE ±{rope:.1f}")
    ax.axvline(0, color="0.4", linewidth=0.8)
    for i, (_, m) in enumerate(rows):
        s = m["stats"]
        # A CI past any possible gain (too few folds) is drawn to the edge of the possible.
        edge = 100 * s.get("span", 1.0)
        lo, hi = (float(np.clip(100 * c, -edge, edge)) for c in s["ci"])
        diffs = 100 * (np.asarray(m["b"]) - np.asarray(m["a"]))
        jitter = np.linspace(-0.15, 0.15, diffs.size) if diffs.size > 1 else np.zeros(1)
        ax.plot(diffs, i + jitter, "o", color="tab:blue", alpha=0.45, markersize=4)
        ax.plot([lo, hi], [i, i], color="black", linewidth=2)
        ax.plot(100 * s["mean"], i, "D", color="black", markersize=6)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("gain of the second arm, points (dots: folds; bar: 95 % CI, corrected t)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
