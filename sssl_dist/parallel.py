"""Folds side by side: `sssl train --parallel N` and `sssl demo --parallel N` (issue 12).

Each unit (one fold of one configuration) is one Ray task that calls `run_fold`, the same
per-fold path that `sssl train` takes one fold at a time and that every `sssl tune` trial
takes; at most N run at once. Ray hands a finished task's process to the next task, so with
local-mode folds (`--workers 0`: the fold trains inside the task's own process) the process
start-up and the imports are paid once per slot, not once per fold (the start-up cost per fold
is measured in benchmarks/bench_cv.py).

Resources, as for a Tune trial: a fold with Ray Train workers reserves nothing itself (its
workers reserve their CPUs or GPUs), and a local-mode fold reserves the one CPU it trains on.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sssl_dist.config import SSSLConfig
from sssl_dist.data import ShardSet
from sssl_dist.fold import FoldRun, ProgressTail, run_fold
from sssl_dist.train import PROGRESS_FILE
from sssl_dist.warmup import is_ready

DRIVER_COPY = "fold-files"  # under a run directory: a finished fold's files for the driver


@dataclass(frozen=True)
class Unit:
    """One fold of one configuration: what a slot trains, and where its files go."""

    cfg: SSSLConfig
    fold: int
    storage_path: Path  # the run's Ray storage (the driver must be able to read it)
    name: str  # the run's name under storage_path
    save_warmup: bool = False  # keep the warm-up's end for other units (warmup.py)
    warmup_from: Path | None = None  # a donor's warm-up checkpoint to start from

    @property
    def run_dir(self) -> Path:
        return self.storage_path / self.name


K = TypeVar("K", bound=Hashable)


def run_units_parallel(
    units: dict[K, Unit],
    shards: ShardSet,
    *,
    parallel: int,
    workers: int = 0,
    use_gpu: bool = False,
    on_epoch: Callable[[K, dict[str, Any]], None] | None = None,
) -> Iterator[tuple[K, FoldRun]]:
    """Train `units` at most `parallel` at a time, in the order given; yield (key, run) as
    each one finishes. Units of several configurations share the slots, so a comparison of
    3 arms x 3 folds on 2 slots takes 5 rounds, not 3 x 2 (`run_arms`).

    Each `storage_path` must be a filesystem path that the driver can read (on a cluster:
    shared storage, as Ray Train needs for more than one node): each run's `checkpoint_dir`
    is a copy of its fold files there. The first failing unit cancels the rest and raises.
    """
    import ray

    if parallel < 1:
        raise ValueError(f"--parallel must be at least 1, got {parallel}")
    task = ray.remote(_train_fold).options(
        num_cpus=1 if workers == 0 else 0, num_gpus=1 if workers == 0 and use_gpu else 0
    )
    tails = {
        key: ProgressTail(u.storage_path / u.name / PROGRESS_FILE, _for_unit(on_epoch, key))
        for key, u in units.items()
    }
    queue, pending = list(units), {}
    try:
        while queue or pending:
            while len(pending) < parallel and (key := _next_runnable(queue, pending, units)):
                queue.remove(key)
                ref = task.remote(units[key], str(shards.root), workers, use_gpu)
                pending[ref] = key
            done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            for tail in tails.values():
                tail.poll()
            for ref in done:
                key = pending.pop(ref)
                yield key, ray.get(ref)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)


def run_folds_parallel(
    cfg: SSSLConfig,
    shards: ShardSet,
    folds: list[int],
    *,
    storage_path: Path,
    names: dict[int, str],
    parallel: int,
    workers: int = 0,
    use_gpu: bool = False,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
) -> Iterator[tuple[int, FoldRun]]:
    """`run_units_parallel` for the folds of one configuration, keyed by fold."""
    units = {fold: Unit(cfg, fold, storage_path, names[fold]) for fold in folds}
    yield from run_units_parallel(
        units, shards, parallel=parallel, workers=workers, use_gpu=use_gpu, on_epoch=on_epoch
    )


def _next_runnable(queue: list[K], pending: dict[Any, K], units: dict[K, Unit]) -> K | None:
    """The first queued unit that can start now: one that shares a warm-up waits until its
    donor has written it, unless the donor is no longer queued or running (it failed, or was
    finished before this run: then the copy is there, or the unit trains its own warm-up)."""
    producing = {units[k].run_dir for k in (*queue, *pending.values()) if units[k].save_warmup}
    for key in queue:
        source = units[key].warmup_from
        if source is None or is_ready(source) or source.parent not in producing:
            return key
    return None


def _train_fold(unit: Unit, shard_dir: str, workers: int, gpu: bool) -> FoldRun:
    """One fold in a Ray task; workers=0 trains in this process (Ray Train local mode)."""
    run = run_fold(
        unit.cfg, ShardSet(shard_dir), unit.fold, storage_path=unit.storage_path, name=unit.name,
        workers=workers, use_gpu=gpu, save_warmup=unit.save_warmup, warmup_from=unit.warmup_from,
    )  # fmt: skip
    # The local copy of the fold's files lives on this task's node: move it under the run
    # directory, where the driver reads it (Ray's own persisted checkpoint lacks what the driver
    # side added, such as cross-fitted results, and local mode persists none).
    copy = Path(run.run_dir) / DRIVER_COPY
    shutil.rmtree(copy, ignore_errors=True)  # an earlier run's
    shutil.copytree(run.checkpoint_dir, copy)
    shutil.rmtree(run.checkpoint_dir, ignore_errors=True)
    run.checkpoint_dir = str(copy)
    return run


def _for_unit(on_epoch, key):
    return (lambda m: on_epoch(key, m)) if on_epoch else (lambda m: None)
