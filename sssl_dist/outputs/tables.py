"""Every markdown table the commands write, in one place so they print alike: the paper's
Table 3 layout (arms x tasks) and the verdicts of `sssl compare` (comparison.md), and a
cross-validation report's summary.md."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sssl_dist.config import SSSLConfig, to_dict
from sssl_dist.outputs.stats import (
    SONGS_BEYOND,
    PairedComparison,
    compare_paired,
    mean_std,
    paired_difference,
    pct,
    pct_mean_std,
    signed_points,
)

if TYPE_CHECKING:  # fit.py imports Ray and torch; a table needs only the results
    from sssl_dist.outputs.foldrun import FoldRun

METRIC_NAMES = {
    "test_acc": "song accuracy",
    "val_seg_acc_truth": "segment accuracy against the truth",
    "noise_auc": "noise AUC",
}


def comparison_table(summaries: dict[str, dict[str, Any]]) -> str:
    """One task's arms, one row each: mean ± std over folds (the main job's table)."""
    cols = [
        ("test_acc", "Acc"),
        ("test_f1", "F1"),
        ("test_vote_acc", "Vote acc"),
        ("val_seg_acc_truth", "Seg acc (truth)"),
        ("noise_auc", "Noise AUC"),
    ]
    head = "| arm | " + " | ".join(c for _, c in cols) + " |"
    lines = [head, "|---" * (len(cols) + 1) + "|"]
    baseline = None
    for arm, s in summaries.items():
        m = s["metrics"]
        cells = [pct_mean_std(m, k) for k, _ in cols]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
        baseline = baseline or m.get("test_majority_acc")
    if baseline:
        lines.append(
            f"| majority class | {pct_mean_std({'b': baseline}, 'b')}"
            + " | — " * (len(cols) - 1)
            + "|"
        )
    return "\n".join(lines)


def _cell(values: list[float] | None) -> str:
    return pct(*mean_std(values)) if values else "—"


def table3(comparison: dict[str, Any]) -> list[str]:
    """The paper's Table 3 layout: arms x tasks, song accuracy and F1 (mean ± std over all
    fold results, %), and the majority-class baseline of each task; tasks that are not
    classified (regression) get their own table (`task_table`)."""
    tasks = [t for t in comparison["design"]["tasks"] if "columns" not in comparison["tasks"][t]]
    lines: list[str] = []
    for t in comparison["design"]["tasks"]:
        if t not in tasks:
            lines += [*task_table(t, comparison["tasks"][t]), ""]
    if not tasks:
        return lines[:-1]
    return lines + _table3(comparison, tasks)


def task_table(task: str, t: dict[str, Any]) -> list[str]:
    """One task's arms x its table columns, mean ± std over all fold results, as they are."""
    cols = t["columns"]
    lines = [f"| {task}: arm | " + " | ".join(cols) + " |", "|---" * (1 + len(cols)) + "|"]
    for arm, row in t["table"].items():
        cells = ["{:.3f} ± {:.3f}".format(*mean_std(row[k])) if row.get(k) else "—" for k in cols]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return lines


def _table3(comparison: dict[str, Any], tasks: list[str]) -> list[str]:
    """Table 3 of the classification tasks `tasks`."""
    arms = list(comparison["design"]["arms"])
    head = "| arm | " + " | ".join(f"{t} Acc | {t} F1" for t in tasks) + " |"
    lines = [head, "|---" * (1 + 2 * len(tasks)) + "|"]
    for arm in arms:
        cells = []
        for t in tasks:
            row = comparison["tasks"][t]["table"][arm]
            cells += [_cell(row.get("test_acc")), _cell(row.get("test_f1"))]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    majority = [
        _cell(comparison["tasks"][t]["table"][arms[0]].get("test_majority_acc")) for t in tasks
    ]
    lines.append("| majority class | " + " | ".join(f"{m} | —" for m in majority) + " |")
    return lines


