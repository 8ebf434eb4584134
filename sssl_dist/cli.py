"""`sssl`: the command line. Each subcommand is one stage; `demo` runs the main job end to end.

Every subcommand has --smoke (a tiny, real, end-to-end run for CI) and exits non-zero on
failure with a one-line error. Ray starts in-process unless RAY_ADDRESS points at a cluster
(as it does inside `ray job submit`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("sssl")

SMOKE_TRAIN = {"epochs": 2, "warmup_epochs": 1, "batch_size": 16, "n_folds": 2}
# `sssl predict --smoke`: the first 2 files, the first 30 s of each.
SMOKE_PREDICT_FILES, SMOKE_PREDICT_SECONDS = 2, 30.0


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname).1s %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("ray", "filelock", "matplotlib", "urllib3", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _init_ray(num_cpus: int | None = None) -> None:
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    t0 = time.perf_counter()
    if address:
        ray.init(address=address, log_to_driver=False)
        log.info("connected to Ray cluster at %s", address)
    else:
        ray.init(
            num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False
        )
        log.info(
            "started Ray in-process (%.1f s, %s CPUs)",
            time.perf_counter() - t0,
            int(ray.cluster_resources().get("CPU", 0)),
        )


# ------------------------------------------------------------------------------- synth
def cmd_synth(a: argparse.Namespace) -> int:
    from shards.synth import SynthConfig, generate_corpus

    n = 12 if a.smoke else a.songs
    cfg = SynthConfig(n_songs=n, seed=a.seed, excursion_fraction=a.excursion)
    generate_corpus(Path(a.out), cfg)
    log.info("wrote %d songs + per-second ground truth to %s", n, a.out)
    return 0


# ------------------------------------------------------------------------------- shard
def cmd_shard(a: argparse.Namespace) -> int:
    from shards.datasets import load_dataset
    from shards.write import shard_dataset

    records, report, truth = load_dataset(a.dataset, Path(a.root), a.midpoint)
    report.log_summary(a.dataset)
    if a.smoke:
        records = records[:8]
    log.info("%s: %d song(s) with audio and labels", a.dataset, len(records))
    _init_ray()
    t0 = time.perf_counter()
    manifest = shard_dataset(
        records,
        Path(a.out),
        truth=truth,
        songs_per_shard=a.songs_per_shard,
        dataset=a.dataset,
        load_report=report.to_dict(),
    )
    log.info(
        "sharded %d song(s) into %d shard(s) in %.1f s (%d rejected); manifest: %s",
        len(manifest["songs"]),
        len(manifest["shards"]),
        time.perf_counter() - t0,
        len(manifest["rejects"]),
        Path(a.out) / "manifest.json",
    )
    return 0


# ------------------------------------------------------------------------------- train
def _train_config(a: argparse.Namespace):
    from sssl_dist.config import load_config, parse_overrides

    overrides: dict[str, Any] = dict(SMOKE_TRAIN) if a.smoke else {}
    overrides.update(parse_overrides(a.set or []))
    return load_config(a.config, overrides)


def _fold_list(spec: str | None, fold: int | None, n_folds: int, smoke: bool) -> list[int]:
    if fold is not None:
        if not 0 <= fold < n_folds:
            raise ValueError(f"--fold {fold} is outside 0..{n_folds - 1}")
        return [fold]
    if smoke:
        return [0]
    if spec in (None, "all"):
        return list(range(n_folds))
    folds = [int(x) for x in spec.split(",")]
    if any(not 0 <= f < n_folds for f in folds):
        raise ValueError(f"--folds must be in 0..{n_folds - 1}")
    return folds


def cmd_train(a: argparse.Namespace) -> int:
    from sssl_dist.cv import run_cv
    from sssl_dist.data import ShardSet

    cfg = _train_config(a)
    folds = _fold_list(a.folds, a.fold, cfg.n_folds, a.smoke)
    shards = ShardSet(a.shards)
    _init_ray()
    out = Path(a.out or f"runs/train-{cfg.method}-{cfg.task}-L{cfg.segment_seconds}")
    summary = run_cv(
        cfg,
        shards,
        out,
        folds=folds,
        workers=a.workers,
        use_gpu=a.gpu,
        parallel=a.parallel,
        final=a.final,
    )
    m = summary["metrics"]
    log.info(
        "%s on %d fold(s): test acc %.3f ± %.3f, F1 %.3f ± %.3f (majority class %.3f); report: %s",
        cfg.method,
        len(folds),
        m["test_acc"]["mean"],
        m["test_acc"]["std"],
        m["test_f1"]["mean"],
        m["test_f1"]["std"],
        m["test_majority_acc"]["mean"],
        out,
    )
    print(json.dumps({"report": str(out), "test_acc": m["test_acc"], "test_f1": m["test_f1"]}))
    return 0


# ------------------------------------------------------------------------------- tune
def cmd_tune(a: argparse.Namespace) -> int:
    from tuning.sweep import run_sweep

    base = _train_config(a)
    _init_ray()
    out = Path(a.out or "runs/tune")
    run_sweep(
        a.space,
        base,
        a.shards,
        out,
        workers=a.workers,
        smoke=a.smoke,
        max_concurrent=a.max_concurrent,
        cpus_per_worker=a.cpus_per_worker,
        use_gpu=a.gpu,
    )
    return 0


# ------------------------------------------------------------------------------- predict
def cmd_predict(a: argparse.Namespace) -> int:
    from sssl_dist.predict import AUDIO_SUFFIXES, find_audio, run_predict

    # `sssl predict MODEL INPUTS...` for one model; `--model M --model M2 INPUTS...` for
    # several in one pass (the audio is decoded once for all of them).
    models = a.model or a.inputs[:1]
    inputs = a.inputs if a.model else a.inputs[1:]
    if not inputs:
        raise ValueError("no inputs: give audio files, folders or a manifest CSV after the model")
    files = find_audio(inputs)
    files = files[:SMOKE_PREDICT_FILES] if a.smoke else files
    if not files:
        raise ValueError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) found in {inputs}")
    summary = run_predict(
        models,
        files,
        a.out,
        max_seconds=SMOKE_PREDICT_SECONDS if a.smoke else None,
        actors=a.actors,
        gpu=a.gpu,
        batch_files=a.batch_files,
        part_files=a.part_files,
        plots=True if a.plots else None,
        start_ray=lambda: _init_ray(a.cpus),
    )
    log.info("predictions in %s (%d of %d file(s) failed)", a.out, summary.failed, summary.files)
    return 1 if summary.failed else 0


# ------------------------------------------------------------------------------- report
def cmd_report(a: argparse.Namespace) -> int:
    from sssl_dist.cv import rebuild_report
    from sssl_dist.data import ShardSet

    rebuild_report(Path(a.run_dir), ShardSet(a.shards) if a.shards else None, plots=not a.smoke)
    log.info("report rebuilt in %s", a.run_dir)
    return 0


# ------------------------------------------------------------------------------- demo
def demo_arms() -> dict[str, dict[str, Any]]:
    """What the main job compares (issue 11): inherited labels, the paper's SSSL (its global
    split, its last epoch: configs/paper_global_split.yaml) and SSSL with our defaults."""
    from sssl_dist.config import PAPER_CONFIG, read_config_file

    return {
        "inherit": {"method": "inherit"},
        "sssl-paper": {"method": "sssl", **read_config_file(PAPER_CONFIG)},
        "sssl": {"method": "sssl"},
    }


# The paired differences the main job prints: (baseline, arm).
DEMO_PAIRS = (("inherit", "sssl"), ("inherit", "sssl-paper"), ("sssl-paper", "sssl"))


def cmd_demo(a: argparse.Namespace) -> int:
    """The main job: synth -> shard -> 3 arms x k folds -> comparison with paired t."""
    from shards.synth import SynthConfig
    from shards.write import shard_synthetic
    from sssl_dist.config import SSSLConfig, with_overrides
    from sssl_dist.cv import comparison_table, run_arms

    t0 = time.perf_counter()
    out = Path(a.out)
    songs, n_folds = (16, 2) if a.smoke else (a.songs, a.folds)
    base = SSSLConfig(n_folds=n_folds, epochs=a.epochs, warmup_epochs=a.warmup, task=a.task)
    if a.smoke:
        base = with_overrides(base, SMOKE_TRAIN)
    folds = [0] if a.smoke else list(range(n_folds))
    arms = demo_arms()
    where = (
        f"{a.workers} Ray Train worker(s) per fold"
        if a.workers
        else "each fold in one process (local mode)"
    )
    log.info(
        "main job: %d songs, task %s, L = %d s, %d of %d folds, %d epochs (%d warm-up), "
        "%s, %d fold(s) at a time%s",
        songs,
        base.task,
        base.segment_seconds,
        len(folds),
        n_folds,
        base.epochs,
        base.warmup_epochs,
        where,
        a.parallel,
        " [smoke]" if a.smoke else "",
    )
    log.info("steps 1-2/4: generating the ground-truth corpus and sharding it with Ray workers")
    _init_ray()
    shards = shard_synthetic(
        out / "data" / "corpus", out / "data" / "shards", SynthConfig(n_songs=songs, seed=a.seed)
    )
    log.info("step 3/4: %d arms x %d fold(s): %s", len(arms), len(folds), ", ".join(arms))
    summaries = {
        name: summary
        for name, summary, _ in run_arms(
            base,
            shards,
            lambda name: out / name,
            arms,
            folds=folds,
            workers=a.workers,
            parallel=a.parallel,
        )
    }
    log.info("step 4/4: comparison")
    table = comparison_table(summaries)
    minutes = (time.perf_counter() - t0) / 60
    text = "\n".join(
        [
            f"# Main job: {songs} synthetic songs, task {base.task}, L = {base.segment_seconds} s",
            "",
            f"{len(folds)} fold(s) of {n_folds}, {base.epochs} epochs ({base.warmup_epochs} "
            f"warm-up), {where}, {a.parallel} fold(s) at a time, {minutes:.1f} min on this "
            "machine." + (" Smoke run: numbers mean nothing." if a.smoke else ""),
            "",
            "Arms: inherit = inherited labels; sssl-paper = the paper's SSSL (one global GMM, "
            "last epoch; sssl_dist/configs/paper_global_split.yaml); sssl = SSSL with this "
            "repository's defaults (per-class GMM, best validation epoch).",
            "",
            "Song-level test accuracy / F1 (SVM on Eq. 10 features), mean ± std over folds, in %.",
            "Vote acc: majority vote of segment decisions. Seg acc (truth): validation segments "
            "against the true per-second labels. Noise AUC: how well the last epoch's GMM split "
            "ranks the truly mislabelled segments.",
            "",
            table,
            "",
            "Paired over the same folds (song-level test accuracy, t = mean / (std / √folds)):",
            "",
            *(_paired_line(summaries, base_arm, arm) for base_arm, arm in DEMO_PAIRS),
            "",
            "Per-arm reports (plots, per-fold metrics, model.sssl): "
            + ", ".join(f"{name}/" for name in arms),
        ]
    )
    (out / "comparison.md").write_text(text + "\n")
    print("\n" + text + "\n")
    log.info("main job finished in %.1f min; report: %s", minutes, out / "comparison.md")
    return 0


def _paired_line(summaries: dict[str, dict[str, Any]], base_arm: str, arm: str) -> str:
    from sssl_dist.stats import paired_difference

    d = paired_difference(summaries[base_arm], summaries[arm])
    return (
        f"- {arm} − {base_arm}: {100 * d['mean']:+.1f} points (std {100 * d['std']:.1f}, "
        f"t = {d['t']:.2f}; better on {d['better']} of {d['folds']} folds, worse on {d['worse']})"
    )


# ------------------------------------------------------------------------------- parser
class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after every option, and epilogs kept as written."""


