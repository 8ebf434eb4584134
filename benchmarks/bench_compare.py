"""The main job's comparison with and without the shared warm-up, side by side in one run.

The main job's settings (120 songs, 5 folds, 6 epochs of which 2 warm-up, three arms, local-
mode folds 2 at a time): `sssl compare` once with the arms' identical warm-ups trained once,
once with every arm training its own, on the same shards. Prints both wall times, their
ratio, and whether the two comparisons are identical (they must be). Cost: about two main
jobs, some 12 min on 2 cores.

    python benchmarks/bench_compare.py [--songs 120] [--folds 5] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(
            line.split(":", 1)[1].strip() for line in out.splitlines() if "Model name" in line
        )
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def main(songs: int, folds: int, out: Path | None) -> dict[str, float]:
    import ray

    from shards.synth import SynthConfig
    from shards.write import shard_synthetic
    from sssl_dist.compare import Design, default_arms, run_comparison
    from sssl_dist.config import SSSLConfig

    work = out or Path(tempfile.mkdtemp(prefix="bench-compare-"))
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    shards = shard_synthetic(work / "corpus", work / "shards", SynthConfig(n_songs=songs, seed=0))
    base = SSSLConfig(n_folds=folds, epochs=6, warmup_epochs=2)
    design = Design(default_arms(), (base.task,), folds)
    seconds, tables = {}, {}
    for name, share in (("shared", True), ("alone", False)):
        shutil.rmtree(work / name, ignore_errors=True)
        t0 = time.perf_counter()
        comparison = run_comparison(
            base, shards, work / name, design, workers=0, parallel=2, share_warmup=share
        )
        seconds[name] = time.perf_counter() - t0
        tables[name] = json.dumps(comparison["tasks"], sort_keys=True)
    ratio = seconds["shared"] / seconds["alone"]
    print(
        f"\nCPU: {cpu_name()}, {songs} songs, {folds} folds x 3 arms, 2 local-mode folds at a time"
    )
    print("| run | wall time | ratio |\n|---|---|---|")
    print(f"| every arm trains its own warm-up | {seconds['alone'] / 60:.1f} min | 1.00 |")
    print(f"| identical warm-ups trained once | {seconds['shared'] / 60:.1f} min | {ratio:.2f} |")
    print(f"identical comparisons: {tables['shared'] == tables['alone']}")
    return {**seconds, "ratio": ratio}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--songs", type=int, default=120)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    main(a.songs, a.folds, a.out)
