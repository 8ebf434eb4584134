"""Why the SSSL step loses to its own warm-up: the ablation ladder and the candidate fixes
(benchmarks/arms/ladder.yaml) as one `sssl compare` on the generated corpus, then each arm's
segment accuracy against the per-second truth relative to its own warm-up.

    python benchmarks/ladder.py --out runs/ladder-L3 [--songs 200] [--folds 5] [--L 3]
                                [--only inherit,full,ema-bn]

The corpus (200 songs, seed 0, the generator untouched) is made and sharded once under --out;
the comparison resumes when re-run. Pairs: each rung against the one before, every candidate
against the full step, every arm against inherit. Cost at the defaults: 10 arms x 5 folds,
8 epochs (3 warm-up, trained once for all arms), about 45 min on 2 cores.

Besides `sssl compare`'s comparison.md it writes ladder.md: for each arm, segment accuracy
against the truth at the first SSSL epoch and at the last epoch, each against the last warm-up
epoch of the same fold, and the last epoch against the warm-up's peak, with the corrected
statistics over folds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sssl_dist.outputs.stats import compare_paired

ARMS = Path(__file__).parent / "arms" / "ladder.yaml"
RUNGS = ("inherit", "filter", "pseudo", "pseudo_mixup", "full")
TRUTH = "val_seg_acc_truth"


def pairs(arms: list[str]) -> str:
    rungs = [r for r in RUNGS if r in arms]
    ladder = [f"{a}:{b}" for a, b in zip(rungs, rungs[1:], strict=False)]
    candidates = [f"full:{arm}" for arm in arms if arm not in RUNGS]
    # Every arm also against inherit: the goal is a step that helps over plain training.
    baseline = [f"inherit:{arm}" for arm in arms if arm not in ("inherit", "filter")]
    return ",".join(dict.fromkeys([*ladder, *candidates, *baseline]))  # each pair once


def truth_curves(cell: Path, n_folds: int) -> list[list[float]]:
    """Per fold, segment accuracy against the truth at every epoch (validation songs)."""
    folds = (json.loads((cell / f"fold-{f}" / "history.json").read_text()) for f in range(n_folds))
    return [[h[TRUTH] for h in history] for history in folds]


def against_warmup(
    curves: list[list[float]], inherit: list[list[float]], n_folds: int, warmup: int
) -> dict[str, str]:
    """Segment accuracy against the truth, fold by fold, at points relative to the fold's own
    warm-up, and the last epoch against inherit's last epoch (the warm-up is the same
    training for both); each a corrected comparison over the folds."""
    points = {
        "first": ([t[warmup - 1] for t in curves], [t[warmup] for t in curves]),
        "last": ([t[warmup - 1] for t in curves], [t[-1] for t in curves]),
        "peak": ([max(t[:warmup]) for t in curves], [t[-1] for t in curves]),
        "inherit": ([t[-1] for t in inherit], [t[-1] for t in curves]),
    }
    return {k: compare_paired(a, b, n_folds).sentence() for k, (a, b) in points.items()}


def stepwise(curves: dict[str, list[list[float]]], warmup: int, n_folds: int) -> list[str]:
    """Each rung against the one before and each candidate against the full step, at the first
    SSSL epoch and at the last: which component moves segment accuracy against the truth."""
    rows = [
        "Each rung against the one before, each candidate against `full`: segment accuracy "
        "against the truth at the first SSSL epoch and at the last epoch (same folds, the same "
        "warm-up; corrected t, 95 % CI, points):",
        "",
        "| arm − against | first SSSL epoch | last epoch |",
        "|---|---|---|",
    ]
    rungs = [r for r in RUNGS if r in curves]
    pairs = [*zip(rungs, rungs[1:], strict=False)]
    pairs += [("full", arm) for arm in curves if arm not in RUNGS]
    for a, b in pairs:
        cells = [
            compare_paired([t[e] for t in curves[a]], [t[e] for t in curves[b]], n_folds).sentence()
            for e in (warmup, -1)
        ]
        rows.append(f"| {b} − {a} | {cells[0]} | {cells[1]} |")
    return rows


def main(out: Path, songs: int, folds: int, length: int, only: list[str] | None = None) -> None:
    import ray

    from shards.synth import SynthConfig
    from shards.write import shard_synthetic
    from sssl_dist.config import SSSLConfig
    from sssl_dist.driver.arms import read_arms
    from sssl_dist.driver.compare import Design, run_comparison
    from sssl_dist.outputs.tables import comparison_markdown

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    shards = shard_synthetic(out / "corpus", out / "shards", SynthConfig(n_songs=songs, seed=0))
    base = SSSLConfig(n_folds=folds, epochs=8, warmup_epochs=3, segment_seconds=length)
    arms = read_arms(ARMS)
    if only:  # a subset, e.g. a candidate against the full step on more folds
        unknown = sorted(set(only) - set(arms) | ({"inherit", "full"} - set(only)))
        if unknown:
            raise SystemExit(f"--only: unknown arms or inherit/full missing: {unknown}")
        arms = {name: arms[name] for name in arms if name in only}
    design = Design(arms, (base.task,), folds, pairing=pairs(list(arms)))
    comparison = run_comparison(base, shards, out, design, workers=0, parallel=2)
    lines = [
        f"# The step's ladder: {songs} songs, {folds} folds, L = {length} s, 8 epochs (3 warm-up)",
        "",
        "Segment accuracy against the truth (validation songs), each arm against its own warm-up "
        "on the same folds (corrected t, 95 % CI, points):",
        "",
        "| arm | first SSSL epoch − last warm-up | last epoch − last warm-up "
        "| last epoch − warm-up peak | last epoch − inherit's last epoch |",
        "|---|---|---|---|---|",
    ]
    curves = {arm: truth_curves(out / design.cell(base.task, arm, 0), folds) for arm in arms}
    for arm in arms:
        if arm == "inherit":
            continue
        d = against_warmup(curves[arm], curves["inherit"], folds, base.warmup_epochs)
        lines.append(f"| {arm} | {d['first']} | {d['last']} | {d['peak']} | {d['inherit']} |")
    lines += ["", *stepwise(curves, base.warmup_epochs, folds)]
    text = "\n".join(lines) + "\n\n" + comparison_markdown(comparison) + "\n"
    (out / "ladder.md").write_text(text)
    print(text)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--songs", type=int, default=200)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--L", type=int, default=3, dest="length")
    p.add_argument("--only", help="comma list of arms (inherit and full always among them)")
    a = p.parse_args()
    main(a.out, a.songs, a.folds, a.length, a.only.split(",") if a.only else None)
