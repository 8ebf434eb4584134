"""Small measurements that BENCHMARKS.md quotes beside the big benchmarks.

    python dev/probes.py imports          # private memory that each import adds
    python dev/probes.py batches --shards runs/demo-par/data/shards
    python dev/probes.py paired --results benchmarks/results/eval-epoch/results.json \\
        --a "targets=inherited set=- eval=best_val method=sssl" \\
        --b "targets=refined set=- eval=best_val method=sssl" --metric last_epoch_test_acc
    python dev/probes.py pooled --results benchmarks/results/grid5/results.json \\
        benchmarks/results/grid10/results.json --a split_network=current \\
        --b split_network=best_val --where "selection=epoch_loss set=- eval=best_val method=sssl" \\
        --metric test_acc
    python dev/probes.py curves --run-dir runs/bench-cos --warmup 3
    python dev/probes.py gmm-caps         # ~1 min
    python dev/probes.py layout           # ~1 min
    python dev/probes.py oos-auc --run-dir runs/grid10 \\
        --shards runs/grid10/data-noise0.3/shards
    python dev/probes.py heap --shards runs/grid10/data-noise0.3/shards   # ~3 min

- imports: PSS anon of this process after importing torch + scikit-learn, then Ray Train,
  then our modules: the floor of every fold's process (bench_memory.py).
- batches: ms to cut a batch of 64 segments from the memory-mapped mel cache against from
  contiguous in-memory copies of the same mels.
- paired: one metric of two accuracy.py cells (keys chosen by a part of the key), fold by
  fold: b - a, its t and win counts (`--metric-b`: another metric for cell b).
- pooled: `paired` over many cells at once: every cell whose key holds `--b` and each part
  of `--where`, against the cell with `--b` replaced by `--a` (same corpus, same folds), in
  one or more results files. Prints each pair and the fold differences of all pairs pooled
  (mean, t, win counts): one option against another across a whole grid.
- curves: for every cell directory of an accuracy.py run, segment accuracy against the truth
  at the warm-up peak, at the last epoch, and at the best validation epoch after warm-up
  (read from the fold histories; no training).
- gmm-caps: at 10^7 losses (bench_gmm.py's vector), the share of segments whose clean/noisy
  assignment changes when EM sees a subsample of `gmm_max_fit` losses instead of all, and the
  seconds of the split, for several caps.
- oos-auc: for every cell directory of an accuracy.py run, how well each fold's evaluated
  network ranks the wrong inherited labels by 1 - p(inherited label), on its training songs
  (in sample, what the GMM sees) and on its test songs (out of sample: a network that never
  trained on the song), against the truth; read from songs.json, no training. The test-song
  figure is what out-of-sample scoring could reach with a network of this quality.
- heap: where a local fold's private memory goes. One fold's first epochs in a fresh process
  (warm-up, loss pass, SSSL epoch), its anonymous memory after each, and after glibc's
  malloc_trim; twice: with glibc's default allocator settings and with a fixed 1 MB mmap
  threshold (MALLOC_MMAP_THRESHOLD_), which hands every large freed buffer back at once.
- layout: seconds of a small-CNN training step (batch 64, L = 3 s, one torch thread) and of an
  eval forward pass (batch 128), NCHW against channels-last, interleaved; median ratio.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _anon_mb() -> float:
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss_Anon"):
            return int(line.split()[1]) / 1024
    return float("nan")


def imports() -> None:
    print(f"bare Python: {_anon_mb():.0f} MB")
    import scipy  # noqa: F401
    import sklearn.svm  # noqa: F401
    import torch  # noqa: F401

    print(f"+ torch, scikit-learn: {_anon_mb():.0f} MB")
    import ray.train.torch  # noqa: F401

    print(f"+ Ray Train: {_anon_mb():.0f} MB")
    import matplotlib.pyplot  # noqa: F401

    import sssl_dist.driver.fold  # noqa: F401
    import sssl_dist.driver.parallel  # noqa: F401
    import sssl_dist.outputs.report  # noqa: F401

    print(f"+ sssl_dist and matplotlib: {_anon_mb():.0f} MB")


def batches(shards: str, n: int = 200) -> None:
    from sssl_dist.data.segments import SegmentBatcher, SegmentTable, ShardSet

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
    from sssl_dist.outputs.stats import paired_difference

    cells = json.loads(Path(results).read_text())

    def one(part: str, metric: str) -> dict:
        found = [k for k in cells if part in k]
        if len(found) != 1:
            raise SystemExit(f"{part!r} matches {len(found)} cells, not 1: {found}")
        return _metric_by_fold(cells[found[0]], metric)

    ca, cb = one(a, metric), one(b, metric_b or metric)
    d = paired_difference(ca, cb, "v")
    mean = lambda c: np.mean([r["v"] for r in c["per_fold"].values()])  # noqa: E731
    print(
        f"{metric} / {metric_b or metric}: a {mean(ca):.3f}, b {mean(cb):.3f}, "
        f"b - a {d['mean']:+.3f} (t {d['t']:.2f}, better on {d['better']}/{d['folds']}, "
        f"worse on {d['worse']})"
    )


def _metric_by_fold(cell: dict, metric: str) -> dict:
    """One metric of a results.json cell, fold by fold, as `paired_difference` takes it ("v")."""
    return {"per_fold": {f: {"v": r[metric]} for f, r in cell["per_fold"].items()}}


def pooled(results: list[str], a: str, b: str, where: str, metric: str) -> None:
    from sssl_dist.outputs.stats import paired_difference

    parts = [b, *where.split()]
    pool_a: dict[str, dict] = {}
    pool_b: dict[str, dict] = {}
    for path in results:
        cells = json.loads(Path(path).read_text())
        for key in sorted(k for k in cells if all(part in k.split() for part in parts)):
            base = " ".join(a if part == b else part for part in key.split())
            if base not in cells:
                continue
            ca, cb = (_metric_by_fold(cells[k], metric) for k in (base, key))
            d = paired_difference(ca, cb, "v")
            cell = " ".join(
                p for p in key.split() if p.split("=")[0] in ("folds", "noise", "task", "L")
            )
            print(f"{cell}: b - a {d['mean']:+.3f} (t {d['t']:.2f}, {d['better']} / {d['worse']})")
            for pool, c in ((pool_a, ca), (pool_b, cb)):  # one id per file, cell and fold
                pool.update({f"{path} {key} {f}": r for f, r in c["per_fold"].items()})
    d = paired_difference({"per_fold": pool_a}, {"per_fold": pool_b}, "v")
    print(
        f"pooled {metric}, {d['folds']} fold pairs: b - a {d['mean']:+.3f} (t {d['t']:.2f}, "
        f"better on {d['better']}, worse on {d['worse']})"
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


def gmm_caps(caps: tuple[int, ...] = (10**6, 5 * 10**5, 2 * 10**5, 10**5)) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from bench_gmm import losses

    from sssl_dist.method.equations import split_clean_noisy

    rng = np.random.default_rng(0)
    n = 10**7
    x, labels = losses(n, rng), rng.integers(0, 4, n)
    full = split_clean_noisy(x, labels, num_classes=4, tau=0.5)
    for cap in caps:
        t0 = time.perf_counter()
        s = split_clean_noisy(x, labels, num_classes=4, tau=0.5, max_fit=cap)
        dt = time.perf_counter() - t0
        differ = float((s.clean_mask != full.clean_mask).mean())
        dw = float(np.abs(s.clean_prob - full.clean_prob).max())
        print(f"cap {cap:>9,}: {dt:5.2f} s, masks differ {differ:.4%}, largest |dw| {dw:.4f}")


def oos_auc(run_dir: str, shard_dir: str) -> None:
    import yaml
    from sklearn.metrics import roc_auc_score

    from sssl_dist.data.segments import SegmentTable, ShardSet

    by_id = ShardSet(shard_dir).by_id
    for cell in sorted(p for p in Path(run_dir).iterdir() if (p / "fold-0").is_dir()):
        cfg = yaml.safe_load((cell / "config.yaml").read_text())
        rows = []
        for fold in sorted(cell.glob("fold-*/songs.json")):
            probs = json.loads(fold.read_text())
            ids = json.loads((fold.parent / "fold_ids.json").read_text())
            history = json.loads((fold.parent / "history.json").read_text())
            row = []
            for part in ("train", "test"):
                score, wrong = [], []
                for sid in ids[part]:
                    t = SegmentTable.build(
                        [by_id[sid]], cfg["task"], cfg["segment_seconds"], cfg["hop_seconds"]
                    )
                    p = np.asarray(probs[sid])
                    score.append(1 - p[np.arange(len(t)), t.label])
                    wrong.append(t.wrong)
                row.append(roc_auc_score(np.concatenate(wrong), np.concatenate(score)))
            row.append(history[-1].get("noise_auc", float("nan")))
            rows.append(row)
        (i_m, o_m, g_m), (i_s, o_s, g_s) = np.nanmean(rows, 0), np.nanstd(rows, 0, ddof=1)
        print(
            f"{cell.name}: AUC of 1 - p(label), evaluated network, {len(rows)} folds: "
            f"training songs {i_m:.3f} ± {i_s:.3f}, test songs {o_m:.3f} ± {o_s:.3f}; "
            f"last epoch's GMM split {g_m:.3f} ± {g_s:.3f}"
        )


def heap_stages(shards: str) -> None:
    """The child of `heap`: one fold's first epochs, memory after each stage."""
    import ctypes

    import torch

    from sssl_dist.config import SSSLConfig
    from sssl_dist.data.folds import fold_song_ids
    from sssl_dist.data.segments import ShardSet
    from sssl_dist.method.equations import LossMemory
    from sssl_dist.method.split import fit_split
    from sssl_dist.rank.epoch import loss_pass, train_epoch
    from sssl_dist.rank.train import build_worker

    torch.set_num_threads(1)
    shard_set = ShardSet(shards)
    cfg = SSSLConfig(n_folds=10, epochs=4, warmup_epochs=1)
    w, _, _ = build_worker(cfg, shard_set, fold_song_ids(shard_set, cfg, 0))
    table = w.table
    stages = {"imports + data + model": _anon_mb()}
    train_epoch(w, None, 0)
    stages["warm-up epoch"] = _anon_mb()
    losses = loss_pass(w)
    stages["loss pass"] = _anon_mb()
    split, _ = fit_split(cfg, table, losses.numpy(), [len(table)], 1, LossMemory.empty(len(table)))
    t0 = time.perf_counter()
    train_epoch(w, split.clean_w, 1)
    seconds = time.perf_counter() - t0
    stages["SSSL epoch"] = _anon_mb()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    stages["malloc_trim"] = _anon_mb()
    peak = next(
        int(line.split()[1]) / 1024
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("VmHWM")
    )
    print(
        ", ".join(f"{k} {v:.0f} MB" for k, v in stages.items())
        + f"; peak RSS {peak:.0f} MB; the SSSL epoch took {seconds:.1f} s"
    )