def _stats_row(label: str, metric: dict[str, Any]) -> str:
    if metric["stats"] is None:
        return f"| {label} | {metric['verdict']} |" + " |" * 6
    c = PairedComparison(**metric["stats"])
    shown = metric.get("shown", {})
    k, d = shown.get("scale", 100.0), shown.get("digits", 1)
    gain = signed_points(k * c.mean, "", d)
    if c.no_spread:  # every fold differs by the same amount: no CI, t or p to give
        ci, p, t, mde = f"{gain} (no spread between folds)", "—", "—", "—"
    else:
        lo, hi = (k * x for x in c.ci)
        wide = f"{gain} [wider than ±{k * c.span:g}]"
        ci = wide if c.ci_beyond_range else f"{gain} [{lo:+.{d}f}, {hi:+.{d}f}]"
        p, t = f"{c.p:.3f}", f"{c.t:.2f} (bound {c.t_bound:.2f})"
        mde = f"{k * c.mde:.{d}f}" if c.resolvable else "none possible"
    return (
        f"| {label} | {ci} | {p} | {t} | {c.p_gain:.2f} / {c.p_rope:.2f} / {c.p_loss:.2f} "
        f"| {c.wins}/{c.ties}/{c.losses} | {mde} | {_songs(c)} |"
    )


def _songs(c: PairedComparison) -> str:
    n = c.songs_needed
    if n is None or not math.isfinite(n) or not c.resolvable:
        return "—"
    if c.songs and n > SONGS_BEYOND * c.songs:
        return f"> {SONGS_BEYOND}x these"
    return f"{math.ceil(n)}"


def comparison_markdown(comparison: dict[str, Any]) -> str:
    """comparison.md: Table 3, then per task one verdict per pair with its statistics and
    which epoch each arm evaluated."""
    d = comparison["design"]
    rope = 100 * d["rope"]
    valued = [t for t, v in comparison["tasks"].items() if "columns" in v]  # regression tasks
    lines = [
        f"# Comparison: {len(d['arms'])} arms on {comparison['songs']} songs",
        "",
        f"Shards {comparison['shards']} ({comparison['shards_digest']}); {d['n_folds']}-fold "
        f"song-grouped stratified cross-validation x {d['repeats']} repetition(s)"
        + (f", folds {d['folds']} only" if d["folds"] is not None else "")
        + "; every arm on identical folds and seeds.",
        "",
        "Arms: " + "; ".join(f"`{a}` = {o or 'the defaults'}" for a, o in d["arms"].items()) + ".",
        "",
        _figures_sentence(valued, len(comparison["tasks"])),
        "",
        *table3(comparison),
        "",
        "Statistics: gain of the second arm over the first, with the 95 % CI of the corrected "
        "repeated k-fold t (Nadeau & Bengio 2003; Bouckaert & Frank 2004), never a naive paired "
        "t; P(gain > ROPE) / P(|gain| <= ROPE) / P(loss > ROPE) of the Bayesian correlated "
        "t-test (Benavoli et al. 2017) with "
        + _rope_words(rope, d["rope"], valued, len(comparison["tasks"]))
        + "; the t bound is the "
        "corrected t with infinitely many repeats; the detectable gain is the smallest true gain "
        "found at 80 % power; the songs estimate assumes the fold differences' spread shrinks as "
        "1 / sqrt(songs). Verdict rule: no difference when the whole CI lies inside the ROPE, "
        "helps / hurts when it excludes 0, inconclusive otherwise.",
    ]
    for task, t in comparison["tasks"].items():
        lines += ["", f"## Task {task}", "", *_task_lines(t)]
    lines += [
        "",
        "Every per-fold figure is in comparison.json; forest.png shows each pair's gain, its CI, "
        "the ROPE band and every fold's difference.",
    ]
    return "\n".join(lines)


def _rope_words(points: float, rope: float, valued: list[str], n_tasks: int) -> str:
    """The ROPE in each figure's own unit: accuracy points, and for regression the unitless
    R², CCC and r, and RMSE in a share of the scale's width."""
    regression = (
        f"ROPE ±{rope:g} for R², CCC and r, ±{rope:g} of the scale's width for RMSE, "
        f"±{points:.1f} points for the noise AUC"
    )
    if not valued:
        return f"ROPE ±{points:.1f} points"
    if len(valued) == n_tasks:
        return regression
    return f"ROPE ±{points:.1f} points ({regression})"


def _figures_sentence(valued: list[str], n_tasks: int) -> str:
    """What the tables above the statistics hold: Table 3 for classification; for regression
    tasks, their own figures on the scales they name (not %)."""
    classified = (
        "Song-level test accuracy / F1 (SVM on Eq. 10 features), mean ± std over fold results, %"
    )
    if not valued:
        return classified + ":"
    regression = (
        f"{', '.join(valued)}: song-level R², CCC, RMSE and Pearson r (an SVR per output on "
        "Eq. 10 features; test_mean_*: the plain mean of the segment predictions), segment CCC "
        "against the truth and the noise AUC, mean ± std over fold results, on the scale each "
        "result names"
    )
    return (regression if len(valued) == n_tasks else f"{classified}; {regression}") + ":"


