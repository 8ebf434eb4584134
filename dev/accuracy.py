"""Accuracy on the ground-truth corpus: does SSSL beat inherited labels, and does the GMM find
the wrong labels? Every cell is a full cross-validation through the real system (Ray Train,
Eq. 10 + SVM), on identical folds for every method, so differences are paired.

For each mislabelled share (corpus excursion fraction) x task x segment length x GMM scope:
song-level accuracy/F1 of inherit, sssl-nokl, sssl (mean ± std over folds), majority-class and
majority-vote baselines, validation segment accuracy against the true per-second labels, the
measured share of wrong inherited labels, the smallest class share of X (collapse), the GMM's
noise-detection ROC-AUC / precision / recall of U per epoch, and paired differences over folds
(sssl - inherit, global - per-class split) with their t statistics and win counts.

Results go to OUT/results.json (resumable: finished cells are skipped; self-contained, so a copy
of it in a new OUT continues the grid there), OUT/summary.md, OUT/accuracy_vs_noise.png and
OUT/noise_detection.png. `--summary-only` rebuilds the last three. The committed figures are in
benchmarks/results/.

    python dev/accuracy.py --songs 300 --folds 10 --tasks quadrant valence arousal \\
        --lengths 1 3 5 --noise 0.1 0.25 0.4 --gmm-scopes per_class global     # > 1 day on 2 cores
    python dev/accuracy.py --songs 200 --folds 5 --epochs 8          # ~40 min
    # one more cell beside committed ones: the step with DivideMix's refined X targets, or any
    # other config override (part of the cell's key)
    python dev/accuracy.py --methods sssl --clean-targets refined --eval-epochs best_val
    python dev/accuracy.py --methods sssl --set mixup_alpha=0 --eval-epochs best_val
    # the split scored by the best validation epoch's copy instead of the current network
    python dev/accuracy.py --methods sssl --split-networks best_val --eval-epochs best_val
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TQDM_DISABLE", "1")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--songs", type=int, default=200)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--tasks", nargs="+", default=["quadrant"])
    p.add_argument("--lengths", nargs="+", type=int, default=[3])
    p.add_argument("--methods", nargs="+", default=["inherit", "sssl-nokl", "sssl"])
    p.add_argument(
        "--gmm-scopes", nargs="+", default=["per_class"], choices=["per_class", "global"]
    )
    p.add_argument(
        "--selections", nargs="+", default=["epoch_loss"], choices=["epoch_loss", "mean_loss"]
    )
    p.add_argument(
        "--split-networks",
        nargs="+",
        default=["current"],
        choices=["current", "best_val"],
        help="the network whose losses the GMM splits: the current one (the paper) or the best "
        "validation epoch's copy",
    )
    p.add_argument(
        "--clean-targets",
        nargs="+",
        default=["inherited"],
        choices=["inherited", "refined"],
        help="what X trains on: its inherited labels (the paper) or DivideMix's refined ones",
    )
    p.add_argument(
        "--eval-epochs",
        nargs="+",
        default=["last"],
        choices=["last", "best_val"],
        help="which epoch is evaluated; best_val cells also report the last epoch (paired)",
    )
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="further SSSLConfig overrides for every trained cell, e.g. mixup_alpha=0 "
        "(part of the cell's key; inherit cells too unless the override is SSSL-only)",
    )
    p.add_argument("--noise", nargs="+", type=float, default=[0.30])
    p.add_argument("--workers", type=int, default=2, help="Ray Train workers per fold (0: local)")
    p.add_argument("--parallel", type=int, default=1, help="folds side by side (`sssl train`)")
    p.add_argument("--out", default="runs/bench-accuracy")
    p.add_argument(
        "--summary-only",
        action="store_true",
        help="rebuild summary.md and the plots from results.json without training",
    )
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("ray").setLevel(logging.WARNING)

    out = Path(a.out)
    if a.summary_only:
        write_summary(out, json.loads((out / "results.json").read_text()))
        return
    import ray

    from shards.synth import SynthConfig
    from shards.write import shard_synthetic
    from sssl_dist.config import SSSLConfig, parse_overrides, with_overrides
    from sssl_dist.driver.cv import run_methods
    from sssl_dist.driver.run import run_digest

    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    t0 = time.perf_counter()
    for noise in a.noise:
        data = out / f"data-noise{noise}"
        shards = shard_synthetic(
            data / "corpus",
            data / "shards",
            SynthConfig(n_songs=a.songs, excursion_fraction=noise),
            progress=False,
        )
        grid = itertools.product(
            a.tasks,
            a.lengths,
            a.gmm_scopes,
            a.selections,
            a.split_networks,
            a.clean_targets,
            a.eval_epochs,
        )
        for task, length, scope, selection, scorer, targets, evaluated in grid:
            fields = {
                "songs": a.songs,
                "folds": a.folds,
                "epochs": a.epochs,
                "warmup": a.warmup,
                "noise": noise,
                "task": task,
                "L": length,
                "gmm_scope": scope,
                "selection": selection,
                "split_network": scorer,
                "targets": targets,
                "set": _set_field(a.set),
                "eval": evaluated,
            }
            # inherit never splits: run it once per cell, keyed as the paper's per-class split
            # of this epoch's loss; finished cells are kept (resumable).
            first = (scope, selection, scorer, targets) == (
                a.gmm_scopes[0],
                a.selections[0],
                a.split_networks[0],
                a.clean_targets[0],
            )
            todo = [
                m
                for m in a.methods
                if (m != "inherit" or first) and _key(_cell_fields(fields, m)) not in results
            ]
            base = SSSLConfig(
                task=task,
                segment_seconds=length,
                gmm_scope=scope,
                selection=selection,
                split_network=scorer,
                clean_targets=targets,
                eval_epoch=evaluated,
                n_folds=a.folds,
                epochs=a.epochs,
                warmup_epochs=a.warmup,
            )
            base = with_overrides(base, parse_overrides(a.set))
            cell_dir = lambda m, f=fields: _cell_dir(out, _cell_fields(f, m))  # noqa: E731
            for method, s, minutes in run_methods(
                base, shards, cell_dir, todo, workers=a.workers, parallel=a.parallel
            ):
                key = _key(_cell_fields(fields, method))
                cfg = with_overrides(base, {"method": method})
                results[key] = {
                    "metrics": s["metrics"],
                    "per_fold": s["per_fold"],
                    "minutes": minutes,
                    "workers": a.workers,
                    "parallel": a.parallel,
                    # The run identity: which config and which shard set produced this cell.
                    "identity": run_digest(cfg, shards),
                }
                results_path.write_text(json.dumps(results, default=float))
                logging.info(
                    "%s: test acc %.3f (%.0f min so far)",
                    key,
                    s["metrics"]["test_acc"]["mean"],
                    (time.perf_counter() - t0) / 60,
                )
    write_summary(out, results)


# What the GMM split achieved, per SSSL epoch (in history.json of every fold).
EPOCH_KEYS = ("clean_fraction", "noise_auc", "noise_precision", "noise_recall")


def write_summary(out: Path, results: dict) -> None:
    """summary.md and two plots from results.json and the cells' fold histories (no training).

    What only the histories and shards hold is stored back into results.json ("derived"), so
    that file alone carries the whole table: it can be committed, copied and resumed.
    """
    cells = {key: _cell(out, key, r) for key, r in results.items()}
    for key, c in cells.items():
        results[key]["derived"] = {k: c[k] for k in ("wrong", "min_x_share", "by_epoch")}
    (out / "results.json").write_text(json.dumps(results, default=float))
    runs = sorted({tuple(c["fields"][k] for k in RUN_FIELDS) for c in cells.values()})
    setting = "; ".join(
        f"{songs} songs, {folds}-fold CV, {epochs} epochs ({warmup} warm-up)"
        for songs, folds, epochs, warmup in runs
    )
    lines = [
        f"# Accuracy benchmark: {setting}",
        "",
        "wrong = share of all segments whose inherited label differs from the true label "
        "(majority of its seconds), for that task and L. min X share = the smallest class's "
        "share of X, lowest over SSSL epochs and folds (collapse shows here).",
        "",
        "| noise | wrong | task | L | GMM scope | selection | split network | X targets | set "
        "| eval | method | test acc | test F1 | vote acc | majority | seg acc (truth) | noise AUC "
        "| prec U | recall U | min X share | min |",
        "|---" * 21 + "|",
    ]
    for c in cells.values():
        f, m = c["fields"], c["metrics"]
        lines.append(
            f"| {f['noise']} | {_pct(c['wrong'])} | {f['task']} | {f['L']} | {f['gmm_scope']} | "
            f"{f['selection']} | {f['split_network']} | {f['targets']} | {f['set']} | "
            f"{f['eval']} | {f['method']} | {_ms(m, 'test_acc')} | "
            f"{_ms(m, 'test_f1')} | "
            f"{_ms(m, 'test_vote_acc')} | {_ms(m, 'test_majority_acc')} | "
            f"{_ms(m, 'val_seg_acc_truth')} | {_ms(m, 'noise_auc')} | "
            f"{_ms(m, 'noise_precision')} | {_ms(m, 'noise_recall')} | "
            f"{_num(c['min_x_share'])} | {_num(c['minutes'], 0)} |"
        )
    lines += _side_by_side(cells, results)
    lines += _best_against_last(cells, results)
    lines += [
        "",
        "## Paired over identical folds",
        "",
        "Points of test accuracy, b - a per fold; t = mean / (std / sqrt(k)). |t| > 2.8 is "
        "p < 0.05 (two-sided) for 5 folds, > 2.3 for 10.",
        "",
    ]
    for key, c in cells.items():
        f = c["fields"]
        comparisons = []
        if f["method"] != "inherit":
            comparisons.append(("inherit", _key(_cell_fields(f, "inherit"))))
        if f["gmm_scope"] == "global":
            comparisons.append(("per-class", _key(f, gmm_scope="per_class")))
        if f["selection"] == "mean_loss":
            comparisons.append(("epoch_loss", _key(f, selection="epoch_loss")))
        if f["split_network"] == "best_val":
            comparisons.append(("current split network", _key(f, split_network="current")))
        if f["targets"] == "refined":
            comparisons.append(("inherited X targets", _key(f, targets="inherited")))
        if f["set"] != "-" and f["method"] != "inherit":
            comparisons.append(("no overrides", _key(f, set="-")))
        for name, base in comparisons:
            if base not in results:
                continue
            d = _paired(results, base, key)
            lines.append(
                f"- noise {f['noise']} {f['task']} L={f['L']}: {f['method']} "
                f"({f['gmm_scope']}, {f['selection']}, split network {f['split_network']}, "
                f"X {f['targets']}, set {f['set']}, eval {f['eval']}) "
                f"- {name}: {100 * d['mean']:+.1f} (std {100 * d['std']:.1f}, t = {d['t']:.2f}, "
                f"{_wins(d)})"
            )
    lines += [
        "",
        "## Noise detection by epoch (1-based, as in the progress lines; mean over folds)",
        "",
        "| noise | task | L | GMM scope | selection | method | epoch | clean fraction | noise AUC "
        "| prec U | recall U |",
        "|---" * 11 + "|",
    ]
    for c in cells.values():
        f = c["fields"]
        cell = " | ".join(f[k] for k in ("noise", "task", "L", "gmm_scope", "selection", "method"))
        cell += f" (split network {f['split_network']})" if f["split_network"] != "current" else ""
        cell += f" (X {f['targets']})" if f["targets"] != "inherited" else ""
        cell += f" ({f['set']})" if f["set"] != "-" else ""
        cell += f" (eval {f['eval']})" if f["eval"] != "last" else ""
        for e, row in sorted(c["by_epoch"].items()):
            values = " | ".join(_num(row[k]) for k in EPOCH_KEYS)
            lines.append(f"| {cell} | {e + 1} | {values} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    _plots(out, cells)


# Song- and segment-level figures compared at the best validation epoch and the last one.
BEST_VS_LAST = (
    ("test_acc", "test acc"),
    ("val_seg_acc_truth", "seg acc (truth)"),
    ("test_brier", "Brier"),
    ("test_ece", "ECE"),
    ("test_feature_shift", "feature shift"),
)


def _best_against_last(cells: dict, results: dict) -> list[str]:
    """eval=best_val cells: each figure at the evaluated (best validation) epoch against the last
    epoch of the same run, paired over folds (the run reports both)."""
    rows = [k for k, c in cells.items() if c["fields"].get("eval") == "best_val"]
    if not rows:
        return []
    lines = [
        "",
        "## Evaluated epoch: best on validation songs against the last (same runs, paired)",
        "",
        "Each cell: last → best (best - last; t over folds). Brier, ECE: lower is better; feature "
        "shift: train-to-test distance of the SVM's Eq. 10 features (lower: fewer surprises).",
        "",
        "| noise | task | L | selection | split network | X targets | set | method "
        "| evaluated epoch (1-based) | " + " | ".join(name for _, name in BEST_VS_LAST) + " |",
        "|---" * (9 + len(BEST_VS_LAST)) + "|",
    ]
    from sssl_dist.outputs.stats import paired_difference

    for key in rows:
        f, per_fold = cells[key]["fields"], _folds(results[key])["per_fold"]
        chosen = np.mean([r["evaluated_epoch"] for r in per_fold.values()]) + 1
        cells_txt = []
        for metric, _ in BEST_VS_LAST:
            if not all(f"last_epoch_{metric}" in r and metric in r for r in per_fold.values()):
                cells_txt.append("—")
                continue
            best = {"per_fold": {i: {"v": r[metric]} for i, r in per_fold.items()}}
            last = {"per_fold": {i: {"v": r[f"last_epoch_{metric}"]} for i, r in per_fold.items()}}
            d = paired_difference(last, best, "v")
            scale = 100 if metric.endswith(("acc", "acc_truth")) else 1  # accuracies in %
            lv = scale * np.mean([r["v"] for r in last["per_fold"].values()])
            bv = scale * np.mean([r["v"] for r in best["per_fold"].values()])
            digits = 1 if scale == 100 else 3
            cells_txt.append(
                f"{lv:.{digits}f} → {bv:.{digits}f} ({scale * d['mean']:+.{digits}f}; "
                f"t {d['t']:.2f})"
            )
        lines.append(
            f"| {f['noise']} | {f['task']} | {f['L']} | {f['selection']} | {f['split_network']} | "
            f"{f['targets']} | {f['set']} | {f['method']} | {chosen:.1f} | "
            + " | ".join(cells_txt)
            + " |"
        )
    return lines


def _side_by_side(cells: dict, results: dict) -> list[str]:
    """inherit against sssl (per-class split) in one row per (noise, task, L)."""
    lines = [
        "",
        "## inherit against sssl (per-class split), one row per cell",
        "",
        "| wrong | task | L | eval | test acc inherit | test acc sssl | sssl - inherit (paired) "
        "| vote acc inherit | vote acc sssl | seg acc (truth) inherit → sssl | noise AUC "
        "| prec U | recall U | majority |",
        "|---" * 14 + "|",
    ]
    by_cell = lambda kv: (kv[1]["fields"]["task"], int(kv[1]["fields"]["L"]), kv[1]["wrong"])  # noqa: E731
    for key, c in sorted(cells.items(), key=by_cell):
        f = c["fields"]
        base = _key(_cell_fields(f, "inherit"))
        paper_like = (
            f["gmm_scope"] == "per_class"
            and f["selection"] == "epoch_loss"
            and f["split_network"] == "current"
            and f["targets"] == "inherited"
            and f["set"] == "-"
        )
        if f["method"] != "sssl" or not paper_like or base not in results:
            continue
        a, b = cells[base]["metrics"], c["metrics"]
        d = _paired(results, base, key)
        lines.append(
            f"| {_pct(c['wrong'])} | {f['task']} | {f['L']} | {f['eval']} | {_ms(a, 'test_acc')} | "
            f"{_ms(b, 'test_acc')} | {100 * d['mean']:+.1f} (t = {d['t']:.2f}; "
            f"{_wins(d)}) | {_ms(a, 'test_vote_acc')} | "
            f"{_ms(b, 'test_vote_acc')} | {100 * a['val_seg_acc_truth']['mean']:.1f} → "
            f"{100 * b['val_seg_acc_truth']['mean']:.1f} | {_ms(b, 'noise_auc')} | "
            f"{_ms(b, 'noise_precision')} | {_ms(b, 'noise_recall')} | "
            f"{_ms(a, 'test_majority_acc')} |"
        )
    return lines


def _cell(out: Path, key: str, r: dict) -> dict:
    """One cell's metrics plus what only its fold histories and its shards hold."""
    from sssl_dist.data.segments import SegmentTable, ShardSet

    f = dict(kv.split("=") for kv in key.split())
    base = {"fields": f, "metrics": r["metrics"], "minutes": r.get("minutes")}
    if "derived" in r:  # JSON made the epoch keys strings
        d = r["derived"]
        return {**base, **d, "by_epoch": {int(e): row for e, row in d["by_epoch"].items()}}
    cell_dir = _cell_dir(out, f)
    histories = [json.loads(p.read_text()) for p in sorted(cell_dir.glob("fold-*/history.json"))]
    by_epoch: dict[int, dict[str, list[float]]] = {}
    min_x_share = None
    for h in histories:
        for e in h:
            if "noise_auc" not in e:
                continue  # warm-up epochs and inherit: no split
            row = by_epoch.setdefault(e["epoch"], {})
            for k in EPOCH_KEYS:
                row.setdefault(k, []).append(e[k])
            counts = e.get("class_counts_in_x")
            if counts and sum(counts):
                share = min(counts) / sum(counts)
                min_x_share = share if min_x_share is None else min(min_x_share, share)
    songs = ShardSet(out / f"data-noise{f['noise']}" / "shards").songs
    table = SegmentTable.build(songs, f["task"], int(f["L"]))
    return {
        **base,
        "wrong": float(np.mean(table.wrong == 1)),
        "min_x_share": min_x_share,
        "by_epoch": {
            e: {k: float(np.mean(v)) for k, v in row.items()} for e, row in by_epoch.items()
        },
    }


