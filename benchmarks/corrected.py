"""Every recorded comparison of a results.json (dev/accuracy.py's format), re-derived
with `sssl compare`'s statistics: the corrected repeated k-fold t, its 95 % CI, the Bayesian
correlated t-test and the verdict. No training: it reads the per-fold figures already there.

    python benchmarks/corrected.py benchmarks/results/grid10/results.json [more.json ...]

Pairs: each sssl cell against the inherit cell of the same data and schedule (same songs,
folds, epochs, warm-up, noise, task, L), on song test accuracy and on segment accuracy
against the truth; SSSL cells of one setting against the default SSSL cell of that setting,
on song accuracy and noise AUC. Prints one markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sssl_dist.outputs.stats import DEFAULT_ROPE, compare_paired

SETTING = ("songs", "folds", "epochs", "warmup", "noise", "task", "L")
DEFAULT_SSSL = {
    "gmm_scope": "per_class",
    "selection": "epoch_loss",
    "split_network": "current",
    "targets": "inherited",
    "set": "-",
    "eval": "best_val",
}


def fields(key: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in key.split())


def label(f: dict[str, str]) -> str:
    """What makes a cell differ from the default SSSL cell (or 'default')."""
    diff = [f"{k}={f[k]}" for k, v in DEFAULT_SSSL.items() if f.get(k, v) != v]  # absent: default
    return f"{f['method']} " + (" ".join(diff) if diff else "default")


def folds_of(cell: dict, key: str) -> dict[str, float]:
    return {f: r[key] for f, r in cell["per_fold"].items() if r.get(key) is not None}


def row(name: str, metric: str, a: dict, b: dict, k: int, songs: int) -> str | None:
    fa, fb = folds_of(a, metric), folds_of(b, metric)
    common = sorted(set(fa) & set(fb), key=int)
    if len(common) < 2:
        return None
    c = compare_paired([fa[f] for f in common], [fb[f] for f in common], k, 1, DEFAULT_ROPE, songs)
    lo, hi = (100 * x for x in c.ci)
    return (
        f"| {name} | {metric} | {len(common)} of {k} | {100 * c.mean:+.1f} [{lo:+.1f}, {hi:+.1f}] "
        f"| {c.t:.2f} | {c.p:.3f} | {c.p_gain:.2f} / {c.p_rope:.2f} / {c.p_loss:.2f} "
        f"| {c.wins}/{c.ties}/{c.losses} | {c.verdict} |"
    )


def table(path: Path) -> list[str]:
    cells = json.loads(path.read_text())
    parsed = {key: fields(key) for key in cells}
    lines = []
    for key, f in parsed.items():
        if f["method"] == "inherit":
            continue
        setting = {s: f[s] for s in SETTING}
        k, songs = int(f["folds"]), int(f["songs"])
        where = " ".join(f"{s}={v}" for s, v in setting.items() if s in ("noise", "task", "L"))
        inherit = next(
            (
                c
                for c, g in parsed.items()
                if g["method"] == "inherit" and all(g.get(s) == v for s, v in setting.items())
            ),
            None,
        )
        if inherit:
            for metric in ("test_acc", "val_seg_acc_truth"):
                r = row(
                    f"{where}: {label(f)} − inherit", metric, cells[inherit], cells[key], k, songs
                )
                lines += [r] if r else []
        if label(f) != "sssl default":
            default = next(
                (
                    c
                    for c, g in parsed.items()
                    if label(g) == "sssl default" and all(g.get(s) == v for s, v in setting.items())
                ),
                None,
            )
            for metric in ("test_acc", "noise_auc", "val_seg_acc_truth") if default else ():
                r = row(
                    f"{where}: {label(f)} − sssl default",
                    metric,
                    cells[default],
                    cells[key],
                    k,
                    songs,
                )
                lines += [r] if r else []
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="+", type=Path)
    args = p.parse_args()
    for path in args.results:
        print(f"\n{path} (gain in points; ROPE ±{100 * DEFAULT_ROPE:.0f}):\n")
        print(
            "| pair | metric | folds | gain [95 % CI] | corrected t | p | P(gain)/P(ROPE)/P(loss) "
            "| W/T/L | verdict |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        print("\n".join(table(path)))


if __name__ == "__main__":
    main()
