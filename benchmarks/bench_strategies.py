"""What each selection strategy costs per SSSL epoch, against today's defaults, in one run.

Every arm trains the same fold of the same corpus in local mode (one process, the same loop as
Ray Train's workers), twice: arms in order, then in reverse order, so a slow spell on this
shared machine does not land on one arm only. Per arm it prints the median SSSL epoch (the
first SSSL epoch of each run skipped: allocator warm-up) and its phases, and the ratio to the
defaults' epoch:

- loss pass: step 1, the losses the GMM splits (with `split_network: best_val`, the swap to the
  kept copy and back is inside it; with `out_of_sample`, the scorers' epoch of training);
- gather + GMM: steps 2-3 (with `selection: mean_loss`, the memory update is inside it);
- train: step 4, the mixup / KL optimiser steps (with `split_network: peer`, the peer's too);
- rest: the validation pass and keeping the best epoch's copy (`eval_epoch` or `split_network`
  best_val).

The first SSSL epoch, skipped, is also where `out_of_sample` and `peer` train their networks
through the warm-up epochs: that catch-up is printed apart, as the first SSSL epoch's excess over
the median.

The train phase also depends on how the split divides the segments (X and U batches cost
differently), so the median share of segments in X is printed beside it.

    python benchmarks/bench_strategies.py [--songs 60] [--epochs 7] [--repeats 2] [--split]

--split times the split's candidates (benchmarks/arms/split.yaml) against the default of
2026-12-02 instead.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

# name -> overrides of the defaults; "defaults" first (the ratios' denominator).
ARMS = {
    "defaults (per-class GMM, epoch loss, current network, best_val eval)": {},
    "gmm_scope: global (the paper's)": {"gmm_scope": "global"},
    "selection: mean_loss": {"selection": "mean_loss"},
    "split_network: best_val": {"split_network": "best_val"},
    "clean_targets: refined": {"clean_targets": "refined"},
    "eval_epoch: last (no best copy kept)": {"eval_epoch": "last"},
}
# --split: the split's candidates against the default of 2026-12-02, pinned field by field
# so the table means the same whatever the defaults become.
DEFAULT_2026_12_02 = {
    "split_evidence": "loss", "gmm_scope": "per_class", "tau": 0.5, "sssl_step": "full",
    "pseudo_label_network": "ema", "bn_stats": "clean",
}  # fmt: skip
SPLIT_ARMS = {
    "default of 2026-12-02 (per-class GMM on the loss, the full step)": DEFAULT_2026_12_02,
    "per-second song-relative evidence, one GMM, tau 0.9, filter": {
        **DEFAULT_2026_12_02, "split_evidence": "song_relative_seconds", "gmm_scope": "global",
        "tau": 0.9, "sssl_step": "filter",
    },
    "the same evidence and tau with the full step": {
        **DEFAULT_2026_12_02, "split_evidence": "song_relative_seconds", "gmm_scope": "global",
        "tau": 0.9,
    },
}  # fmt: skip
# The candidate (the second arm) with each change to who scores the split or what X holds.
CANDIDATE = SPLIT_ARMS["per-second song-relative evidence, one GMM, tau 0.9, filter"]
SPLIT_ARMS |= {
    "candidate + split_balance: uniform (UNICON)": {**CANDIDATE, "split_balance": "uniform"},
    "candidate + split_agreement: matched (ProMix)": {**CANDIDATE, "split_agreement": "matched"},
    "candidate + split_network: out_of_sample (2 scorers)": {
        **CANDIDATE, "split_network": "out_of_sample",
    },
    "candidate + split_network: peer (co-divide)": {**CANDIDATE, "split_network": "peer"},
}  # fmt: skip
PHASES = ("time_loss_pass", "time_gather_gmm", "time_train")


def phase_times(epochs: list[dict]) -> dict[str, float]:
    """Median seconds of the epoch and of each phase; `rest` is what the phases leave over."""
    out = {k: float(np.median([e[k] for e in epochs])) for k in ("time_epoch", *PHASES)}
    rest = [e["time_epoch"] - sum(e[k] for k in PHASES) for e in epochs]
    out["rest"] = float(np.median(rest))
    out["clean_fraction"] = float(np.median([e["clean_fraction"] for e in epochs]))
    return out


def main(
    songs: int = 60, epochs: int = 7, repeats: int = 2, arms: dict[str, dict] | None = None
) -> dict[str, float]:
    import ray
    from bench_train import sssl_epochs  # benchmarks/ is on the path: this script's directory

    from shards.synth import SynthConfig
    from shards.write import shard_synthetic
    from sssl_dist.config import SSSLConfig, with_overrides
    from sssl_dist.driver.run import run_fold

    work = Path(tempfile.mkdtemp(prefix="bench-strategies-"))
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    shards = shard_synthetic(
        work / "corpus", work / "shards", SynthConfig(n_songs=songs, seed=5), progress=False
    )
    base = SSSLConfig(epochs=epochs, warmup_epochs=2, n_folds=5)
    arms = arms or ARMS
    names = list(arms)
    collected: dict[str, list[dict]] = {name: [] for name in names}
    first: dict[str, list[float]] = {name: [] for name in names}  # first SSSL epochs
    for r in range(repeats):
        for i, name in enumerate(names if r % 2 == 0 else names[::-1]):
            cfg = with_overrides(base, arms[name])
            run = run_fold(cfg, shards, 0, storage_path=work / "ray", name=f"r{r}-a{i}", workers=0)
            collected[name] += sssl_epochs(run.history)
            first[name].append(next(h for h in run.history if "time_loss_pass" in h)["time_epoch"])
            n_train = run.history[0]["n_train"]
    shutil.rmtree(work, ignore_errors=True)

    times = {name: phase_times(collected[name]) for name in names}
    ref = times[names[0]]["time_epoch"]
    print(
        f"Cost per SSSL epoch, {n_train} training segments, SmallCNN, local mode, "
        f"{epochs} epochs ({base.warmup_epochs} warm-up), {repeats} runs per arm "
        f"(medians of {len(collected[names[0]])} epochs)"
    )
    print(
        f"{'arm':<70} {'epoch s':>8} {'ratio':>6} {'loss':>6} {'gmm':>6} {'train':>6} "
        f"{'rest':>6} {'X':>5} {'first+':>7}"
    )
    for name in names:
        t = times[name]
        print(
            f"{name:<70} {t['time_epoch']:8.2f} {t['time_epoch'] / ref:6.2f} "
            f"{t['time_loss_pass']:6.2f} {t['time_gather_gmm']:6.2f} {t['time_train']:6.2f} "
            f"{t['rest']:6.2f} {t['clean_fraction']:5.2f} "
            f"{np.median(first[name]) - t['time_epoch']:7.2f}"
        )
    return {name: times[name]["time_epoch"] / ref for name in names}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--songs", type=int, default=60)
    p.add_argument("--epochs", type=int, default=7)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--split", action="store_true", help="the split's candidates instead")
    a = p.parse_args()
    main(a.songs, a.epochs, a.repeats, SPLIT_ARMS if a.split else None)
