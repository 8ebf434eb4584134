"""Cross-validation wall time: folds one after another against folds in parallel under Tune.

The same k folds of the same configuration, 1 Ray Train worker (1 CPU) per fold, in one run:
sequentially with `run_fold`, then as Tune trials (`sssl tune` machinery), as many at once as
there are CPUs. On 2 cores the ideal ratio is 2x; the fixed per-fit cost (TorchTrainer start,
final prediction) and the shared memory bandwidth take some of it back.

    python benchmarks/bench_cv.py [--songs 48] [--folds 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import yaml

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def main(songs: int = 48, folds: int = 4, epochs: int = 3) -> dict[str, float]:
    import ray

    from shards.synth import SynthConfig
    from shards.write import shard_synthetic
    from sssl_dist.config import SSSLConfig
    from sssl_dist.fold import run_fold
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
    for fold in range(folds):
        run_fold(cfg, shards, fold, storage_path=work / "seq", name=f"f{fold}", workers=1)
    t_seq = time.perf_counter() - t0

    space = work / "space.yaml"
    space.write_text(
        yaml.safe_dump({"search": "grid", "folds": "all", "params": {"tau": [cfg.tau]}})
    )
    t0 = time.perf_counter()
    run_sweep(space, cfg, work / "shards", work / "tune", workers=1, max_concurrent=cores)
    t_par = time.perf_counter() - t0
    shutil.rmtree(work, ignore_errors=True)
    print(f"{folds}-fold CV, {songs} songs, {epochs} epochs, 1 worker per fold, {cores} cores")
    print(
        f"  sequential {t_seq:.0f} s, fold-parallel under Tune {t_par:.0f} s "
        f"-> {t_seq / t_par:.2f}x (ideal {cores}x)"
    )
    return {"sequential_s": t_seq, "parallel_s": t_par, "speedup": t_seq / t_par, "cores": cores}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--songs", type=int, default=48)
    p.add_argument("--folds", type=int, default=4)
    p.add_argument("--epochs", type=int, default=3)
    a = p.parse_args()
    main(a.songs, a.folds, a.epochs)
