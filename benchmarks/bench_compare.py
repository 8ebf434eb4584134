"""The main job's comparison with and without the shared warm-up, side by side in one run.

The main job's settings (120 songs, 5 folds, 6 epochs of which 2 warm-up, the three default
arms, local-mode folds): two `sssl compare` processes started at the same moment on the same
shards, one training the arms' identical warm-ups once, the other training every arm's own
(`--no-shared-warmup`), one fold at a time each. Running them together, not one after the
other, gives both the same machine: a drift in its speed (these machines are shared) slows
both alike. Prints both wall times, their ratio, the epochs each trained, and whether the two
comparisons are identical (they must be). Cost: about 25 min on 2 cores.

    python benchmarks/bench_compare.py [--songs 120] [--folds 5] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(
            line.split(":", 1)[1].strip() for line in out.splitlines() if "Model name" in line
        )
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def epochs_trained(out: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in out.glob("**/progress.jsonl"))


def main(songs: int, folds: int, work: Path) -> dict[str, float]:
    import ray

    from shards.synth import SynthConfig
    from shards.write import shard_synthetic

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    shards = shard_synthetic(work / "corpus", work / "shards", SynthConfig(n_songs=songs, seed=0))
    ray.shutdown()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs, t0 = {}, time.perf_counter()
    for name, extra in (("shared", []), ("alone", ["--no-shared-warmup"])):
        shutil.rmtree(work / name, ignore_errors=True)
        cmd = [sys.executable, "-m", "sssl_dist", "compare", "--shards", str(shards.root),
               "--out", str(work / name), "--workers", "0", "--parallel", "1",
               "--folds", str(folds), "--set", "epochs=6", "warmup_epochs=2", *extra]  # fmt: skip
        log = (work / f"{name}.log").open("w")
        procs[name] = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    seconds = {}
    while len(seconds) < len(procs):
        for name, proc in procs.items():
            if name not in seconds and proc.poll() is not None:
                if proc.returncode:
                    raise RuntimeError(f"{name} exited {proc.returncode}: see {work}/{name}.log")
                seconds[name] = time.perf_counter() - t0
        time.sleep(1)
    read = lambda name: json.loads((work / name / "comparison.json").read_text())["tasks"]  # noqa: E731
    ratio = seconds["shared"] / seconds["alone"]
    print(f"\nCPU: {cpu_name()}; {songs} songs, {folds} folds x 3 arms, 6 epochs (2 warm-up)")
    print("| run (started together, one fold at a time each) | wall time | epochs | ratio |")
    print("|---|---|---|---|")
    for name, label in (("alone", "every arm trains its own warm-up"),
                        ("shared", "identical warm-ups trained once")):  # fmt: skip
        print(f"| {label} | {seconds[name] / 60:.1f} min | {epochs_trained(work / name)} | "
              f"{seconds[name] / seconds['alone']:.2f} |")  # fmt: skip
    print(f"identical comparisons: {read('shared') == read('alone')}")
    return {**seconds, "ratio": ratio}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--songs", type=int, default=120)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    main(a.songs, a.folds, a.out or Path(tempfile.mkdtemp(prefix="bench-compare-")))
