"""Small measurements that BENCHMARKS.md quotes beside the big benchmarks (issues 11 and 12).

    python benchmarks/probes.py imports          # private memory that each import adds
    python benchmarks/probes.py batches --shards runs/demo-par/data/shards
    python benchmarks/probes.py paired --results benchmarks/results/eval-epoch/results.json \\
        --a "targets=inherited set=- eval=best_val method=sssl" \\
        --b "targets=refined set=- eval=best_val method=sssl" --metric last_epoch_test_acc
    python benchmarks/probes.py curves --run-dir runs/bench-cos --warmup 3

- imports: PSS anon of this process after importing torch + scikit-learn, then Ray Train,
  then our modules: the floor of every fold's process (bench_memory.py).
- batches: ms to cut a batch of 64 segments from the memory-mapped mel cache against from
  contiguous in-memory copies of the same mels.
- paired: one metric of two accuracy.py cells (keys chosen by a part of the key), fold by
  fold: b - a, its t and win counts (`--metric-b`: another metric for cell b).
- curves: for every cell directory of an accuracy.py run, segment accuracy against the truth
  at the warm-up peak, at the last epoch, and at the best validation epoch after warm-up
  (read from the fold histories; no training).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def imports() -> None:
    def anon_mb() -> float:
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss_Anon"):
                return int(line.split()[1]) / 1024
        return float("nan")

    print(f"bare Python: {anon_mb():.0f} MB")
    import scipy  # noqa: F401
    import sklearn.svm  # noqa: F401
    import torch  # noqa: F401

    print(f"+ torch, scikit-learn: {anon_mb():.0f} MB")
    import ray.train.torch  # noqa: F401

    print(f"+ Ray Train: {anon_mb():.0f} MB")
    import matplotlib.pyplot  # noqa: F401

    import sssl_dist.fold  # noqa: F401
    import sssl_dist.parallel  # noqa: F401
    import sssl_dist.report  # noqa: F401

    print(f"+ sssl_dist and matplotlib: {anon_mb():.0f} MB")


def batches(shards: str, n: int = 200) -> None:
    from sssl_dist.data import SegmentBatcher, SegmentTable, ShardSet

    shard_set = ShardSet(shards)
    table = SegmentTable.build(shard_set.songs, "quadrant", 3)
    mapped = shard_set.load_mels()
    contiguous = {k: np.ascontiguousarray(v) for k, v in mapped.items()}
    rng = np.random.default_rng(0)
    picks = [rng.choice(len(table), 64, replace=False) for _ in range(n)]
    for name, mels in (("mapped", mapped), ("contiguous", contiguous)) * 2:
        batcher = SegmentBatcher(table, mels, shard_set.feature_config)
        t = time.perf_counter()
        for idx in picks:
            batcher.inputs(idx)
        print(f"{name}: {(time.perf_counter() - t) / n * 1e3:.2f} ms a batch of 64")


def paired(results: str, a: str, b: str, metric: str, metric_b: str | None = None) -> None:
    from sssl_dist.stats import paired_difference

    cells = json.loads(Path(results).read_text())

    def one(part: str, metric: str) -> dict:
        found = [k for k in cells if part in k]
        if len(found) != 1:
            raise SystemExit(f"{part!r} matches {len(found)} cells, not 1: {found}")
        return {"per_fold": {f: {"v": r[metric]} for f, r in cells[found[0]]["per_fold"].items()}}

    ca, cb = one(a, metric), one(b, metric_b or metric)
    d = paired_difference(ca, cb, "v")
    mean = lambda c: np.mean([r["v"] for r in c["per_fold"].values()])  # noqa: E731
    print(
        f"{metric} / {metric_b or metric}: a {mean(ca):.3f}, b {mean(cb):.3f}, "
        f"b - a {d['mean']:+.3f} (t {d['t']:.2f}, better on {d['better']}/{d['folds']}, "
        f"worse on {d['worse']})"
    )


def curves(run_dir: str, warmup: int) -> None:
    for cell in sorted(p for p in Path(run_dir).iterdir() if (p / "fold-0").is_dir()):
        rows = []
        for history in sorted(cell.glob("fold-*/history.json")):
            h = json.loads(history.read_text())
            truth = [e["val_seg_acc_truth"] for e in h]
            val = [e["val_seg_acc"] for e in h]
            after = max(range(warmup, len(h)), key=lambda i: (val[i], i))  # ties: later
            rows.append((max(truth[:warmup]), truth[-1], truth[after]))
        peak, last, best = np.mean(rows, axis=0)
        print(
            f"{cell.name}: warm-up peak {peak:.3f}, last {last:.3f}, best validation epoch "
            f"after warm-up {best:.3f} ({len(rows)} folds)"
        )


if __name__ == "__main__":
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="probe", required=True)
    sub.add_parser("imports")
    s = sub.add_parser("batches")
    s.add_argument("--shards", required=True)
    s = sub.add_parser("paired")
    for name in ("--results", "--a", "--b", "--metric"):
        s.add_argument(name, required=True)
    s.add_argument("--metric-b", help="cell b's metric, when it differs (e.g. last_epoch_*)")
    s = sub.add_parser("curves")
    s.add_argument("--run-dir", required=True)
    s.add_argument("--warmup", type=int, default=3)
    a = p.parse_args()
    if a.probe == "imports":
        imports()
    elif a.probe == "batches":
        batches(a.shards)
    elif a.probe == "paired":
        paired(a.results, a.a, a.b, a.metric, a.metric_b)
    else:
        curves(a.run_dir, a.warmup)