def _task_lines(t: dict[str, Any]) -> list[str]:
    """One task's verdicts, evaluated epochs and statistics table."""
    lines: list[str] = []
    for pair in t["pairs"]:
        first = next(iter(pair["metrics"]), None)
        for key, m in pair["metrics"].items():
            name = _metric_name(key, m)
            if key == first:
                lines.append(f"- **{pair['b']} vs {pair['a']}** ({name}): {m['verdict']}")
            else:
                lines.append(f"  - {name}: {m['verdict']}")
    lines += [""]
    for arm, e in t["epochs"].items():
        said = warmup_sentence(e)
        epochs = ", ".join(f"{w}: {v + 1}" for w, v in e["evaluated_epoch"].items())
        lines.append(
            f"- `{arm}` evaluated epoch (1-based; warm-up = epochs 1-{e['warmup_epochs']}) "
            f"{epochs}" + (f"; {said}." if said else ".")
        )
    lines += headroom_lines(t.get("headroom"))
    lines += [
        "",
        "| pair / metric | gain"
        + (" [95 % CI]" if "columns" in t else ", points [95 % CI]")
        + " | p | corrected t | P(gain) / P(ROPE) / "
        "P(loss) | W/T/L | detectable gain | songs to resolve |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for pair in t["pairs"]:
        for key, m in pair["metrics"].items():
            label = f"{pair['b']} − {pair['a']}: {_metric_name(key, m)}"
            lines.append(_stats_row(label, m))
    return lines


def _metric_name(key: str, metric: dict[str, Any]) -> str:
    """A compared figure in words: the task's name for it, or the accuracy names."""
    return metric.get("shown", {}).get("name") or METRIC_NAMES.get(key, key)


def headroom_lines(headroom: dict[str, Any] | None) -> list[str]:
    """Each arm's share of the headroom between plain training and the oracle labels, per
    metric: a gain read against what any split or step could still gain."""
    if not headroom or not headroom["metrics"]:
        return []
    plain, oracle = headroom["inherit"], headroom["oracle"]
    keys = list(headroom["metrics"])
    lines = [
        "",
        f"Share of the headroom: (arm − `{plain}`) / (`{oracle}` − `{plain}`), mean gains over "
        "the folds, points (share):",
        "",
        "| arm | " + " | ".join(METRIC_NAMES.get(k, k) for k in keys) + " |",
        "|---" * (len(keys) + 1) + "|",
    ]
    arms = list(headroom["metrics"][keys[0]]["arms"])
    for arm in arms:
        cells = []
        for k in keys:
            m = headroom["metrics"][k]["arms"].get(arm)
            if m is None or not math.isfinite(m["gain"]):
                cells.append("—")
                continue
            share = "no headroom" if m["share"] is None else f"{100 * m['share']:.0f} %"
            cells.append(f"{100 * m['gain']:+.1f} ({share})")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return lines


def warmup_sentence(epochs: dict[str, Any]) -> str | None:
    """'SSSL's best epoch was in the warm-up on 4 of 5 folds: ...' for an SSSL arm, or None."""
    n = epochs.get("in_warmup")
    total = len(epochs["evaluated_epoch"])
    if n is None or not total:
        return None
    if n == total:
        return (
            f"its evaluated epoch was in the warm-up on {_all_folds(total)}: it exported the "
            "network plain training on inherited labels gives, so on this data its step did "
            "not improve on plain training"
        )
    if n:
        return (
            f"its evaluated epoch was in the warm-up on {n} of {total} folds (there it exported "
            "the plain-training network): on those folds its step did not improve on plain "
            "training"
        )
    return f"its evaluated epoch came after the warm-up on {_all_folds(total)}"


def _all_folds(n: int) -> str:
    return "its one fold" if n == 1 else f"all {n} folds"


# The song-level numbers a report table shows, in this order.
HEADLINE = (
    "test_acc",
    "test_f1",
    "test_majority_acc",
    "test_vote_acc",
    "test_brier",
    "test_ece",
    "test_feature_shift",
    "val_acc",
    "val_seg_acc_truth",
    "noise_auc",
    # regression tasks (on the data set's own scale: summary.md names it)
    "test_r2",
    "test_ccc",
    "test_rmse",
    "test_pearson",
    "test_mean_r2",
    "test_mean_ccc",
    "val_seg_r2_truth",
    "val_seg_ccc_truth",
)


def _regression_note(runs: dict[int, FoldRun]) -> list[str]:
    """For a regression run: which scale its figures are on, and what each one is."""
    scales = {tuple(r.result["scale"]) for r in runs.values() if "scale" in r.result}
    if not scales:
        return []
    said = ", ".join(f"{lo:g}-{hi:g}" for lo, hi in sorted(scales))
    return [
        "",
        f"Regression: song ratings on the data set's own scale ({said}); test_r2, test_ccc, "
        "test_rmse and test_pearson are the SVR on Eq. 10 features, test_mean_* the plain mean "
        "of the segment predictions; val_seg_*_truth: validation segments against the "
        "per-second truth (dynamic annotations).",
    ]


def write_summary(out: Path, summary: dict[str, Any], runs: dict[int, FoldRun]) -> None:
    """summary.md: the headline table, the plots present, the paired variants, the export."""
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
        "test_vote_acc is the majority vote of segment decisions (Sarkar et al.). "
        "test_brier and test_ece: calibration of the SVM's song probabilities (0 = perfect); "
        "test_feature_shift: how far test songs' Eq. 10 features lie from the training songs' "
        "(mean |mean difference| / training std), which the SVM never saw out of sample.",
        *_regression_note(runs),
        "",
        "Plots: " + ", ".join(sorted(p.name for p in out.glob("*.png"))),
    ]
    lines += paired_variant_lines(runs)
    exported = summary.get("exported_model")
    if exported:
        epoch = exported.get("epoch")
        lines += [
            "",
            f"Exported {exported['path']}: fold {exported['fold']}"
            + (f", epoch {epoch + 1} (1-based)" if isinstance(epoch, int) else "")
            + f". Why: {exported['why']}.",
        ]
    (out / "summary.md").write_text("\n".join(lines) + "\n")


