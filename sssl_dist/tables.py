"""Markdown tables of comparisons: the paper's Table 3 layout (arms x tasks) and the verdicts
of `sssl compare`, one place for both so the demo, compare and the benchmarks print alike."""

from __future__ import annotations

import math
from typing import Any

from sssl_dist.stats import mean_std, pct, pct_mean_std

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
    fold results, %), and the majority-class baseline of each task."""
    tasks = comparison["design"]["tasks"]
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
    s = metric["stats"]
    if s is None:
        return f"| {label} | {metric['verdict']} |" + " |" * 6
    lo, hi = s["ci"]
    return (
        f"| {label} | {100 * s['mean']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] | {s['p']:.3f} "
        f"| {s['t']:.2f} (bound {s['t_bound']:.2f}) | {s['p_gain']:.2f} / {s['p_rope']:.2f} / "
        f"{s['p_loss']:.2f} | {s['wins']}/{s['ties']}/{s['losses']} | {100 * s['mde']:.1f} "
        f"| {_songs(s)} |"
    )


def _songs(s: dict[str, Any]) -> str:
    n = s.get("songs_needed")
    return "—" if n is None or not math.isfinite(n) else f"{math.ceil(n)}"


def comparison_markdown(comparison: dict[str, Any]) -> str:
    """comparison.md: Table 3, then per task one verdict per pair with its statistics and
    which epoch each arm evaluated."""
    from sssl_dist.compare import warmup_sentence

    d = comparison["design"]
    rope = 100 * d["rope"]
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
        "Song-level test accuracy / F1 (SVM on Eq. 10 features), mean ± std over fold results, %:",
        "",
        *table3(comparison),
        "",
        "Statistics: gain of the second arm over the first, with the 95 % CI of the corrected "
        "repeated k-fold t (Nadeau & Bengio 2003; Bouckaert & Frank 2004), never a naive paired "
        f"t; P(gain > ROPE) / P(|gain| <= ROPE) / P(loss > ROPE) of the Bayesian correlated "
        f"t-test (Benavoli et al. 2017) with ROPE ±{rope:.1f} points; the t bound is the "
        "corrected t with infinitely many repeats; the detectable gain is the smallest true gain "
        "found at 80 % power; the songs estimate assumes the fold differences' spread shrinks as "
        "1 / sqrt(songs). Verdict rule: no difference when the whole CI lies inside the ROPE, "
        "helps / hurts when it excludes 0, inconclusive otherwise.",
    ]
    for task, t in comparison["tasks"].items():
        lines += ["", f"## Task {task}", ""]
        for pair in t["pairs"]:
            primary = pair["metrics"].get("test_acc")
            if primary:
                lines.append(
                    f"- **{pair['b']} vs {pair['a']}** (song accuracy): {primary['verdict']}"
                )
            for key, m in pair["metrics"].items():
                if key != "test_acc":
                    lines.append(f"  - {METRIC_NAMES.get(key, key)}: {m['verdict']}")
        lines += [""]
        for arm, e in t["epochs"].items():
            said = warmup_sentence(e)
            epochs = ", ".join(f"{w}: {v + 1}" for w, v in e["evaluated_epoch"].items())
            lines.append(
                f"- `{arm}` evaluated epoch (1-based; warm-up = epochs 1-{e['warmup_epochs']}) "
                f"{epochs}" + (f"; {said}." if said else ".")
            )
        lines += [
            "",
            "| pair / metric | gain, points [95 % CI] | p | corrected t | P(gain) / P(ROPE) / "
            "P(loss) | W/T/L | detectable gain | songs to resolve |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for pair in t["pairs"]:
            for key, m in pair["metrics"].items():
                label = f"{pair['b']} − {pair['a']}: {METRIC_NAMES.get(key, key)}"
                lines.append(_stats_row(label, m))
    lines += [
        "",
        "Every per-fold figure is in comparison.json; forest.png shows each pair's gain, its CI, "
        "the ROPE band and every fold's difference.",
    ]
    return "\n".join(lines)
