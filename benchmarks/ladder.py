"""Why the SSSL step loses to its own warm-up: the ablation ladder and the candidate fixes
(benchmarks/arms/ladder.yaml) as one `sssl compare` on the generated corpus, then each arm's
segment accuracy against the per-second truth relative to its own warm-up.

    python benchmarks/ladder.py --out runs/ladder-L3 [--songs 200] [--folds 5] [--L 3]

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

from sssl_dist.stats import compare_paired

ARMS = Path(__file__).parent / "arms" / "ladder.yaml"
RUNGS = ("inherit", "filter", "pseudo", "pseudo_mixup", "full")
TRUTH = "val_seg_acc_truth"


def pairs(arms: list[str]) -> str:
    ladder = [f"{a}:{b}" for a, b in zip(RUNGS, RUNGS[1:], strict=False)]
    candidates = [f"full:{arm}" for arm in arms if arm not in RUNGS]
    # Every arm also against inherit: the goal is a step that helps over plain training.
    baseline = [f"inherit:{arm}" for arm in arms if arm not in ("inherit", "filter")]
    return ",".join([*ladder, *candidates, *baseline])


def against_warmup(cell: Path, n_folds: int, warmup: int) -> dict[str, str]:
    """Segment accuracy against the truth, fold by fold, at three points relative to the
    fold's own warm-up; each a corrected comparison over the folds."""
    rows = {"first": ([], []), "last": ([], []), "peak": ([], [])}
    for fold in range(n_folds):
        history = json.loads((cell / f"fold-{fold}" / "history.json").read_text())
        truth = [h[TRUTH] for h in history]
        end_of_warmup = truth[warmup - 1]
        rows["first"][0].append(end_of_warmup)
        rows["first"][1].append(truth[warmup])
        rows["last"][0].append(end_of_warmup)
        rows["last"][1].append(truth[-1])
        rows["peak"][0].append(max(truth[:warmup]))
        rows["peak"][1].append(truth[-1])
    return {k: compare_paired(a, b, n_folds).sentence() for k, (a, b) in rows.items()}


def main(out: Path, songs: int, folds: int, length: int) -> None:
    import ray

    from shards.synth import SynthConfig
    from shards.write import shard_synthetic
    from sssl_dist.compare import Design, read_arms, run_comparison
    from sssl_dist.config import SSSLConfig
    from sssl_dist.tables import comparison_markdown

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    shards = shard_synthetic(out / "corpus", out / "shards", SynthConfig(n_songs=songs, seed=0))
    base = SSSLConfig(n_folds=folds, epochs=8, warmup_epochs=3, segment_seconds=length)
    arms = read_arms(ARMS)
    design = Design(arms, (base.task,), folds, pairing=pairs(list(arms)))
    comparison = run_comparison(base, shards, out, design, workers=0, parallel=2)
    lines = [
        f"# The step's ladder: {songs} songs, {folds} folds, L = {length} s, 8 epochs (3 warm-up)",
        "",
        "Segment accuracy against the truth (validation songs), each arm against its own warm-up "
        "on the same folds (corrected t, 95 % CI, points):",
        "",
        "| arm | first SSSL epoch − last warm-up | last epoch − last warm-up "
        "| last epoch − warm-up peak |",
        "|---|---|---|---|",
    ]
    for arm in arms:
        if arm == "inherit":
            continue
        d = against_warmup(out / design.cell(base.task, arm, 0), folds, base.warmup_epochs)
        lines.append(f"| {arm} | {d['first']} | {d['last']} | {d['peak']} |")
    text = "\n".join(lines) + "\n\n" + comparison_markdown(comparison) + "\n"
    (out / "ladder.md").write_text(text)
    print(text)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--songs", type=int, default=200)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--L", type=int, default=3, dest="length")
    a = p.parse_args()
    main(a.out, a.songs, a.folds, a.length)
