"""Cross-validation: run the folds of one configuration and write its report directory.

Folds run one after another here (each fold is itself data-parallel over the workers);
`tuning/` runs folds side by side as Ray Tune trials.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from sssl_dist.config import SSSLConfig, config_digest, save_config
from sssl_dist.data import ShardSet
from sssl_dist.export import export_model
from sssl_dist.train import FoldRun, mean_std, run_fold

log = logging.getLogger(__name__)

# The song-level numbers a report table shows, in this order.
HEADLINE = (
    "test_acc",
    "test_f1",
    "test_majority_acc",
    "test_vote_acc",
    "val_acc",
    "val_seg_acc_truth",
    "noise_auc",
)


def progress_printer(label: str, epochs: int):
    """One log line per epoch from rank 0's report (tailed by the driver)."""

    def show(m: dict[str, Any]) -> None:
        parts = [
            f"{label} epoch {m.get('epoch', 0) + 1}/{epochs}",
            f"L_mix {m.get('l_mix', float('nan')):.3f}",
        ]
        if "n_clean" in m:
            parts += [f"L_KL {m.get('l_kl', 0):.3f}", f"|X| {m['n_clean']} |U| {m['n_noisy']}"]
        if "noise_auc" in m:
            parts.append(f"noise AUC {m['noise_auc']:.3f}")
        if "val_seg_acc" in m:
            parts.append(f"val seg acc {m['val_seg_acc']:.3f}")
        parts.append(f"{m.get('time_epoch', 0):.1f} s")
        log.info(" | ".join(parts))

    return show


