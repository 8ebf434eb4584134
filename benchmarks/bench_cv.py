"""Cross-validation wall time, and the fixed cost of one more unit, in one run.

The same k folds of the same configuration, one CPU per fold:
- sequential: one TorchTrainer with 1 Ray Train worker per fold, one fold after another;
- Tune: the same folds as Tune trials (`sssl tune` machinery), as many at once as cores;
- parallel local: `sssl train --parallel <cores> --workers 0`, each fold a Ray task that trains
  in its own process (parallel.py); Ray reuses a finished task's process for the next fold.
On 2 cores the ideal ratio is 2x; fixed per-fit costs and shared memory bandwidth take some back.

Fixed cost of a unit = its wall time minus its epochs' time: for a TorchTrainer fit (start of
controller and worker processes, gloo, final prediction, shutdown) and for a local-mode fold in
an already warm process (the second of two in this process).

    python benchmarks/bench_cv.py [--songs 48] [--folds 4]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml


def main(songs: int = 48, folds: int = 4, epochs: int = 3) -> dict[str, float]:
    import ray

    from shards.synth import SynthConfig
    from shards.write import shard_synthetic
    from sssl_dist.config import SSSLConfig
    from sssl_dist.driver.parallel import run_folds_parallel
    from sssl_dist.driver.run import run_fold
    from tuning.sweep import run_sweep

    work = Path(tempfile.mkdtemp(prefix="bench-cv-"))
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    cores = int(ray.cluster_resources()["CPU"])
    shards = shard_synthetic(
        work / "corpus", work / "shards", SynthConfig(n_songs=songs, seed=3), progress=False
    )
    cfg = SSSLConfig(epochs=epochs, warmup_epochs=1, n_folds=folds)

    t0 = time.perf_counter()
    fixed_trainer = []
    for fold in range(folds):
        t1 = time.perf_counter()
        run = run_fold(cfg, shards, fold, storage_path=work / "seq", name=f"f{fold}", workers=1)
        fixed_trainer.append(time.perf_counter() - t1 - _epochs_s(run))
    t_seq = time.perf_counter() - t0

    space = work / "space.yaml"
    space.write_text(yaml.safe_dump({"folds": "all", "params": {"tau": [cfg.tau]}}))
    t0 = time.perf_counter()
    run_sweep(space, cfg, work / "shards", work / "tune", workers=1, max_concurrent=cores)
    t_tune = time.perf_counter() - t0

    t0 = time.perf_counter()
    names = {f: f"p{f}" for f in range(folds)}
    done = run_folds_parallel(
        cfg, shards, list(range(folds)), storage_path=work / "par", names=names, parallel=cores
    )
    assert sorted(f for f, _ in done) == list(range(folds))
    t_par = time.perf_counter() - t0

    fixed_local = []
    for fold in range(2):  # the second unit runs in a process that has run one already
        t1 = time.perf_counter()
        run = run_fold(cfg, shards, fold, storage_path=work / "loc", name=f"l{fold}", workers=0)
        fixed_local.append(time.perf_counter() - t1 - _epochs_s(run))
    shutil.rmtree(work, ignore_errors=True)
    figures = {
        "sequential_s": t_seq,
        "tune_s": t_tune,
        "parallel_s": t_par,
        "speedup_tune": t_seq / t_tune,
        "speedup": t_seq / t_par,
        "cores": cores,
        "fixed_trainer_s": float(np.median(fixed_trainer)),
        "fixed_local_first_s": fixed_local[0],
        "fixed_local_next_s": fixed_local[1],
    }
    print_figures(figures, songs, folds, epochs)
    return figures


def print_figures(f: dict[str, float], songs: int, folds: int, epochs: int) -> None:
    t_seq, t_tune, t_par, cores = f["sequential_s"], f["tune_s"], f["parallel_s"], f["cores"]
    print(f"{folds}-fold CV, {songs} songs, {epochs} epochs, 1 CPU per fold, {cores} cores")
    print(
        f"  sequential (TorchTrainer, 1 worker) {t_seq:.0f} s; fold-parallel under Tune "
        f"{t_tune:.0f} s -> {t_seq / t_tune:.2f}x; fold-parallel local-mode tasks {t_par:.0f} s "
        f"-> {t_seq / t_par:.2f}x (ideal {cores}x)"
    )
    print(
        f"  fixed cost per unit: TorchTrainer fit {f['fixed_trainer_s']:.1f} s (median of "
        f"{folds}); local-mode fold, first in its process {f['fixed_local_first_s']:.1f} s, next "
        f"{f['fixed_local_next_s']:.1f} s"
    )


def _epochs_s(run) -> float:
    return sum(h["time_epoch"] for h in run.history)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--songs", type=int, default=48)
    p.add_argument("--folds", type=int, default=4)
    p.add_argument("--epochs", type=int, default=3)
    a = p.parse_args()
    main(a.songs, a.folds, a.epochs)
