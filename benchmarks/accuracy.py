"""Accuracy on the ground-truth corpus: does SSSL beat inherited labels, and does the GMM find
the wrong labels? Every cell is a full cross-validation through the real system (Ray Train,
Eq. 10 + SVM), on identical folds for every method, so differences are paired.

For each mislabelled share (corpus excursion fraction) x task x segment length x split mode:
song-level accuracy/F1 of inherit, sssl-nokl, sssl (mean ± std over folds), majority-class and
majority-vote baselines, validation segment accuracy against the true per-second labels, the
GMM's noise-detection ROC-AUC / precision / recall of U (last epoch), and the paired
difference sssl - inherit with its t statistic over folds.

    python benchmarks/accuracy.py --songs 300 --folds 10 --tasks quadrant valence arousal \\
        --lengths 1 3 5 --noise 0.1 0.25 0.4 --splits per_class global     # hours on 2 cores
    python benchmarks/accuracy.py --songs 200 --folds 5 --epochs 8          # ~25 min
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TQDM_DISABLE", "1")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--songs", type=int, default=200)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--tasks", nargs="+", default=["quadrant"])
    p.add_argument("--lengths", nargs="+", type=int, default=[3])
    p.add_argument("--methods", nargs="+", default=["inherit", "sssl-nokl", "sssl"])
    p.add_argument("--splits", nargs="+", default=["per_class"])
    p.add_argument("--noise", nargs="+", type=float, default=[0.30])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="runs/bench-accuracy")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("ray").setLevel(logging.WARNING)

    import ray

    from shards.datasets import load_dataset
    from shards.synth import SynthConfig, generate_corpus
    from shards.write import shard_dataset
    from sssl_dist.config import SSSLConfig
    from sssl_dist.cv import paired_difference, run_cv

    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    t0 = time.perf_counter()
    for noise in a.noise:
        data = out / f"data-noise{noise}"
        generate_corpus(
            data / "corpus", SynthConfig(n_songs=a.songs, excursion_fraction=noise), progress=False
        )
        records, _, truth = load_dataset("synthetic", data / "corpus")
        shard_dataset(records, data / "shards", truth=truth, progress=False)
        for task in a.tasks:
            for length in a.lengths:
                for split in a.splits:
                    for method in a.methods:
                        if method == "inherit" and split != a.splits[0]:
                            continue  # inherit never splits: run it once per cell
                        key = f"noise={noise} task={task} L={length} split={split} method={method}"
                        if key in results:
                            continue  # resumable: finished cells are kept
                        cfg = SSSLConfig(
                            method=method,
                            task=task,
                            segment_seconds=length,
                            split=split,
                            n_folds=a.folds,
                            epochs=a.epochs,
                            warmup_epochs=a.warmup,
                        )
                        s = run_cv(
                            cfg,
                            data / "shards",
                            out / key.replace(" ", "_").replace("=", "-"),
                            workers=a.workers,
                        )
                        results[key] = {"metrics": s["metrics"], "per_fold": s["per_fold"]}
                        results_path.write_text(json.dumps(results, default=float))
                        logging.info(
                            "%s: test acc %.3f (%.0f min so far)",
                            key,
                            s["metrics"]["test_acc"]["mean"],
                            (time.perf_counter() - t0) / 60,
                        )
    write_summary(out, results, a, paired_difference)


def write_summary(out: Path, results: dict, a, paired_difference) -> None:
    pct = lambda m, k: f"{100 * m[k]['mean']:.1f} ± {100 * m[k]['std']:.1f}" if k in m else "—"  # noqa: E731
    lines = [
        f"# Accuracy benchmark: {a.songs} songs, {a.folds}-fold CV, {a.epochs} epochs "
        f"({a.warmup} warm-up), {a.workers} workers",
        "",
        "| mislabelled share | task | L | split | method | test acc | test F1 | vote acc | "
        "majority | seg acc (truth) | noise AUC | prec U | recall U |",
        "|---" * 13 + "|",
    ]
    for key, r in results.items():
        f = dict(kv.split("=") for kv in key.split())
        m = r["metrics"]
        lines.append(
            f"| {f['noise']} | {f['task']} | {f['L']} | {f['split']} | {f['method']} | "
            f"{pct(m, 'test_acc')} | {pct(m, 'test_f1')} | {pct(m, 'test_vote_acc')} | "
            f"{pct(m, 'test_majority_acc')} | {pct(m, 'val_seg_acc_truth')} | "
            f"{pct(m, 'noise_auc')} | {pct(m, 'noise_precision')} | {pct(m, 'noise_recall')} |"
        )
    lines += [
        "",
        "Paired over identical folds (points of test accuracy; t = mean / (std / sqrt(k))):",
        "",
    ]
    for key, r in results.items():
        if "method=sssl" not in key or "method=sssl-" in key:
            continue
        base_key = key.replace("method=sssl", "method=inherit")
        base_key = " ".join(
            kv if not kv.startswith("split=") else f"split={a.splits[0]}" for kv in base_key.split()
        )
        if base_key in results:
            d = paired_difference(_folds(results[base_key]), _folds(r))
            lines.append(
                f"- {key.replace(' method=sssl', '')}: sssl - inherit = "
                f"{100 * d['mean']:+.1f} (std {100 * d['std']:.1f}, t = {d['t']:.2f})"
            )
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _folds(r: dict) -> dict:
    return {"per_fold": {int(k): v for k, v in r["per_fold"].items()}}


if __name__ == "__main__":
    main()
