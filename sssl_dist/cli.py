"""`sssl`: the command line. Each subcommand is one stage; `demo` runs the main job end to end.

Every subcommand has --smoke (a tiny, real, end-to-end run for CI) and exits non-zero on
failure with a one-line error. Without RAY_ADDRESS a command starts its own Ray in this
process, listening on loopback only (ray_start.py), and never joins a Ray already running on
the host; with it (as inside `ray job submit`) it joins that cluster.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

log = logging.getLogger("sssl")

DEFAULT_ROPE_FRACTION = 0.01  # stats.DEFAULT_ROPE, without importing scipy for --help
MAX_TRIALS = 1000  # tuning.sweep.MAX_TRIALS, without importing Ray for --help
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
    from sssl_dist.driver.ray_start import init_ray

    init_ray(num_cpus)
    # ray.init installs a SIGTERM handler that exits mid-call (an abort with a Ray dump):
    # ours stops as Ctrl-C does.
    _catch_sigterm()


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: stop, keep what is finished, exit 143."""


# Set by the SIGTERM handler: a signal that lands inside a blocking Ray call (ray.wait) comes
# out of it as a plain KeyboardInterrupt, and only this still tells SIGTERM from Ctrl-C.
_SIGTERM_RECEIVED = threading.Event()


def _on_sigterm(signum: int, frame: Any) -> None:
    _SIGTERM_RECEIVED.set()
    raise Terminated()


def _catch_sigterm() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


# What an interrupted command keeps and how it goes on, by command; the default is the
# training commands'.
ON_STOP = {
    "synth": "The corpus is complete only once synth_config.json is written; run the same "
    "command again to generate it",
    "shard": "Finished shards are kept (each is written whole or not at all, and the next run "
    "removes the temporary files of those in flight); run the same command again to write "
    "the rest",
    "predict": "Committed files are kept; run the same command again to predict the rest",
}
ON_STOP_TRAINING = (
    "Finished folds and each run's last finished epoch are kept; run the same command again "
    "to continue from there"
)


def stop_message(command: str, terminated: bool) -> str:
    """The line an interrupted command ends with: what stopped it, what it keeps, what next."""
    how = "terminated (SIGTERM)" if terminated else "interrupted (Ctrl-C)"
    return f"{how}: stopped. {ON_STOP.get(command, ON_STOP_TRAINING)}"


def _stop(exc: KeyboardInterrupt, command: str) -> NoReturn:
    """After Ctrl-C or SIGTERM: stop Ray (its workers and any in-process training thread with
    it) and exit 130 or 143 at once. What is finished is kept (`stop_message`), so the same
    command resumes; in training at most the epoch in flight is lost."""
    terminated = isinstance(exc, Terminated) or _SIGTERM_RECEIVED.is_set()
    log.error("%s", stop_message(command, terminated))
    try:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        # A training thread may still be inside trainer.fit (local mode): do not wait for it.
        os._exit(143 if terminated else 130)


# ------------------------------------------------------------------------------- synth
def cmd_synth(a: argparse.Namespace) -> int:
    from shards.synth import SynthConfig, generate_corpus

    # 24: enough songs of every class for `sssl train --smoke`'s 2 folds with validation songs
    # held out (12 left a class with 1 training song).
    n = 24 if a.smoke else a.songs
    cfg = SynthConfig(n_songs=n, seed=a.seed, excursion_fraction=a.excursion)
    generate_corpus(Path(a.out), cfg)
    log.info("wrote %d songs + per-second ground truth to %s", n, a.out)
    return 0