def heap(shards: str) -> None:
    import os
    import subprocess
    import sys

    for label, extra in (
        ("glibc defaults", {}),
        ("MALLOC_MMAP_THRESHOLD_=1 MB", {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}),
    ):
        print(f"{label}:")
        cmd = [sys.executable, __file__, "heap-stages", "--shards", shards]
        subprocess.run(cmd, env={**os.environ, **extra}, check=True)


def layout(repeats: int = 15) -> None:
    import torch

    from sssl_dist.method.models import SmallCNN, build_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    nets = {"nchw": SmallCNN(4), "channels_last": build_model("small_cnn", 4, 0.5)}
    opts = {k: torch.optim.Adam(m.parameters()) for k, m in nets.items()}
    x, xe = torch.randn(64, 1, 128, 129), torch.randn(128, 1, 128, 129)
    times: dict[str, list[float]] = {f"{k} {w}": [] for k in nets for w in ("step", "eval")}
    for _ in range(repeats):
        for k, net in nets.items():
            net.train()
            t0 = time.perf_counter()
            net(x).logsumexp(-1).mean().backward()
            opts[k].step()
            opts[k].zero_grad()
            times[f"{k} step"].append(time.perf_counter() - t0)
            net.eval()
            with torch.no_grad():
                t0 = time.perf_counter()
                net(xe)
                times[f"{k} eval"].append(time.perf_counter() - t0)
    med = {k: float(np.median(v[2:])) for k, v in times.items()}  # first two: warm-up
    for what in ("step", "eval"):
        a, b = med[f"nchw {what}"], med[f"channels_last {what}"]
        print(f"{what}: NCHW {1000 * a:.0f} ms, channels-last {1000 * b:.0f} ms ({b / a:.2f}x)")


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
    s = sub.add_parser("pooled")
    s.add_argument("--results", nargs="+", required=True)
    for name in ("--a", "--b", "--metric"):
        s.add_argument(name, required=True)
    s.add_argument("--where", default="", help="further key parts every cell must hold")
    s = sub.add_parser("curves")
    s.add_argument("--run-dir", required=True)
    s.add_argument("--warmup", type=int, default=3)
    sub.add_parser("gmm-caps")
    sub.add_parser("layout")
    for name in ("heap", "heap-stages"):
        s = sub.add_parser(name)
        s.add_argument("--shards", required=True)
    s = sub.add_parser("oos-auc")
    s.add_argument("--run-dir", required=True)
    s.add_argument("--shards", required=True)
    a = p.parse_args()
    if a.probe == "imports":
        imports()
    elif a.probe == "batches":
        batches(a.shards)
    elif a.probe == "paired":
        paired(a.results, a.a, a.b, a.metric, a.metric_b)
    elif a.probe == "pooled":
        pooled(a.results, a.a, a.b, a.where, a.metric)
    elif a.probe == "gmm-caps":
        gmm_caps()
    elif a.probe == "layout":
        layout()
    elif a.probe == "heap":
        heap(a.shards)
    elif a.probe == "heap-stages":
        heap_stages(a.shards)
    elif a.probe == "oos-auc":
        oos_auc(a.run_dir, a.shards)
    else:
        curves(a.run_dir, a.warmup)
