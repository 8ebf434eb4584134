"""Folds side by side: `sssl train --parallel N`, `sssl compare --parallel N` and the demo.

Each unit (one fold of one configuration: a `run.Run`) is one Ray task that calls `Run.fit`,
the same path that `sssl train` takes one fold at a time and that every `sssl tune` trial
takes; at most N run at once. Ray hands a finished task's process to the next task, so with
local-mode folds (`--workers 0`: the fold trains inside the task's own process) the process
start-up and the imports are paid once per slot, not once per fold (the start-up cost per fold
is measured in benchmarks/bench_cv.py).

Resources, as for a Tune trial: a fold with Ray Train workers reserves nothing itself (its
workers reserve their CPUs or GPUs), and a local-mode fold reserves the one CPU it trains on,
and with --gpu one GPU (`fold_resources`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from sssl_dist.config import SSSLConfig
from sssl_dist.data.segments import ShardSet
from sssl_dist.driver.fit import ProgressTail, RunStopped, request_stop
from sssl_dist.driver.run import Run
from sssl_dist.files.runfiles import PROGRESS
from sssl_dist.outputs.foldrun import FoldRun

K = TypeVar("K", bound=Hashable)


def run_units_parallel(
    units: dict[K, Run],
    shards: ShardSet,
    *,
    parallel: int,
    workers: int = 0,
    use_gpu: bool = False,
    on_epoch: Callable[[K, dict[str, Any]], None] | None = None,
) -> Iterator[tuple[K, FoldRun]]:
    """Train the runs `units` (run.py) at most `parallel` at a time, in the order given;
    yield (key, results) as each one finishes. Runs of several configurations share the
    slots, so a comparison of 3 arms x 3 folds on 2 slots takes 5 rounds, not 3 x 2
    (`run_arms`).

    Each run's results come back in its FoldRun; its weights stay in its final checkpoint
    under `storage_path`, which the driver reads to export the model (on a cluster: shared
    storage, as Ray Train needs for more than one node), as it reads the progress lines. The
    first failing unit cancels the rest and raises. A Ctrl-C or SIGTERM lets the running units
    finish their epoch (fit.request_stop), yields those that finish, then raises it.
    """
    import ray

    if parallel < 1:
        raise ValueError(f"--parallel must be at least 1, got {parallel}")
    task = ray.remote(_train_fold).options(**fold_resources(workers, use_gpu))
    tails = [ProgressTail(u.run_dir / PROGRESS, _for_unit(on_epoch, k)) for k, u in units.items()]
    queue, pending = list(units), {}
    interrupt: KeyboardInterrupt | None = None
    try:
        while queue or pending:
            while (
                len(pending) < parallel
                and (key := _next_runnable(queue, pending, units)) is not None
            ):
                queue.remove(key)
                ref = task.remote(units[key], str(shards.root), workers, use_gpu)
                pending[ref] = key
            try:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            except KeyboardInterrupt as exc:
                if interrupt is not None:
                    raise  # the second Ctrl-C or SIGTERM: at once
                interrupt, queue = exc, []  # the first: start nothing more
                for key in pending.values():  # each finishes its epoch in flight
                    request_stop(units[key].run_dir)
                continue
            for tail in tails:
                tail.poll()
            for ref in done:
                key = pending.pop(ref)
                if (run := _finished_or_stopped(ref, interrupt)) is not None:
                    yield key, run
        if interrupt is not None:
            raise interrupt
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)


def fold_resources(workers: int, use_gpu: bool) -> dict[str, int]:
    """What one unit's Ray task reserves: a local-mode unit (workers=0) trains in the task
    itself, on 1 CPU or, with `use_gpu`, 1 CPU and 1 GPU; a unit with Ray Train workers
    reserves nothing, its workers do."""
    local = workers == 0
    return {"num_cpus": 1 if local else 0, "num_gpus": 1 if local and use_gpu else 0}


def _finished_or_stopped(ref: Any, interrupt: KeyboardInterrupt | None) -> FoldRun | None:
    """A finished unit's run, or None for one that stopped after an epoch when asked."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if interrupt is not None and isinstance(exc.cause, RunStopped):
            return None
        raise


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
    """`run_units_parallel` for the folds of one configuration under names of the caller's
    (benchmarks), keyed by fold."""
    units = {fold: Run(cfg, fold, Path(storage_path), names[fold]) for fold in folds}
    yield from run_units_parallel(
        units, shards, parallel=parallel, workers=workers, use_gpu=use_gpu, on_epoch=on_epoch
    )


def _next_runnable(queue: list[K], pending: dict[Any, K], units: dict[K, Run]) -> K | None:
    """The first queued run that can start now (`Run.ready_to_start`: one that shares a
    warm-up waits for its donor while the donor is queued or running)."""
    producing = {units[k].run_dir for k in (*queue, *pending.values()) if units[k].save_warmup}
    return next((key for key in queue if units[key].ready_to_start(producing)), None)


def _train_fold(run: Run, shard_dir: str, workers: int, gpu: bool) -> FoldRun:
    """One run in a Ray task; workers=0 trains in this process (Ray Train local mode)."""
    return run.fit(ShardSet(shard_dir), workers=workers, use_gpu=gpu)


def _for_unit(on_epoch, key):
    return (lambda m: on_epoch(key, m)) if on_epoch else (lambda m: None)
