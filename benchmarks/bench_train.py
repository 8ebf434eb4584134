"""Ray Train overhead and scaling, on the same data, model and epochs, in one run.

- bare: one process, no Ray, the same epoch functions (loss pass, GMM split, SSSL steps);
- the bare loop again inside a Ray task (a Ray worker process, no Ray Train);
- trainer with 1 worker: the TorchTrainer path; per-epoch time from its own report;
- trainer with 2 workers: DDP over gloo on this machine's cores.
Also the share of an SSSL epoch spent in the loss pass and in gather + GMM.
Both use one torch thread per process (the trainer's default on CPU).

    python benchmarks/bench_train.py [--songs 60] [--epochs 4]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch


def bare_epochs(cfg, shards, fold_ids) -> list[dict[str, float]]:
    """The trainer's per-epoch work (its set-up and epoch functions), in this process, without
    Ray or DDP: per epoch its seconds in all, in the loss pass and in the optimiser steps (the
    trainer's history has the same three, so a slower phase can be told apart)."""
    from sssl_dist.method.equations import LossMemory
    from sssl_dist.method.split import fit_split
    from sssl_dist.rank.epoch import loss_pass, train_epoch
    from sssl_dist.rank.train import build_worker

    torch.set_num_threads(cfg.torch_threads)
    # The trainer's own set-up (tables, mels, model, optimiser), without Ray.
    w, _, _ = build_worker(cfg, shards, fold_ids)
    table = w.table
    times, clean_w, memory = [], None, LossMemory.empty(len(table))
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        t_loss = 0.0
        if epoch >= cfg.warmup_epochs:
            losses = loss_pass(w)
            t_loss = time.perf_counter() - t0
            split, _ = fit_split(cfg, table, losses.numpy(), [len(table)], epoch, memory)
            clean_w = split.clean_w
        t1 = time.perf_counter()
        train_epoch(w, clean_w if epoch >= cfg.warmup_epochs else None, epoch)
        t2 = time.perf_counter()
        times.append({"time_epoch": t2 - t0, "time_loss_pass": t_loss, "time_train": t2 - t1})
    return times


def sssl_epochs(history: list[dict]) -> list[dict]:
    """A trainer run's SSSL epochs after the first one (which also pays for allocator warm-up);
    the last epoch where there is no other."""
    return [h for h in history if "time_loss_pass" in h][1:] or [history[-1]]


def main(songs: int = 60, epochs: int = 4) -> dict[str, float]:
    cfg, bare, in_task, runs = measure(songs, epochs)
    figures = summarise(cfg, bare, in_task, runs)
    print_figures(figures, cfg, runs[1][0][0]["n_train"], epochs)
    return figures


def measure(songs: int, epochs: int):
    """The bare loop here and in a Ray task, then the trainer with 1 and 2 workers."""
    import ray

    from shards.synth import SynthConfig
    from shards.write import shard_synthetic
    from sssl_dist.config import SSSLConfig
    from sssl_dist.data.folds import fold_song_ids
    from sssl_dist.driver.run import run_fold

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    shards = shard_synthetic(
        work / "corpus", work / "shards", SynthConfig(n_songs=songs, seed=5), progress=False
    )
    cfg = SSSLConfig(epochs=epochs, warmup_epochs=1, n_folds=3, val_fraction=0.0)
    fold_ids = fold_song_ids(shards, cfg, 0)

    bare = bare_epochs(cfg, shards, fold_ids)
    # The same bare loop inside a Ray task (a Ray worker process, no Train machinery): splits
    # the trainer's overhead into "a Ray worker process" and "Ray Train around it".
    in_task = ray.get(ray.remote(num_cpus=1)(bare_epochs).remote(cfg, shards, fold_ids))
    runs = {}
    # 1 and 2 workers with the default GMM site (the driver's split service); 2 workers again
    # with the fit on rank 0, for the cost of the driver side.
    for key, workers, site in ((1, 1, "driver"), (2, 2, "driver"), ("rank0", 2, "rank0")):
        t0 = time.perf_counter()
        run = run_fold(
            replace(cfg, gmm_site=site),
            shards,
            0,
            storage_path=work / "ray",
            name=f"w{workers}-{site}",
            workers=workers,
        )
        runs[key] = (run.history, time.perf_counter() - t0)
    shutil.rmtree(work, ignore_errors=True)
    return cfg, bare, in_task, runs


def summarise(cfg, bare, in_task, runs) -> dict[str, float]:
    # Medians: one slow epoch (another process on this shared machine) must not decide it.
    def median(epochs, key="time_epoch"):
        return float(np.median([e[key] for e in epochs]))

    bare_sssl = bare[cfg.warmup_epochs + 1 :] or bare[-1:]
    e_bare = median(bare_sssl)
    e_task = median(in_task[cfg.warmup_epochs + 1 :] or in_task[-1:])
    h1, fit1 = runs[1]
    h2, fit2 = runs[2]
    e1 = median(sssl_epochs(h1))
    e2 = median(sssl_epochs(h2))
    # The same SSSL epochs phase by phase: which part of the epoch the trainer makes slower.
    phases = {
        key: median(sssl_epochs(h1), key) / median(bare_sssl, key)
        for key in ("time_loss_pass", "time_train")
    }
    loss_share = float(np.mean([h["time_loss_pass"] / h["time_epoch"] for h in sssl_epochs(h2)]))
    gmm_share = float(np.mean([h["time_gather_gmm"] / h["time_epoch"] for h in sssl_epochs(h2)]))
    fit_share = float(np.mean([h["time_gmm"] / h["time_epoch"] for h in sssl_epochs(h2)]))
    wait_share = float(np.mean([h["time_rank_wait"] / h["time_epoch"] for h in sssl_epochs(h2)]))
    fixed1 = fit1 - sum(h["time_epoch"] for h in h1)
    # The driver side's cost: its gather + GMM + broadcast against rank 0's, per 2-worker epoch.
    step = {
        key: float(np.median([h["time_gather_gmm"] for h in sssl_epochs(runs[key][0])]))
        for key in (2, "rank0")
    }
    driver_cost = (step[2] - step["rank0"]) / e2
    return {
        "bare_epoch_s": e_bare,
        "trainer1_epoch_s": e1,
        "trainer2_epoch_s": e2,
        "overhead": e1 / e_bare,
        "bare_in_task_epoch_s": e_task,
        "overhead_loss_pass": phases["time_loss_pass"],
        "overhead_train_steps": phases["time_train"],
        "speedup_2w": e1 / e2,
        "loss_pass_share": loss_share,
        "gather_gmm_share": gmm_share,
        "gmm_fit_share": fit_share,
        "rank_wait_share": wait_share,
        "fixed_fit_s": fixed1,
        "driver_gmm_cost": driver_cost,
        "driver_step_ms": step[2] * 1e3,
        "rank0_step_ms": step["rank0"] * 1e3,
    }


def print_figures(f: dict[str, float], cfg, n_train: int, epochs: int) -> None:
    e_bare, e1, e2, e_task = (
        f["bare_epoch_s"], f["trainer1_epoch_s"], f["trainer2_epoch_s"], f["bare_in_task_epoch_s"]
    )  # fmt: skip
    print(
        f"Ray Train, {n_train} training segments, SmallCNN, {epochs} epochs "
        f"({cfg.warmup_epochs} warm-up), 1 torch thread per process"
    )
    print(
        f"  SSSL epoch: bare loop {e_bare:.2f} s, trainer 1 worker {e1:.2f} s "
        f"-> overhead {e1 / e_bare:.2f}x; trainer 2 workers {e2:.2f} s -> speed-up {e1 / e2:.2f}x"
    )
    print(
        f"  the bare loop in a Ray task: {e_task:.2f} s -> {e_task / e_bare:.2f}x of the bare loop "
        f"in this process; the trainer {e1 / e_task:.2f}x of that"
    )
    print(
        f"  trainer 1 worker against the bare loop, phase by phase: loss pass "
        f"{f['overhead_loss_pass']:.2f}x, optimiser steps {f['overhead_train_steps']:.2f}x"
    )
    print(
        f"  share of a 2-worker SSSL epoch: loss pass {f['loss_pass_share']:.1%}, "
        f"gather + GMM + broadcast {f['gather_gmm_share']:.1%} "
        f"(GMM fit alone {f['gmm_fit_share']:.1%}), "
        f"waiting for the slower rank before the gather {f['rank_wait_share']:.1%}"
    )
    print(
        f"  gather + GMM + broadcast: driver's split service {f['driver_step_ms']:.0f} ms, rank 0 "
        f"{f['rank0_step_ms']:.0f} ms -> the driver side costs {f['driver_gmm_cost']:+.1%} "
        "of an epoch"
    )
    print(
        "  fixed cost of one TorchTrainer.fit (start, final predict, shutdown): "
        f"{f['fixed_fit_s']:.1f} s"
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--songs", type=int, default=60)
    p.add_argument("--epochs", type=int, default=4)
    a = p.parse_args()
    main(a.songs, a.epochs)