def _plots(out: Path, cells: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    _plot_accuracy_vs_noise(out, cells)
    _plot_noise_detection(out, cells)


def _plot_accuracy_vs_noise(out: Path, cells: dict) -> None:
    """accuracy_vs_noise.png: where does SSSL stop helping?"""
    import matplotlib.pyplot as plt

    series = _series(cells)
    if not series:
        return  # one noise level so far: nothing to draw against the wrong-label share
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i, ((_task, _length, scope, selection, method), pts) in enumerate(sorted(series.items())):
        pts.sort(key=lambda p: p[0])  # by wrong-label share
        x = [100 * p[0] + 0.3 * i for p in pts]  # a small shift so error bars do not overlap
        for ax, k in zip(axes, ("test_acc", "val_seg_acc_truth"), strict=True):
            ax.errorbar(
                x,
                [100 * p[1][k]["mean"] for p in pts],
                yerr=[100 * p[1][k]["std"] for p in pts],
                marker="o",
                capsize=3,
                label=f"{method} ({scope}, {selection})" if method != "inherit" else "inherit",
            )
    for ax, title in zip(
        axes, ("song-level test accuracy", "segment accuracy vs truth"), strict=True
    ):
        ax.set(xlabel="segments with a wrong inherited label (%)", ylabel="%", title=title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("quadrant, L = 3 s: mean ± std over folds")
    for ax in axes:
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_noise.png", dpi=110)
    plt.close(fig)


def _plot_noise_detection(out: Path, cells: dict) -> None:
    """noise_detection.png: the GMM split against the truly wrong labels, per epoch."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4), sharex=True)
    for c in cells.values():
        f = c["fields"]
        if not c["by_epoch"] or f["method"] != "sssl":
            continue  # sssl-nokl's split is close to sssl's: one line per cell stays readable
        epochs = sorted(c["by_epoch"])
        label = f"{f['task']} L={f['L']} s, {100 * c['wrong']:.0f} % wrong, {f['gmm_scope']}"
        for ax, k in zip(axes, ("noise_auc", "noise_precision", "noise_recall"), strict=True):
            ax.plot(
                [e + 1 for e in epochs],
                [c["by_epoch"][e][k] for e in epochs],
                "o-",
                ms=3,
                label=label,
            )
    for ax, title in zip(
        axes, ("ROC-AUC of the split", "precision of U", "recall of U"), strict=True
    ):
        ax.set(xlabel="epoch (1-based)", title=title)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "noise_detection.png", dpi=110)
    plt.close(fig)


def _series(cells: dict) -> dict:
    """(task, L, scope, selection, method) -> [(wrong share, metrics)], quadrant L=3."""
    series: dict = {}
    for c in cells.values():
        f = c["fields"]
        if f["task"] == "quadrant" and f["L"] == "3":
            key = (f["task"], f["L"], f["gmm_scope"], f["selection"], f["method"])
            series.setdefault(key, []).append((c["wrong"], c["metrics"]))
    return {k: v for k, v in series.items() if len(v) > 1}


# A cell's identity: everything its numbers depend on (the worker count does not: the global
# batch makes results independent of it). Keys and headers come from these fields, never from
# the command-line arguments of the current call (--summary-only once relabelled cells).
KEY_FIELDS = ("songs", "folds", "epochs", "warmup", "noise", "task", "L", "gmm_scope")
KEY_FIELDS += ("selection", "split_network", "targets", "set", "eval", "method")
# Config keys that change only the SSSL step: an inherit cell under them is the plain inherit cell.
SSSL_ONLY = {"tau", "temperature", "lambda_kl", "mixup_alpha", "gmm_site", "split_network"}
RUN_FIELDS = ("songs", "folds", "epochs", "warmup")


def _set_field(overrides: list[str]) -> str:
    """--set KEY=VALUE ... as one key field ("-" for none): no spaces or "=" inside."""
    return ",".join(o.replace("=", ":") for o in sorted(overrides)) or "-"


def _key(fields: dict, **change: str) -> str:
    f = {**fields, **change}
    return " ".join(f"{k}={f[k]}" for k in KEY_FIELDS)


def _cell_fields(fields: dict, method: str) -> dict:
    """A method's cell: inherit never splits, so it is keyed as per-class/epoch_loss always."""
    if method == "inherit":
        return {
            **fields,
            "method": method,
            "gmm_scope": "per_class",
            "selection": "epoch_loss",
            "split_network": "current",
            "targets": "inherited",
            "set": _inherit_set(fields["set"]),
        }
    return {**fields, "method": method}


def _inherit_set(field: str) -> str:
    """The overrides that change an inherit cell: the SSSL-only ones do not."""
    kept = [o for o in field.split(",") if o != "-" and o.split(":")[0] not in SSSL_ONLY]
    return ",".join(kept) or "-"


def _dir_name(fields: dict) -> str:
    return _key(fields).replace(" ", "_").replace("=", "-")


def _cell_dir(out: Path, fields: dict) -> Path:
    return out / _dir_name(fields)


def _paired(results: dict, base: str, key: str) -> dict:
    """Test accuracy of cell `key` minus cell `base`, fold by fold (JSON made fold ids strings)."""
    from sssl_dist.outputs.stats import paired_difference

    return paired_difference(_folds(results[base]), _folds(results[key]))


def _wins(d: dict) -> str:
    return f"better on {d['better']}/{d['folds']} folds, worse on {d['worse']}"


def _ms(m: dict, k: str) -> str:
    from sssl_dist.outputs.stats import pct_mean_std

    return pct_mean_std(m, k)


def _pct(v: float) -> str:
    return f"{100 * v:.1f} %"


def _num(v: float | None, digits: int = 3) -> str:
    return "—" if v is None or v != v else f"{v:.{digits}f}"


def _folds(r: dict) -> dict:
    return {"per_fold": {int(k): v for k, v in r["per_fold"].items()}}


if __name__ == "__main__":
    main()