# ------------------------------------------------------------------------------- shard
def cmd_shard(a: argparse.Namespace) -> int:
    from shards.datasets import load_dataset
    from shards.write import check_source, shard_dataset, shard_source, write_source

    source = shard_source(a.dataset, Path(a.root))
    check_source(Path(a.out), source, a.replace)  # before anything is read or Ray starts
    records, report, truth = load_dataset(a.dataset, Path(a.root), a.midpoint, a.truth)
    report.log_summary(a.dataset)
    if a.smoke:
        records = records[:8]
    log.info(
        "%s: %d song(s) with audio and labels, %d with per-second truth",
        a.dataset,
        len(records),
        sum(r.song_id in truth for r in records),
    )
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
    write_source(Path(a.out), source)
    refused = len(report.bad_rows) + len(report.conflicts)
    log.info(
        "sharded %d song(s) into %d shard(s) in %.1f s (%d file(s) rejected, %d row(s) refused "
        "by the loader, %d song(s)' per-second truth refused); reasons in %s",
        len(manifest["songs"]),
        len(manifest["shards"]),
        time.perf_counter() - t0,
        len(manifest["rejects"]),
        refused,
        len(report.bad_truth) + len(manifest["truth_refused"]),
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
    try:
        folds = [int(x) for x in spec.split(",")]
    except ValueError:
        raise ValueError(
            f"--folds must be 'all' or a comma list of fold numbers such as 0,3,7; got {spec!r}"
        ) from None
    if any(not 0 <= f < n_folds for f in folds):
        raise ValueError(f"--folds must be in 0..{n_folds - 1}")
    repeated = sorted({f for f in folds if folds.count(f) > 1})
    if repeated:
        # A fold trains and reports once: a repeat would be counted twice in the log alone.
        raise ValueError(f"--folds names fold {repeated[0]} more than once: give each fold once")
    return folds


def cmd_train(a: argparse.Namespace) -> int:
    cfg = _train_config(a)  # before importing torch and Ray: a bad config costs nothing
    from sssl_dist.data.segments import ShardSet
    from sssl_dist.driver.cv import run_cv

    folds = _fold_list(a.folds, a.fold, cfg.n_folds, a.smoke)
    shards = ShardSet(a.shards)
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
        start_ray=_init_ray,
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
    from tuning.space import load_space

    # The config and the space before importing torch and Ray: bad ones cost nothing (the
    # sweep reads the space again, with every other check).
    base, _ = _train_config(a), load_space(a.space)
    from tuning.sweep import run_sweep

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
        max_trials=a.max_trials,
        start_ray=_init_ray,
    )
    return 0


# ------------------------------------------------------------------------------- predict
def cmd_predict(a: argparse.Namespace) -> int:
    from sssl_dist.outputs.predict import AUDIO_SUFFIXES, find_audio, run_predict

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
        actor_cpus=a.actor_cpus,
        start_ray=lambda: _init_ray(a.cpus),
    )
    log.info("predictions in %s (%d of %d file(s) failed)", a.out, summary.failed, summary.files)
    return 1 if summary.failed else 0


# ------------------------------------------------------------------------------- report
def cmd_report(a: argparse.Namespace) -> int:
    from sssl_dist.data.segments import ShardSet
    from sssl_dist.outputs.results import rebuild_report

    rebuild_report(Path(a.run_dir), ShardSet(a.shards) if a.shards else None, plots=not a.smoke)
    log.info("report rebuilt in %s", a.run_dir)
    return 0