# Figures a run reports twice, from the same folds: (prefix of the other variant, what it is,
# what the headline figures are).
VARIANTS = (
    ("in_sample_", "SVM on in-sample features (the paper)", "cross-fitted"),
    ("last_epoch_", "last epoch (the paper)", "best validation epoch (in-sample SVM)"),
)
VARIANT_METRICS = ("test_acc", "test_brier", "test_ece", "test_feature_shift")


def paired_variant_lines(runs: dict[int, FoldRun]) -> list[str]:
    """For `svm_features: cross_fit` and `eval_epoch: best_val` runs: the headline figures
    against the paper's variant, which the same folds also report, paired over folds."""
    lines = []
    has = lambda key: all(key in r.result for r in runs.values())  # noqa: E731
    view = lambda key: {"per_fold": {f: {"v": r.result[key]} for f, r in runs.items()}}  # noqa: E731
    for prefix, paper, ours in VARIANTS:
        rows = []
        for metric in VARIANT_METRICS:
            # Change one thing at a time: last_epoch_* figures use the in-sample SVM, so with
            # cross-fitting on they are compared with in_sample_*, not with the headline.
            other = "in_sample_" + metric if prefix == "last_epoch_" else metric
            other = other if has(other) else metric
            if not (has(prefix + metric) and has(other)):
                continue
            d = paired_difference(view(prefix + metric), view(other), "v")
            a = mean_std([r.result[prefix + metric] for r in runs.values()])[0]
            b = mean_std([r.result[other] for r in runs.values()])[0]
            rows.append(f"| {metric} | {a:.4f} | {b:.4f} | {d['mean']:+.4f} | {_t(d['t'])} |")
        if rows:
            lines += [
                "",
                f"{ours} against {paper}, same folds (b - a paired; Brier, ECE and feature shift:"
                " lower is better):",
                "",
                f"| metric | a: {paper} | b: {ours} | b - a | corrected t |",
                "|---|---|---|---|---|",
                *rows,
            ]
    return lines


def _t(t: float) -> str:
    if math.isinf(t):
        return "— (no spread between folds)"
    return "—" if math.isnan(t) else f"{t:.2f}"