def _config_epilog() -> str:
    """Every config key with its default, for --config files and --set overrides."""
    from sssl_dist.config import SSSLConfig, to_dict

    lines = ["config keys (--config FILE, --set KEY=VALUE) and their defaults:"]
    lines += [f"  {k} = {v}" for k, v in to_dict(SSSLConfig()).items()]
    lines.append("sources of each default: sssl_dist/config.py")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    fmt = _HelpFormatter
    p = argparse.ArgumentParser(prog="sssl", description=__doc__, formatter_class=fmt)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser(
        "synth", help="generate the ground-truth synthetic corpus", formatter_class=fmt
    )
    s.add_argument("--out", required=True, help="corpus directory (4Q layout)")
    s.add_argument("--songs", type=int, default=120, help="number of songs")
    s.add_argument("--seed", type=int, default=0, help="corpus seed")
    s.add_argument(
        "--excursion",
        type=float,
        default=0.30,
        help="target share of seconds whose quadrant differs from the clip label",
    )
    s.add_argument("--smoke", action="store_true", help="12 songs")
    s.set_defaults(func=cmd_synth)

    s = sub.add_parser(
        "shard", help="decode audio into WebDataset log-mel shards", formatter_class=fmt
    )
    s.add_argument(
        "--dataset",
        required=True,
        choices=("4q", "pmemo", "eim", "deam", "manifest", "synthetic"),
        help="layout of --root (see README)",
    )
    s.add_argument("--root", required=True, help="dataset root (or the CSV file for 'manifest')")
    s.add_argument("--out", required=True, help="shard directory")
    s.add_argument("--songs-per-shard", type=int, default=32, help="songs in one tar shard")
    s.add_argument(
        "--midpoint",
        type=float,
        default=0.5,
        help="'manifest' only: continuous valence/arousal above this are high",
    )
    s.add_argument("--smoke", action="store_true", help="first 8 songs only")
    s.set_defaults(func=cmd_shard)

    def training_args(s: argparse.ArgumentParser) -> None:
        s.add_argument("--shards", required=True, help="shard directory from `sssl shard`")
        s.add_argument("--config", help="YAML/JSON config file (keys of SSSLConfig)")
        s.add_argument(
            "--set", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. tau=0.6"
        )
        s.add_argument(
            "--workers",
            type=int,
            default=2,
            help="Ray Train workers per run (0 = local mode, in this process)",
        )
        s.add_argument("--gpu", action="store_true", help="one GPU per worker, NCCL")
        s.add_argument("--out", help="report directory")
        s.add_argument("--smoke", action="store_true", help="2 epochs, fold 0 only")

    s = sub.add_parser(
        "train",
        help="distributed SSSL training + song-level CV",
        formatter_class=fmt,
        epilog=_config_epilog(),
    )
    training_args(s)
    s.add_argument("--fold", type=int, help="run this fold only")
    s.add_argument("--folds", default="all", help="'all' or a comma list, e.g. 0,3,7")
    s.add_argument(
        "--parallel",
        type=int,
        default=1,
        help="folds side by side (each a Ray task; with --workers 0 each trains in one process)",
    )
    s.add_argument(
        "--final",
        action="store_true",
        help="after cross-validation, refit on all songs and export that model",
    )
    s.set_defaults(func=cmd_train)

    s = sub.add_parser(
        "tune",
        help="Ray Tune sweep over τ, λ, T, L and folds",
        formatter_class=fmt,
        epilog=_config_epilog(),
    )
    training_args(s)
    s.add_argument("--space", required=True, help="search-space YAML (see tuning/spaces/)")
    s.add_argument("--max-concurrent", type=int, default=None, help="cap on trials at once")
    s.add_argument("--cpus-per-worker", type=float, default=1.0, help="fractional CPUs work")
    s.set_defaults(func=cmd_tune)

    s = sub.add_parser(
        "predict",
        help="emotion over time and song decision for audio files, folders or a catalogue",
        formatter_class=fmt,
        description="sssl predict MODEL INPUTS... | sssl predict --model M [--model M2] INPUTS...",
    )
    s.add_argument(
        "inputs",
        nargs="+",
        metavar="[MODEL] INPUTS",
        help="model.sssl (unless --model is given), then audio files (wav, flac, ogg, mp3, "
        "aiff; any length), folders (searched recursively) or manifest CSVs (a 'path' column, "
        "relative to the CSV)",
    )
    s.add_argument(
        "--model",
        action="append",
        help="a model.sssl; repeat for several models in one pass (audio decoded once)",
    )
    s.add_argument("--out", default="predictions", help="output directory (re-run to resume)")
    s.add_argument(
        "--plots", action="store_true", help="per-file JSON, CSV and plot (auto: <= 20 files)"
    )
    s.add_argument("--gpu", action="store_true", help="one GPU per model actor")
    s.add_argument("--actors", type=int, default=1, help="model actors (Ray Data actor pool)")
    s.add_argument("--batch-files", type=int, default=8, help="files per model batch")
    s.add_argument(
        "--part-files", type=int, default=64, help="files per committed Parquet part (resume unit)"
    )
    s.add_argument("--cpus", type=int, default=None, help="CPUs of an in-process Ray (all)")
    s.add_argument(
        "--smoke",
        action="store_true",
        help=f"the first {SMOKE_PREDICT_FILES} files, "
        f"the first {SMOKE_PREDICT_SECONDS:.0f} s of each",
    )
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser(
        "report", help="rebuild plots and tables of a training report", formatter_class=fmt
    )
    s.add_argument("run_dir", help="report directory of `sssl train`")
    s.add_argument("--shards", help="shard directory (adds per-second truth to curves)")
    s.add_argument("--smoke", action="store_true", help="tables only, no plots")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser(
        "demo", help="the main job on the embedded synthetic corpus", formatter_class=fmt
    )
    s.add_argument("--out", default="runs/demo", help="output directory")
    s.add_argument("--songs", type=int, default=120, help="corpus size")
    s.add_argument("--folds", type=int, default=5, help="cross-validation folds (10 for real runs)")
    s.add_argument("--epochs", type=int, default=6, help="epochs per run")
    s.add_argument("--warmup", type=int, default=2, help="warm-up epochs (plain CE)")
    s.add_argument("--task", default="quadrant", choices=("quadrant", "valence", "arousal"))
    # Defaults measured on 2 cores (issue 12): two local-mode folds side by side beat one fold
    # on 2 DDP workers for a network this small; --workers 2 --parallel 1 runs DDP.
    s.add_argument(
        "--workers",
        type=int,
        default=0,
        help="Ray Train workers per fold (0: in the fold's process)",
    )
    s.add_argument(
        "--parallel",
        type=int,
        default=2,
        help="fold runs side by side, shared by the arms (see `sssl train --help`)",
    )
    s.add_argument("--seed", type=int, default=0, help="corpus seed")
    s.add_argument("--smoke", action="store_true", help="16 songs, 1 fold, 2 epochs")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        log.error("%s", exc)
        if args.verbose:
            raise
        return 2


if __name__ == "__main__":
    sys.exit(main())