# ------------------------------------------------------------------------------- compare
def _arms(a: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Arms from --arms FILE and/or --arm NAME KEY=VALUE ...; the default three otherwise. A
    name given twice is refused: the later arm would silently replace the earlier."""
    from sssl_dist.driver.arms import CEILING_ARMS, default_arms, parse_arm, read_arms

    arms = read_arms(a.arms) if a.arms else {}
    given = set()
    for words in a.arm or []:
        name, overrides = parse_arm(words)
        if name in arms:
            where = "twice with --arm" if name in given else f"in {a.arms} and with --arm"
            raise ValueError(f"arm {name!r} is named {where}: give each arm its own name")
        given.add(name)
        arms[name] = overrides
    arms = arms or default_arms()
    if a.ceiling:
        taken = [name for name in CEILING_ARMS if name in arms]
        if taken:  # the ceiling arm would replace the user's without a word
            raise ValueError(
                f"arm {taken[0]!r} is a name --ceiling adds: give your arm another name"
            )
        arms.update(CEILING_ARMS)
    return arms


def cmd_compare(a: argparse.Namespace) -> int:
    """Arms x tasks x repeats x folds on one shard set, then one verdict per pair."""
    # The config and the arms before importing torch and Ray: bad ones cost nothing.
    base, arms = _train_config(a), _arms(a)
    from sssl_dist.data.segments import ShardSet
    from sssl_dist.driver.compare import Design, run_comparison

    tasks = tuple(t.strip() for t in a.tasks.split(",")) if a.tasks else (base.task,)
    design = Design(
        arms=arms,
        tasks=tasks,
        n_folds=a.folds or base.n_folds,
        repeats=1 if a.smoke else a.repeats,
        rope=a.rope / 100,
        pairing=a.pairs,
        folds=None,  # --smoke: both folds of 2, so the statistics run end to end
    )
    shards = ShardSet(a.shards)
    out = Path(a.out or "runs/compare")
    comparison = run_comparison(
        base,
        shards,
        out,
        design,
        workers=a.workers,
        parallel=a.parallel,
        use_gpu=a.gpu,
        share_warmup=not a.no_shared_warmup,
        start_ray=_init_ray,
    )
    print("\n" + verdict_lines(comparison) + "\n")
    log.info("comparison: %s", out / "comparison.md")
    return 0


def verdict_lines(comparison: dict[str, Any]) -> str:
    """What the terminal shows at the end: each task's pairs and their verdicts."""
    lines = []
    for task, t in comparison["tasks"].items():
        for pair in t["pairs"]:
            # The figure every verdict is about: the task's first (song accuracy, song R²).
            key = next(iter(pair["metrics"]), None)
            if key:
                m = pair["metrics"][key]
                name = f"{m['shown']['name']}: " if "shown" in m else ""
                lines.append(f"{task}: {pair['b']} vs {pair['a']}: {name}{m['verdict']}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------- demo
def cmd_demo(a: argparse.Namespace) -> int:
    """The main job: synth -> shard -> `sssl compare` of the three default arms."""
    from shards.synth import SynthConfig
    from shards.write import shard_synthetic
    from sssl_dist.config import SSSLConfig, with_overrides
    from sssl_dist.driver.arms import default_arms
    from sssl_dist.driver.compare import Design, run_comparison
    from sssl_dist.outputs.tables import comparison_markdown

    t0 = time.perf_counter()
    out = Path(a.out)
    songs, n_folds = (16, 2) if a.smoke else (a.songs, a.folds)
    base = SSSLConfig(n_folds=n_folds, epochs=a.epochs, warmup_epochs=a.warmup, task=a.task)
    if a.smoke:
        base = with_overrides(base, SMOKE_TRAIN)
    design = Design(default_arms(), (base.task,), n_folds, folds=(0,) if a.smoke else None)
    where = (
        f"{a.workers} Ray Train worker(s) per fold"
        if a.workers
        else "each fold in one process (local mode)"
    )
    log.info(
        "main job: %d songs, task %s, L = %d s, %d folds, %d epochs (%d warm-up), %s, "
        "%d fold(s) at a time%s",
        songs,
        base.task,
        base.segment_seconds,
        len(design.folds or range(n_folds)),
        base.epochs,
        base.warmup_epochs,
        where,
        a.parallel,
        " [smoke]" if a.smoke else "",
    )
    synth = SynthConfig(n_songs=songs, seed=a.seed)  # checked before Ray starts
    log.info("steps 1-2/3: generating the ground-truth corpus and sharding it with Ray workers")
    _init_ray()
    shards = shard_synthetic(out / "data" / "corpus", out / "data" / "shards", synth)
    log.info("step 3/3: `sssl compare` of %s", ", ".join(design.arms))
    comparison = run_comparison(base, shards, out, design, workers=a.workers, parallel=a.parallel)
    text = comparison_markdown(comparison)
    if a.smoke:
        text += "\n\nSmoke run: the numbers mean nothing.\n"
    print("\n" + text + "\n")
    log.info(
        "main job finished in %.1f min; report: %s",
        (time.perf_counter() - t0) / 60,
        out / "comparison.md",
    )
    return 0


# ------------------------------------------------------------------------------- parser
class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after every option, and epilogs kept as written."""


def _config_epilog() -> str:
    """Every config key with its default, for --config files and --set overrides."""
    from sssl_dist.config import FIELD_GROUPS, NOT_ADOPTED, SSSLConfig, to_dict

    defaults = to_dict(SSSLConfig())
    lines = [
        "config keys (--config FILE, --set KEY=VALUE) and their defaults, by what they govern:"
    ]
    for group, keys in FIELD_GROUPS.items():
        lines.append(f"  {group}:")
        for k in keys:
            other = f"   (measured, not adopted: {NOT_ADOPTED[k]})" if k in NOT_ADOPTED else ""
            lines.append(f"    {k} = {defaults[k]}{other}")
    lines.append(
        "sources of each default: sssl_dist/config.py; measurements: docs/configuration.md"
    )
    return "\n".join(lines)


def shared_warmup_flag(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--no-shared-warmup",
        action="store_true",
        help="train every arm's warm-up itself (by default arms with identical warm-ups train "
        "it once; the results are the same)",
    )


def build_parser() -> argparse.ArgumentParser:
    fmt = _HelpFormatter
    p = argparse.ArgumentParser(prog="sssl", description=__doc__, formatter_class=fmt)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (
        _synth_parser,
        _shard_parser,
        _train_parser,
        _tune_parser,
        _compare_parser,
        _predict_parser,
        _report_parser,
        _demo_parser,
    ):
        add(sub, fmt)
    return p


def training_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--shards", required=True, help="shard directory from `sssl shard`")
    s.add_argument("--config", help="YAML/JSON config file (keys of SSSLConfig)")
    s.add_argument(
        "--set",
        nargs="*",
        action="extend",  # `--set a=1 --set b=2` keeps both, not only the last
        metavar="KEY=VALUE",
        help="config overrides, e.g. tau=0.6",
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


def _synth_parser(sub: Any, fmt: type) -> None:
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
    s.add_argument("--smoke", action="store_true", help="24 songs")
    s.set_defaults(func=cmd_synth)


def _shard_parser(sub: Any, fmt: type) -> None:
    from shards.datasets import DATASETS

    s = sub.add_parser(
        "shard", help="decode audio into WebDataset log-mel shards", formatter_class=fmt
    )
    s.add_argument(
        "--dataset",
        required=True,
        choices=DATASETS,
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
    s.add_argument(
        "--truth",
        help="'manifest' only: per-second truth CSV (id, time, and valence + arousal or "
        "quadrant; docs/datasets.md)",
    )
    s.add_argument(
        "--replace",
        action="store_true",
        help="shard into an --out that holds the shards of another data set or root, "
        "replacing them (refused without it)",
    )
    s.add_argument("--smoke", action="store_true", help="first 8 songs only")
    s.set_defaults(func=cmd_shard)


def _train_parser(sub: Any, fmt: type) -> None:
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


def _tune_parser(sub: Any, fmt: type) -> None:
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
    s.add_argument(
        "--max-trials",
        type=int,
        default=MAX_TRIALS,
        help="refuse a sweep of more trials (configurations x folds) than this",
    )
    s.set_defaults(func=cmd_tune)


def _compare_parser(sub: Any, fmt: type) -> None:
    from sssl_dist.config import TASKS

    s = sub.add_parser(
        "compare",
        help="does SSSL help on my data, and by how much: arms on identical folds, one verdict "
        "per pair",
        formatter_class=fmt,
        epilog=_config_epilog(),
    )
    training_args(s)
    s.add_argument(
        "--arms",
        help="YAML mapping arm name -> config overrides (default: inherit, sssl-paper, sssl)",
    )
    s.add_argument(
        "--arm",
        nargs="+",
        action="append",
        metavar="NAME KEY=VALUE",
        help="one arm: a name, then its overrides, e.g. --arm t1 temperature=1 (repeatable)",
    )
    s.add_argument(
        "--ceiling",
        action="store_true",
        help="add the two arms that bound the gain (shards with per-second truth only): "
        "oracle-split (the step on a perfect split) and oracle-labels (CE on the true labels); "
        "the report gives each arm's share of the headroom",
    )
    s.add_argument("--tasks", help=f"comma list of {', '.join(TASKS)} (default: the config's task)")
    s.add_argument("--folds", type=int, help="k of k-fold CV (default: the config's n_folds)")
    s.add_argument(
        "--repeats", type=int, default=1, help="repetitions, each with its own folds and seed"
    )
    s.add_argument(
        "--rope", type=float, default=100 * DEFAULT_ROPE_FRACTION,
        help="region of practical equivalence, accuracy points",
    )  # fmt: skip
    s.add_argument(
        "--pairs",
        default="all",
        help="which pairs: all (every pair), baseline (each arm against the first), ladder (each "
        "against the one before), or a list A:B,C:D (the gain of B over A)",
    )
    s.add_argument(
        "--parallel", type=int, default=1, help="fold runs side by side, shared by all cells"
    )
    shared_warmup_flag(s)
    s.set_defaults(func=cmd_compare)


def _predict_parser(sub: Any, fmt: type) -> None:
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
    s.add_argument(
        "--actor-cpus",
        type=float,
        default=None,
        help="CPUs each model actor reserves (default: 1 with --gpu, 0 on CPU, where the "
        "model is light beside decoding)",
    )
    s.add_argument("--cpus", type=int, default=None, help="CPUs of an in-process Ray (all)")
    s.add_argument(
        "--smoke",
        action="store_true",
        help=f"the first {SMOKE_PREDICT_FILES} files, "
        f"the first {SMOKE_PREDICT_SECONDS:.0f} s of each",
    )
    s.set_defaults(func=cmd_predict)


def _report_parser(sub: Any, fmt: type) -> None:
    s = sub.add_parser(
        "report", help="rebuild plots and tables of a training report", formatter_class=fmt
    )
    s.add_argument("run_dir", help="report directory of `sssl train`")
    s.add_argument("--shards", help="shard directory (adds per-second truth to curves)")
    s.add_argument("--smoke", action="store_true", help="tables only, no plots")
    s.set_defaults(func=cmd_report)


def _demo_parser(sub: Any, fmt: type) -> None:
    from sssl_dist.config import TASKS, SSSLConfig

    s = sub.add_parser(
        "demo", help="the main job on the embedded synthetic corpus", formatter_class=fmt
    )
    s.add_argument("--out", default="runs/demo", help="output directory")
    s.add_argument("--songs", type=int, default=120, help="corpus size")
    s.add_argument("--folds", type=int, default=5, help="cross-validation folds (10 for real runs)")
    s.add_argument("--epochs", type=int, default=6, help="epochs per run")
    s.add_argument("--warmup", type=int, default=2, help="warm-up epochs (plain CE)")
    s.add_argument("--task", default=SSSLConfig.task, choices=TASKS)
    # Defaults measured on 2 cores (benchmarks/bench_cv.py): two local-mode folds side by side
    # beat one fold on 2 DDP workers for a network this small; --workers 2 --parallel 1 runs DDP.
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
    shared_warmup_flag(s)
    s.set_defaults(func=cmd_demo)


# The least value of each count option, by argparse dest (a command has some of them).
LEAST = {
    "workers": 0,
    "parallel": 1,
    "songs_per_shard": 1,
    "actors": 1,
    "batch_files": 1,
    "part_files": 1,
    "cpus": 1,
    "actor_cpus": 0,
    "max_concurrent": 1,
}


def check_options(a: argparse.Namespace) -> None:
    """Refuse, before anything is read or Ray starts, options no command can run with: a
    count below its least value, an --out that is a file, --gpu with no GPU to use."""
    for key, least in LEAST.items():
        value = getattr(a, key, None)
        if value is not None and value < least:
            raise ValueError(f"--{key.replace('_', '-')} must be at least {least}, got {value}")
    if getattr(a, "out", None):
        check_out_dir(Path(a.out))
    if getattr(a, "gpu", False):
        check_gpu()


def check_out_dir(out: Path) -> None:
    """--out names a directory to write into: new, or one a command wrote. A file there, or
    in place of a folder above it, is refused (the command would fail with a traceback once
    it came to write)."""
    for path in (out, *out.parents):
        if path.is_dir():
            if not os.access(path, os.W_OK | os.X_OK):
                raise ValueError(
                    f"--out {out}: {path} is not writable; name a directory you can write"
                )
            return
        if path.exists() or path.is_symlink():
            where = "" if path == out else f": {path}"
            raise ValueError(f"--out {out}{where} exists and is not a directory; name a directory")


def check_gpu() -> None:
    """--gpu on this machine's own Ray needs a GPU here: Ray would wait for one forever. On
    a cluster (RAY_ADDRESS) Ray schedules the GPU work where the GPUs are."""
    if os.environ.get("RAY_ADDRESS"):
        return
    import torch

    if torch.cuda.device_count() == 0:
        raise ValueError(
            "--gpu: this machine has no CUDA GPU (torch sees none) and RAY_ADDRESS names no "
            "cluster; drop --gpu, or run on a cluster with GPUs"
        )


def main(argv: list[str] | None = None) -> int:
    if not os.environ.get("RAY_ADDRESS"):
        from sssl_dist.driver.ray_start import keep_ray_local

        keep_ray_local()  # before any stage imports ray, which reads it at import
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    _catch_sigterm()
    try:
        check_options(args)
        return args.func(args)
    except KeyboardInterrupt as exc:
        _stop(exc, args.command)
    # A PermissionError is the folder a command was told to write into (or read from) that
    # the OS refuses it: one line, as for any bad path, not a traceback.
    except (FileNotFoundError, PermissionError, ValueError, RuntimeError) as exc:
        log.error("%s", exc)
        if args.verbose:
            raise
        return 2


if __name__ == "__main__":
    sys.exit(main())