def sweep_markdown(base: SSSLConfig, summary: dict[str, Any], select_by: str) -> list[str]:
    """A sweep's summary.md: the honest choice (by `select_by` on validation songs), every
    configuration, the choice against the defaults, and the paper's table views."""
    rows, honest, optimistic = summary["rows"], summary["honest"], summary["optimistic"]

    def cell(r: dict[str, Any], metric: str) -> str:
        return pct(r[f"{metric}_mean"], r[f"{metric}_std"])

    lines = [
        "# Sweep results",
        "",
        f"Selected by validation-song accuracy (honest): **{honest['config']}** — test accuracy "
        f"{cell(honest, 'test_acc')} %, F1 {cell(honest, 'test_f1')} % over {honest['folds']} "
        f"folds (majority class {cell(honest, 'test_majority_acc')} %).",
        "",
        f"Best by test accuracy (optimistic, chosen on the test folds themselves): "
        f"{optimistic['config']} — {cell(optimistic, 'test_acc')} %.",
        "",
        "Every configuration, mean ± std over folds (%):",
        "",
        "| config | val acc | test acc | test F1 | vote acc | seg acc (truth) | noise AUC |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: -r[f"{select_by}_mean"]):
        lines.append(
            f"| {r['config']} | {cell(r, 'val_acc')} | {cell(r, 'test_acc')} | "
            f"{cell(r, 'test_f1')} | {cell(r, 'test_vote_acc')} | "
            f"{cell(r, 'val_seg_acc_truth')} | {cell(r, 'noise_auc')} |"
        )
    lines += [
        "",
        *chosen_against_defaults(base, summary),
        *paper_tables(rows, select_by),
        "",
        "best_config.yaml: the selected configuration, ready for `sssl train --config`.",
    ]
    return lines


def chosen_against_defaults(base: SSSLConfig, summary: dict[str, Any]) -> list[str]:
    """The honest choice against the base configuration's own values (the defaults), where the
    sweep ran both on the same folds, with `sssl compare`'s statistics on test accuracy."""
    honest = summary["honest"]
    params = [k for k in honest if k in to_dict(base) and k != "config"]
    default = next(
        (r for r in summary["rows"] if all(r[k] == getattr(base, k) for k in params)), None
    )
    if default is None or default["config"] == honest["config"]:
        return []
    per_config = summary["per_config"]
    a, b = per_config[default["config"]], per_config[honest["config"]]
    folds = sorted(set(a) & set(b), key=int)
    if len(folds) < 2:
        return []
    test = compare_paired(
        [a[f]["test_acc"] for f in folds],
        [b[f]["test_acc"] for f in folds],
        base.n_folds,
        songs=None,
    )
    return [
        f"The choice against the defaults ({default['config']}) on the same {len(folds)} "
        f"folds, test accuracy: {test.sentence()} (corrected repeated k-fold t and its 95 % CI, "
        "as `sssl compare` reports; the choice was made on validation songs, not on these).",
        "",
    ]


def paper_tables(rows: list[dict[str, Any]], select_by: str) -> list[str]:
    """Table 2 (segment length x task, accuracy and F1 per task) and Table 3 (method) views,
    when the sweep varies them. Each cell is the configuration chosen by validation accuracy
    within that cell, reported by its test folds."""

    def best(group: list[dict[str, Any]]) -> dict[str, Any]:
        return max(group, key=lambda r: r[f"{select_by}_mean"])

    def cell(r: dict[str, Any] | None, metric: str) -> str:
        if r is None:
            return "—"
        return pct(r[f"{metric}_mean"], r[f"{metric}_std"])

    out: list[str] = []
    tasks = sorted({r["task"] for r in rows}) if "task" in rows[0] else [None]
    if "segment_seconds" in rows[0]:
        head = " | ".join(f"{t or 'task'} acc | {t or 'task'} F1" for t in tasks)
        out += [
            "## Table 2 view: by segment length L (s)",
            "",
            f"| L | {head} | majority class |",
            "|---" * (2 * len(tasks) + 2) + "|",
        ]
        for length in sorted({r["segment_seconds"] for r in rows}):
            cells, majority = [], []
            for t in tasks:
                group = [
                    r
                    for r in rows
                    if r["segment_seconds"] == length and (t is None or r["task"] == t)
                ]
                r = best(group) if group else None
                cells += [cell(r, "test_acc"), cell(r, "test_f1")]
                if r is not None:
                    majority.append(f"{100 * r['test_majority_acc_mean']:.1f}")
            out.append(f"| {length} | " + " | ".join(cells) + f" | {' / '.join(majority)} |")
        out.append("")
    if "method" in rows[0]:
        out += [
            "## Table 3 view: by method",
            "",
            "| method | test acc | test F1 | majority class |",
            "|---|---|---|---|",
        ]
        for method in sorted({r["method"] for r in rows}):
            r = best([r for r in rows if r["method"] == method])
            out.append(
                f"| {method} | {cell(r, 'test_acc')} | {cell(r, 'test_f1')} | "
                f"{100 * r['test_majority_acc_mean']:.1f} |"
            )
        out.append("")
    return out
