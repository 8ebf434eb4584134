"""Which split finds the wrong segment labels, and how much of the headroom each arm takes:
the arms of benchmarks/arms/split.yaml (or --arms FILE) as one `sssl compare` on the generated
corpus, with the ceiling arms, per segment length.

    python benchmarks/split_grid.py --out runs/split-L3 --L 3 [--folds 10] [--songs 200]
                                    [--arms FILE] [--only inherit,sssl,...] [--first N]
                                    [--against ARM]

The corpus (200 songs, seed 0, the generator untouched) is made and sharded once under --data
(shared by every length); the comparison resumes when re-run, and arms added to the file later
train only their own cells. Pairs: every arm against inherit, every other arm against `sssl`
(today's default), and `sssl` against `sssl-paper`. 8 epochs of which 3 are warm-up (shared by
every arm that trains the same warm-up). Cost on 2 cores: about 1.1 min of wall per fold run
(2 fold runs side by side), so 10 folds x 6 arms about 65 min per length.

Besides comparison.md it writes split.md: per arm, the noise AUC at every SSSL epoch (mean and
lowest over folds), the split's precision and recall of the wrong labels, how many folds
evaluated an epoch after the warm-up, and the share of the headroom.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

ARMS = Path(__file__).parent / "arms" / "split.yaml"
BASELINE, DEFAULT = "inherit", "sssl"


def pairs(arms: list[str], against: str | None = None) -> str:
    """Every arm against inherit, every other arm against today's default, and the default
    against the paper's step; with `against`, also every arm after it in the file against it
    (what builds on a candidate, against the candidate)."""
    against_inherit = [f"{BASELINE}:{a}" for a in arms if a != BASELINE]
    against_default = [f"{DEFAULT}:{a}" for a in arms if a not in (BASELINE, DEFAULT)]
    later = arms[arms.index(against) + 1 :] if against else []
    against_other = [f"{against}:{a}" for a in later if a not in (BASELINE, DEFAULT)]
    return ",".join(dict.fromkeys([*against_inherit, *against_default, *against_other]))


def histories(cell: Path, folds: list[int]) -> list[list[dict[str, Any]]]:
    """Every fold's per-epoch history of one cell (its report folder)."""
    return [json.loads((cell / f"fold-{f}" / "history.json").read_text()) for f in folds]


def split_rows(runs: dict[str, list[list[dict[str, Any]]]], warmup: int, epochs: int) -> list[str]:
    """Noise AUC per SSSL epoch (mean, and the lowest fold), and the last epoch's precision and
    recall of the wrong labels in U, for every arm that splits."""
    sssl_epochs = list(range(warmup, epochs))
    head = " | ".join(f"epoch {e + 1}" for e in sssl_epochs)
    lines = [
        "Noise AUC of the split at each SSSL epoch (1-based), mean over folds (lowest fold), "
        "and at the last epoch the share of U whose inherited label is wrong (precision) and "
        "the share of wrong labels that went to U (recall):",
        "",
        f"| arm | {head} | precision | recall |",
        "|---" * (len(sssl_epochs) + 3) + "|",
    ]
    for arm, folds in runs.items():
        if not any("noise_auc" in h for hist in folds for h in hist):
            continue
        cells = []
        for e in sssl_epochs:
            v = [
                h["noise_auc"]
                for hist in folds
                for h in hist
                if h["epoch"] == e and "noise_auc" in h
            ]
            cells.append(f"{np.mean(v):.3f} ({np.min(v):.3f})" if v else "—")
        last = [hist[-1] for hist in folds]
        prec = np.mean([h.get("noise_precision", np.nan) for h in last])
        rec = np.mean([h.get("noise_recall", np.nan) for h in last])
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {prec:.3f} | {rec:.3f} |")
    return lines


def main(
    out: Path,
    data: Path,
    songs: int,
    folds: int,
    length: int,
    arms_file: Path,
    only: list[str],
    first: int | None = None,
    against: str | None = None,
) -> None:
    import ray

    from shards.synth import SynthConfig
    from shards.write import shard_synthetic
    from sssl_dist.config import SSSLConfig
    from sssl_dist.driver.arms import read_arms
    from sssl_dist.driver.compare import Design, run_comparison
    from sssl_dist.outputs.tables import comparison_markdown, warmup_sentence

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    shards = shard_synthetic(data / "corpus", data / "shards", SynthConfig(n_songs=songs, seed=0))
    base = SSSLConfig(n_folds=folds, epochs=8, warmup_epochs=3, segment_seconds=length)
    arms = read_arms(arms_file)
    if only:
        missing = sorted(set(only) - set(arms) | ({BASELINE, DEFAULT} - set(only)))
        if missing:
            raise SystemExit(f"--only: unknown arms, or inherit/sssl missing: {missing}")
        arms = {name: o for name, o in arms.items() if name in only}
    if against and against not in arms:
        raise SystemExit(f"--against: {against!r} is not among the arms")
    subset = tuple(range(first)) if first else None  # a screen: the first folds of the design
    pairing = pairs(list(arms), against)
    design = Design(arms, (base.task,), folds, pairing=pairing, folds=subset)
    comparison = run_comparison(base, shards, out, design, workers=0, parallel=2)
    task = comparison["tasks"][base.task]
    ran = list(subset or range(folds))
    runs = {arm: histories(out / design.cell(base.task, arm, 0), ran) for arm in arms}
    lines = [
        f"# Splits against the ceiling: {songs} songs, folds {ran} of {folds}, L = {length} s, "
        "8 epochs (3 warm-up)",
        "",
        *split_rows(runs, base.warmup_epochs, base.epochs),
        "",
        "Where each arm's evaluated epoch fell:",
        "",
    ]
    for arm, e in task["epochs"].items():
        said = warmup_sentence(e)
        if said:
            lines.append(f"- `{arm}`: {said}.")
    text = "\n".join(lines) + "\n\n" + comparison_markdown(comparison) + "\n"
    (out / "split.md").write_text(text)
    print(text)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data", type=Path, default=Path("runs/data-200"))
    p.add_argument("--songs", type=int, default=200)
    p.add_argument("--folds", type=int, default=10)
    p.add_argument("--L", type=int, default=3, dest="length")
    p.add_argument("--arms", type=Path, default=ARMS)
    p.add_argument("--only", help="comma list of arms (inherit and sssl always among them)")
    p.add_argument("--first", type=int, help="run only the first N folds of the design (a screen)")
    p.add_argument("--against", help="also compare every later arm of the file with this one")
    a = p.parse_args()
    only = a.only.split(",") if a.only else []
    main(a.out, a.data, a.songs, a.folds, a.length, a.arms, only, a.first, a.against)
