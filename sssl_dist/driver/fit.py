"""One training run on the driver side: launch a TorchTrainer on given songs, or read back the
run that already finished, and hand its results over as a FoldRun.

What a run is called, which warm-up it shares and which songs it trains on is decided by its
owner, `run.Run`; this module only trains it (or reads it back) under the name it is given.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import ray
import ray.train

from sssl_dist.config import SSSLConfig, to_dict
from sssl_dist.data.segments import ShardSet, training_table
from sssl_dist.driver.split_service import NAMESPACE, start_split_service
from sssl_dist.driver.warmup import adopt_warmup
from sssl_dist.files import runfiles
from sssl_dist.files.checkpoint import finished_checkpoint, remove_stray_temp_dirs
from sssl_dist.method.tasks import task_of
from sssl_dist.outputs.foldrun import FoldRun
from sssl_dist.rank.train import LoopConfig, train_loop_per_worker

log = logging.getLogger(__name__)


def fit_run(
    cfg: SSSLConfig,
    shards: ShardSet,
    fold_ids: dict[str, list[str]],
    *,
    storage_path: str | Path,
    name: str,
    fold: int | None = None,
    workers: int = 2,
    use_gpu: bool = False,
    cpus_per_worker: float = 1.0,
    callbacks: list | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    fault: str = "",
    save_warmup: bool = False,
    warmup_from: Path | None = None,
) -> FoldRun:
    """Train one run on `fold_ids` with a TorchTrainer and return its results. `fold` (None
    for the final refit) only labels the run's metrics. `save_warmup` keeps the warm-up's end
    for other runs; `warmup_from` starts from another run's (warmup.py).

    Re-running with the same (storage_path, name) resumes from the newest complete checkpoint,
    and a finished run is read back as it is: a re-run must never retrain or rescore it (with
    more than one rank, a second scoring pass is not the saved one)."""
    storage_path = _storage(storage_path, workers)
    remote = "://" in storage_path
    run_dir = f"{storage_path}/{name}"
    remove_stray_temp_dirs()
    done = None if remote else finished_checkpoint(run_dir)
    if done is not None:
        log.info("%s is finished: reusing its final checkpoint", name)
        return FoldRun.from_checkpoint(ray.train.Checkpoint(str(done)), run_dir)
    if warmup_from is not None:
        adopt_warmup(Path(warmup_from), run_dir, cfg)
    service, service_name = _split_service(cfg, shards, fold_ids, name, workers)
    loop = LoopConfig(
        config=to_dict(cfg),
        shards=str(shards.root.resolve()),
        fold=fold,
        fold_ids=fold_ids,
        run_dir=run_dir,
        tensorboard_dir=None if remote else f"{run_dir}/tensorboard",
        local=workers == 0,
        fault=fault,
        save_warmup=save_warmup and not remote,
        split_service=(NAMESPACE, service_name) if service_name else ("", ""),
    )
    trainer = _trainer(cfg, loop, storage_path, name, workers, use_gpu, cpus_per_worker, callbacks)
    stop = None if remote else _clear_stop_request(Path(run_dir))
    try:
        result = _fit_with_progress(trainer, None if remote else Path(run_dir), on_epoch)
        splits = ray.get(service.splits.remote()) if service else []
    finally:
        if service:
            ray.kill(service)
    if result.error:
        raise result.error
    if stop is not None and stop.is_file() and finished_checkpoint(run_dir) is None:
        raise RunStopped(f"{name} stopped after an epoch, as asked; the same command resumes it")
    return replace(FoldRun.from_checkpoint(result.checkpoint, run_dir), splits=splits)


def _split_service(
    cfg: SSSLConfig, shards: ShardSet, fold_ids: dict[str, list[str]], name: str, workers: int
) -> tuple[Any, str]:
    """The run's split service (actor, name) where the GMM is fit on the driver side, else
    (None, ""). Owned by this driver, so it outlives worker restarts (split_service.py). In
    local mode (workers=0) the driver is the one training process: the fit already runs on
    the driver side, and an actor would only add a process start to every fold."""
    if cfg.gmm_site != "driver" or cfg.method == "inherit" or workers == 0:
        return None, ""
    table = training_table([shards.by_id[s] for s in fold_ids["train"]], cfg, task_of(cfg).targets)
    return start_split_service(cfg, table, name)


def _storage(storage_path: str | Path, workers: int) -> str:
    """The storage path as Ray Train takes it: a URI as given, a local path made absolute."""
    if "://" not in str(storage_path):
        return str(Path(storage_path).resolve())
    if workers == 0:
        raise ValueError(
            f"local mode (--workers 0) keeps its checkpoints on this machine's filesystem; "
            f"storage {storage_path} is remote: use a local path or Ray workers"
        )
    return str(storage_path)


def _trainer(cfg, loop, storage_path, name, workers, use_gpu, cpus_per_worker, callbacks):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from sssl_dist.files.checkpoint import KEEP_EPOCHS

    return TorchTrainer(
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
            checkpoint_config=CheckpointConfig(num_to_keep=KEEP_EPOCHS),
            callbacks=callbacks,
        ),
    )


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


def _fit_with_progress(trainer, run_dir: Path | None, on_epoch):
    """trainer.fit() in a daemon thread while the driver tails rank 0's progress lines.

    The first Ctrl-C or SIGTERM (a KeyboardInterrupt here) asks the run to stop after the
    epoch in flight (`request_stop`): the driver waits for that epoch's checkpoint, then
    raises the interrupt, and the CLI exits 130 or 143. A second one is raised at once: a
    daemon thread never holds the driver, and the CLI stops Ray, which ends the workers
    (every finished epoch is checkpointed). With no local run directory (remote storage) the
    first one is raised at once; with no `on_epoch` (a fit inside a Ray task or a Tune trial,
    which get no signal: their driver writes the request) the fit runs in this thread."""
    if run_dir is None or on_epoch is None:
        return trainer.fit()
    tail = ProgressTail(run_dir / runfiles.PROGRESS, on_epoch)
    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the driver's thread below
            outcome["error"] = exc

    thread = threading.Thread(target=fit, name="trainer.fit", daemon=True)
    thread.start()
    interrupt: KeyboardInterrupt | None = None
    while thread.is_alive():
        try:
            thread.join(0.5)
            tail.poll()
        except KeyboardInterrupt as exc:
            if interrupt is not None:
                raise
            interrupt = exc
            request_stop(run_dir)
    tail.poll()
    if "error" in outcome:
        raise outcome["error"]
    if interrupt is not None:
        raise interrupt
    return outcome["result"]


def _clear_stop_request(run_dir: Path) -> Path:
    """The run's stop-request file, removed if an earlier command left it (it acted on it)."""
    stop = run_dir / runfiles.STOP
    stop.unlink(missing_ok=True)
    return stop


class RunStopped(RuntimeError):
    """A run that stopped after an epoch because its driver asked it to (request_stop)."""


def request_stop(run_dir: Path) -> None:
    """Ask a run to stop after the epoch in flight: its train loop reads this file after each
    epoch's checkpoint (train.stop_requested), and rank 0's answer goes to every rank."""
    log.warning(
        "%s: stopping after the epoch in flight, with its checkpoint (Ctrl-C again to stop "
        "at once)",
        run_dir.name,
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / runfiles.STOP).touch()
