"""The driver side of one fold: its songs, the checks before launch, one TorchTrainer, its run
identity and results.

One run identity, `run_name(prefix, cfg, shards, fold)`, names every training run: the fold,
a digest of the resolved config and a digest of the shard set. `sssl train` (cv.py), `sssl
tune` (tuning/sweep.py) and the benchmarks all use it, so re-running resumes a run only when
the settings *and* the data are the same ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from sssl_dist.checkpoint import finished_checkpoint, remove_stray_temp_dirs, temp_dir
from sssl_dist.config import SSSLConfig, config_digest, to_dict
from sssl_dist.crossfit import apply_cross_fit, cross_fit_probabilities
from sssl_dist.data import (
    SegmentTable,
    ShardSet,
    fold_indices,
    hold_out_validation,
    segment_count,
)
from sssl_dist.split_service import start_split_service
from sssl_dist.train import PROGRESS_FILE, LoopConfig, train_loop_per_worker
from sssl_dist.warmup import adopt_warmup

log = logging.getLogger(__name__)


@dataclass
class FoldRun:
    result: dict[str, Any]  # song-level metrics (result.json)
    history: list[dict[str, Any]]  # per-epoch metrics
    songs: dict[str, list]  # per-song segment probabilities
    fold_ids: dict[str, list[str]]  # song ids of train / val / test
    checkpoint_dir: str  # a local copy of the final checkpoint ("" when read from a report)
    run_dir: str
    # The driver's split service history, {epoch, n_clean} per SSSL epoch (gmm_site: driver).
    splits: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def read(cls, directory: str | Path, checkpoint_dir: str = "", run_dir: str = "") -> FoldRun:
        """From a directory holding result.json, history.json, songs.json and fold_ids.json
        (a final checkpoint, or a report's fold-K/ directory)."""
        read = lambda n: json.loads(Path(directory, n).read_text())  # noqa: E731
        return cls(
            read("result.json"),
            read("history.json"),
            read("songs.json"),
            read("fold_ids.json"),
            checkpoint_dir,
            run_dir,
        )


def run_digest(cfg: SSSLConfig, shards: ShardSet) -> str:
    """12 hex digits naming (resolved config, shard set)."""
    blob = f"{config_digest(cfg)}:{shards.digest()}".encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def run_name(prefix: str, cfg: SSSLConfig, shards: ShardSet, fold: int) -> str:
    """The run identity: prefix, fold, and the digest of config + shard set."""
    return f"{prefix}-fold{fold}-{run_digest(cfg, shards)}"


def fold_song_ids(shards: ShardSet, cfg: SSSLConfig, fold: int) -> dict[str, list[str]]:
    songs = shards.songs  # sorted by id: the folds are the same for every configuration
    labels = np.array([s[cfg.task] for s in songs])
    train, val, test = fold_indices(labels, cfg.n_folds, fold, cfg.val_fraction, cfg.seed)
    ids = [s["song_id"] for s in songs]
    return {
        "train": [ids[i] for i in train],
        "val": [ids[i] for i in val],
        "test": [ids[i] for i in test],
    }


def refit_song_ids(shards: ShardSet, cfg: SSSLConfig) -> dict[str, list[str]]:
    """The final refit (`sssl train --final`): every song trains, except the validation songs
    held out as in a fold (for `eval_epoch: best_val` and the SVM's validation figures); no
    test songs, since cross-validation already gave the estimate."""
    songs = shards.songs
    labels = np.array([s[cfg.task] for s in songs])
    train, val = hold_out_validation(
        labels, np.arange(len(songs)), cfg.val_fraction, cfg.seed, "the final refit"
    )
    ids = [s["song_id"] for s in songs]
    return {"train": [ids[i] for i in train], "val": [ids[i] for i in val], "test": []}


def check_fold(
    cfg: SSSLConfig, shards: ShardSet, fold_ids: dict[str, list[str]], workers: int
) -> SegmentTable:
    """Refuse, before any worker starts, what would otherwise fail (or hang) inside the run.
    Returns the fold's training segments.

    - a song shorter than L has no segment: it would vanish from the SVM and the test set;
    - fewer training segments than ranks would leave a rank with an empty loss-pass block.
    """
    by_id = shards.by_id
    fold_songs = [by_id[s] for ids in fold_ids.values() for s in ids]
    short = sorted(
        (s["duration_s"], s["song_id"])
        for s in fold_songs
        if segment_count(s["duration_s"], cfg.segment_seconds, cfg.hop_seconds) == 0
    )
    if short:
        names = ", ".join(f"{sid} ({d:.1f} s)" for d, sid in short[:5])
        raise ValueError(
            f"{len(short)} song(s) are shorter than segment_seconds = {cfg.segment_seconds}: "
            f"{names}{' …' if len(short) > 5 else ''}. They would have no segment and drop out "
            f"of the song-level decision; use segment_seconds <= {int(short[0][0])}, or re-shard "
            "without them"
        )
    table = SegmentTable.build(
        [by_id[s] for s in fold_ids["train"]], cfg.task, cfg.segment_seconds, cfg.hop_seconds
    )
    n_train = len(table)
    ranks = max(workers, 1)
    if n_train < ranks:
        raise ValueError(
            f"{n_train} training segment(s) for {ranks} worker(s): every worker needs at least "
            "one; use fewer workers or more songs"
        )
    if cfg.batch_size % ranks:
        log.warning(
            "batch_size %d is not a multiple of %d workers: the global batch is %d",
            cfg.batch_size,
            ranks,
            cfg.batch_size // ranks * ranks,
        )
    return table


def run_fold(
    cfg: SSSLConfig,
    shards: ShardSet,
    fold: int,
    *,
    storage_path: str | Path,
    name: str,
    workers: int = 2,
    use_gpu: bool = False,
    cpus_per_worker: float = 1.0,
    callbacks: list | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    fault: str = "",
    fold_ids: dict[str, list[str]] | None = None,
    save_warmup: bool = False,
    warmup_from: Path | None = None,
) -> FoldRun:
    """Train one fold with a TorchTrainer and return its results (copied off the checkpoint).
    `fold_ids` replaces the fold's songs (the final refit's, `refit_song_ids`). `save_warmup`
    keeps the warm-up's end for other runs; `warmup_from` starts from another run's (warmup.py).

    Re-running with the same (storage_path, name) resumes from the newest complete checkpoint.
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    fold_ids = fold_ids or fold_song_ids(shards, cfg, fold)
    table = check_fold(cfg, shards, fold_ids, workers)
    remote = "://" in str(storage_path)
    if remote and workers == 0:
        raise ValueError(
            f"local mode (--workers 0) keeps its checkpoints on this machine's filesystem; "
            f"storage {storage_path} is remote: use a local path or Ray workers"
        )
    storage_path = str(storage_path) if remote else str(Path(storage_path).resolve())
    run_dir = f"{storage_path}/{name}"
    remove_stray_temp_dirs()
    done = None if remote else finished_checkpoint(run_dir)
    if done is not None:
        # A finished run is read back as it is: re-running a command must never retrain or
        # rescore it (with more than one rank, a second scoring pass is not the saved one).
        log.info("%s is finished: reusing its final checkpoint", name)
        import ray.train

        found = ray.train.Checkpoint(str(done))
        return _read_back(
            found, storage_path, name, [], cfg, shards, fold, fold_ids, workers, use_gpu
        )
    if warmup_from is not None and adopt_warmup(Path(warmup_from), run_dir, cfg):
        log.info(
            "%s starts after the warm-up it shares with %s", name, Path(warmup_from).parent.name
        )
    tb_dir = f"{run_dir}/tensorboard" if "://" not in run_dir else None
    loop = LoopConfig(
        config=to_dict(cfg),
        shards=str(shards.root.resolve()),
        fold=fold,
        fold_ids=fold_ids,
        run_dir=run_dir,
        tensorboard_dir=tb_dir,
        local=workers == 0,
        fault=fault,
        save_warmup=save_warmup and not remote,
    )
    service = None
    if cfg.gmm_site == "driver" and cfg.method != "inherit" and workers > 0:
        # Owned by this driver, so it outlives worker restarts (split_service.py). In local mode
        # (workers=0) the driver is the one training process: the fit already runs on the
        # driver side, and an actor would only add a process start to every fold.
        service, service_name = start_split_service(cfg, table, name)
        loop = replace(loop, split_service=service_name)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=asdict(loop),
        torch_config=TorchConfig(
            backend="nccl" if use_gpu else "gloo", timeout_s=cfg.gloo_timeout_s
        ),
        scaling_config=ScalingConfig(
            num_workers=workers,
            use_gpu=use_gpu,
            resources_per_worker=None if use_gpu else {"CPU": cpus_per_worker},
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=callbacks,
        ),
    )
    try:
        result = _fit_with_progress(
            trainer, Path(run_dir) / PROGRESS_FILE if tb_dir else None, on_epoch
        )
        splits = ray.get(service.splits.remote()) if service else []
    finally:
        if service:
            ray.kill(service)
    if result.error:
        raise result.error
    return _read_back(
        result.checkpoint, storage_path, name, splits, cfg, shards, fold, fold_ids, workers, use_gpu
    )


def _read_back(
    checkpoint: Any,
    storage_path: str,
    name: str,
    splits: list[dict[str, Any]],
    cfg: SSSLConfig,
    shards: ShardSet,
    fold: int,
    fold_ids: dict[str, list[str]],
    workers: int,
    use_gpu: bool,
) -> FoldRun:
    """A local copy of the final checkpoint (a ray.train.Checkpoint) as a FoldRun,
    cross-fitted where configured."""
    local = temp_dir()
    checkpoint.to_directory(local)
    run = FoldRun.read(local, checkpoint_dir=local, run_dir=f"{storage_path}/{name}")
    run.splits = splits
    if cfg.svm_features == "cross_fit":
        train_probs = cross_fit_probabilities(
            cfg,
            shards,
            fold,
            fold_ids,
            evaluated_epoch=int(run.result["evaluated_epoch"]),
            storage_path=storage_path,
            name=name,
            workers=workers,
            use_gpu=use_gpu,
        )
        apply_cross_fit(run, cfg, shards, train_probs)
    return run


class ProgressTail:
    """Rank 0's progress lines of one run (progress.jsonl), read as they are appended: each
    `poll` hands the lines written since the last one to `on_epoch`."""

    def __init__(self, path: Path, on_epoch: Callable[[dict[str, Any]], None]) -> None:
        self.path, self.on_epoch = path, on_epoch
        # A resumed run's earlier lines were shown by the run that wrote them.
        self.seen = len(path.read_text().splitlines()) if path.is_file() else 0

    def poll(self) -> None:
        lines = self.path.read_text().splitlines() if self.path.is_file() else []
        for line in lines[self.seen :]:
            self.on_epoch(json.loads(line))
        self.seen = len(lines)


def _fit_with_progress(trainer, progress: Path | None, on_epoch):
    """trainer.fit() in a daemon thread while the driver tails rank 0's progress lines. A
    daemon thread, so that Ctrl-C or SIGTERM in the driver never waits for the fit to end:
    the CLI then stops Ray, which ends the workers (every finished epoch is checkpointed)."""
    if progress is None or on_epoch is None:
        return trainer.fit()
    tail = ProgressTail(progress, on_epoch)
    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the driver's thread below
            outcome["error"] = exc

    thread = threading.Thread(target=fit, name="trainer.fit", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.5)
        tail.poll()
    tail.poll()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]