def run_cv(
    cfg: SSSLConfig,
    shard_dir: str | Path,
    out_dir: str | Path,
    *,
    folds: list[int] | None = None,
    workers: int = 2,
    use_gpu: bool = False,
    name: str | None = None,
) -> dict[str, Any]:
    """Train and evaluate `folds` (default: all) and write the report directory `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    folds = list(range(cfg.n_folds)) if folds is None else folds
    name = name or out.name
    runs: dict[int, FoldRun] = {}
    t0 = time.perf_counter()
    for i, fold in enumerate(folds):
        label = f"[{cfg.method} fold {fold} ({i + 1}/{len(folds)})]"
        log.info("%s training on %d worker(s)", label, max(workers, 1))
        runs[fold] = run_fold(
            cfg,
            shard_dir,
            fold,
            storage_path=out / "ray",
            # The config digest in the name: re-running resumes only a run of the same settings.
            name=f"{name}-fold{fold}-{config_digest(cfg)[:8]}",
            workers=workers,
            use_gpu=use_gpu,
            on_epoch=progress_printer(label, cfg.epochs),
        )
        r = runs[fold].result
        log.info(
            "%s done: test acc %.3f, F1 %.3f (majority class %.3f)",
            label,
            r.get("test_acc", float("nan")),
            r.get("test_f1", float("nan")),
            r.get("test_majority_acc", float("nan")),
        )
        fold_dir = out / f"fold-{fold}"
        fold_dir.mkdir(exist_ok=True)
        for f in ("result.json", "history.json", "songs.json", "split_ids.json"):
            shutil.copy(Path(runs[fold].checkpoint_dir, f), fold_dir / f)
        export_model(runs[fold].checkpoint_dir, shard_dir, fold_dir / "model.sssl")
        # Everything needed is now in fold_dir; the local checkpoint copy is not (Ray keeps
        # the checkpoint itself under storage_path).
        shutil.rmtree(runs[fold].checkpoint_dir, ignore_errors=True)
    summary = summarise(cfg, runs, time.perf_counter() - t0)
    best = max(runs, key=lambda f: runs[f].result.get("val_acc", -1))
    shutil.copy(out / f"fold-{best}" / "model.sssl", out / "model.sssl")
    summary["exported_model"] = {
        "path": "model.sssl",
        "fold": best,
        "why": "the fold with the best validation-song accuracy",
    }
    write_tables(out, summary, runs)
    from sssl_dist.report import write_run_plots

    write_run_plots(
        out, cfg, runs, {s["song_id"]: s.get("truth") for s in ShardSet(shard_dir).songs}
    )
    return summary


def summarise(cfg: SSSLConfig, runs: dict[int, FoldRun], seconds: float) -> dict[str, Any]:
    keys = sorted(
        {
            k
            for r in runs.values()
            for k, v in r.result.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
    )
    stats = {}
    for k in keys:
        mean, std = mean_std([r.result.get(k, float("nan")) for r in runs.values()])
        stats[k] = {"mean": mean, "std": std}
    return {
        "method": cfg.method,
        "task": cfg.task,
        "segment_seconds": cfg.segment_seconds,
        "folds": sorted(runs),
        "seconds": seconds,
        "metrics": stats,
        "per_fold": {f: r.result for f, r in runs.items()},
    }


def write_tables(out: Path, summary: dict[str, Any], runs: dict[int, FoldRun]) -> None:
    (out / "metrics.json").write_text(json.dumps(summary, indent=1, default=float))
    with (out / "metrics.csv").open("w", newline="") as fh:
        keys = sorted(
            {k for r in runs.values() for k in r.result if not isinstance(r.result[k], list | dict)}
        )
        writer = csv.DictWriter(fh, fieldnames=["fold", *keys])
        writer.writeheader()
        for fold, r in sorted(runs.items()):
            writer.writerow({"fold": fold, **{k: r.result.get(k) for k in keys}})
    with (out / "history.csv").open("w", newline="") as fh:
        rows = [dict(h, fold=f) for f, r in sorted(runs.items()) for h in r.history]
        keys = sorted({k for row in rows for k, v in row.items() if not isinstance(v, list | dict)})
        writer = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    m = summary["metrics"]
    lines = [
        f"# {summary['method']} · task {summary['task']} · L = {summary['segment_seconds']} s",
        "",
        f"Folds: {summary['folds']} · wall time {summary['seconds']:.0f} s",
        "",
        "| metric | mean | std |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {m[k]['mean']:.4f} | {m[k]['std']:.4f} |" for k in HEADLINE if k in m]
    lines += [
        "",
        "test_* are song-level on the test fold (SVM on Eq. 10 features); "
        "test_majority_acc always answers the training folds' most frequent class; "
        "test_vote_acc is the majority vote of segment decisions (Sarkar et al.).",
        "",
        "Plots: " + ", ".join(sorted(p.name for p in out.glob("*.png"))),
    ]
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def comparison_table(summaries: dict[str, dict[str, Any]]) -> str:
    """A Table-3-style markdown table: one row per method, mean ± std over folds."""
    cols = [
        ("test_acc", "Acc"),
        ("test_f1", "F1"),
        ("test_vote_acc", "Vote acc"),
        ("val_seg_acc_truth", "Seg acc (truth)"),
        ("noise_auc", "Noise AUC"),
    ]
    head = "| method | " + " | ".join(c for _, c in cols) + " |"
    lines = [head, "|---" * (len(cols) + 1) + "|"]
    baseline = None
    for method, s in summaries.items():
        m = s["metrics"]
        cells = [pct_mean_std(m, k) for k, _ in cols]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
        baseline = baseline or m.get("test_majority_acc")
    if baseline:
        lines.append(
            f"| majority class | {pct_mean_std({'b': baseline}, 'b')}"
            + " | — " * (len(cols) - 1)
            + "|"
        )
    return "\n".join(lines)


def pct_mean_std(metrics: dict[str, Any], key: str) -> str:
    """'61.0 ± 8.9' (in %) for metrics[key] = {mean, std}; '—' when the metric is absent."""
    if key not in metrics:
        return "—"
    return f"{100 * metrics[key]['mean']:.1f} ± {100 * metrics[key]['std']:.1f}"


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
