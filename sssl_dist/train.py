"""Distributed SSSL training with Ray Train (V2): one fold, from shards to song-level result.

The per-worker function `train_loop_per_worker` runs on every DDP rank. Each epoch:
  1. loss pass: eval mode, per-sample CE (Eq. 2) of every training segment of this rank's block;
  2. all-gather (segment position, loss) so the full loss vector exists, each segment once;
  3. one GMM fit per epoch on rank 0, clean probabilities broadcast to all ranks;
  4. the SSSL step (Eq. 4-9) on this rank's block, under DDP, equal step counts on all ranks.
Warm-up epochs (and the `inherit` baseline) train with plain CE and skip 1-3.

Why rank 0 and not an actor owned by the driver: after the all-gather rank 0 already holds the
vector, so the fit costs no extra transfer and the split is broadcast on the process group
that is already open; a driver-side actor would add two object-store round trips per epoch and
a second failure domain. The history of splits lives in one place all the same: rank 0's
per-epoch reports and checkpoints.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import torch
import torch.distributed as dist
from sklearn.metrics import roc_auc_score

from sssl_dist.config import SSSLConfig, from_dict, save_config, to_dict
from sssl_dist.data import (
    SegmentBatcher,
    SegmentTable,
    ShardSet,
    epoch_order,
    fold_split,
    loss_pass_batches,
    rank_block,
    segment_probabilities,
    steps_per_epoch,
)
from sssl_dist.method import (
    DegenerateSplitWarning,
    normalise_losses,
    per_sample_ce,
    split_clean_noisy,
)
from sssl_dist.models import build_model
from sssl_dist.song import SongClassifier, classification_metrics, majority_vote, song_features
from sssl_dist.step import ce_loss, sssl_loss

log = logging.getLogger(__name__)
STATE_FILE = "state.pt"
PROGRESS_FILE = "progress.jsonl"


# --------------------------------------------------------------------------------------------
# Small distributed helpers (no-ops in a single process)
# --------------------------------------------------------------------------------------------
def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _comm_device() -> torch.device:
    """Where collective tensors must live: NCCL (the GPU backend) only moves CUDA tensors."""
    if _distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_losses(
    positions: torch.Tensor, losses: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Step 2: every rank's (positions [n_r], losses [n_r]) -> the full vectors on every rank.

    Blocks differ in size by at most one, so each rank pads to the largest and the padding is
    cut off with the gathered sizes.
    """
    if not _distributed():
        return positions.numpy(), losses.numpy()
    world, dev = dist.get_world_size(), _comm_device()
    size = torch.tensor([positions.numel()], dtype=torch.int64, device=dev)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    packed = torch.zeros(longest, 2, dtype=torch.float64)
    packed[: positions.numel(), 0] = positions.double()  # exact for positions < 2^53
    packed[: positions.numel(), 1] = losses.double()
    packed = packed.to(dev)
    gathered = [torch.zeros_like(packed) for _ in range(world)]
    dist.all_gather(gathered, packed)
    full = torch.cat([g[: int(s.item())] for g, s in zip(gathered, sizes, strict=True)]).cpu()
    return full[:, 0].long().numpy(), full[:, 1].float().numpy()


def broadcast_array(array: np.ndarray | None, n: int) -> np.ndarray:
    """Step 3b: rank 0's float vector [n] to every rank."""
    buf = torch.from_numpy(array.astype(np.float32)) if array is not None else torch.zeros(n)
    if _distributed():
        buf = buf.to(_comm_device())
        dist.broadcast(buf, src=0)
    return buf.cpu().numpy()


def all_reduce_sum(values: list[float]) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64)
    if _distributed():
        t = t.to(_comm_device())
        dist.all_reduce(t)
    return t.cpu().tolist()


def all_gather_object(obj: Any) -> list[Any]:
    if not _distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)  # uses the current CUDA device under NCCL by itself
    return out


# --------------------------------------------------------------------------------------------
# Epoch pieces
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def loss_pass(plain, batcher, lo, hi, batch_size, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 1: eval-mode per-sample CE (Eq. 2) for table positions [lo, hi), each once."""
    plain.eval()
    positions, losses = [], []
    for idx in loss_pass_batches(lo, hi, batch_size):
        logits = plain(batcher.inputs(idx).to(device)).float()
        losses.append(per_sample_ce(logits, batcher.labels(idx).to(device)).cpu())
        positions.append(torch.from_numpy(idx))
    return torch.cat(positions), torch.cat(losses)


def fit_split(cfg: SSSLConfig, table: SegmentTable, positions, losses, epoch: int):
    """Step 3a (rank 0): order the gathered losses by position and fit the GMM split."""
    order = np.argsort(positions)
    if not np.array_equal(positions[order], np.arange(len(table))):
        raise RuntimeError("gathered segment positions do not cover the training set exactly once")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DegenerateSplitWarning)
        split = split_clean_noisy(
            losses[order],
            table.label,
            num_classes=cfg.num_classes,
            tau=cfg.tau,
            mode=cfg.split,
            min_class_share=cfg.min_class_share,
            max_iter=cfg.gmm_max_iter,
            tol=cfg.gmm_tol,
            reg_covar=cfg.gmm_reg_covar,
            seed=cfg.seed + epoch,
        )
    for w in caught:
        log.warning("epoch %d split: %s", epoch, w.message)
    return split, losses[order]


def split_metrics(
    cfg: SSSLConfig, table: SegmentTable, split, losses: np.ndarray
) -> dict[str, Any]:
    """What each epoch reports about the split, including noise detection against truth."""
    m: dict[str, Any] = {
        "n_clean": int(split.clean.sum()),
        "n_noisy": int((~split.clean).sum()),
        "clean_fraction": split.clean_fraction,
        "class_counts_in_x": split.class_counts_in_x,
        "split_warnings": split.warnings,
        "gmm": {
            name: {
                "means": f.means,
                "variances": f.variances,
                "weights": f.weights,
                "degenerate": f.degenerate,
                # What this GMM saw, for the report's plot (full vectors stay out of the JSON).
                "hist": _fit_histogram(name, losses, table),
            }
            for name, f in split.fits.items()
        },
        "loss_range": [float(np.nanmin(losses)), float(np.nanmax(losses))],
    }
    wrong = table.wrong
    if (wrong >= 0).all() and 0 < wrong.sum() < wrong.size:
        noisy = ~split.clean
        m["noise_auc"] = float(roc_auc_score(wrong, 1 - split.clean_prob))
        m["noise_precision"] = float(wrong[noisy].mean()) if noisy.any() else 0.0
        m["noise_recall"] = float(noisy[wrong == 1].mean())
    return m


def _fit_histogram(name: str, losses: np.ndarray, table: SegmentTable, bins: int = 30) -> list[int]:
    """Histogram of the normalised losses one GMM saw ("all", or "class k"), for the report."""
    members = np.ones(len(table), bool) if name == "all" else table.label == int(name.split()[-1])
    scaled = normalise_losses(losses[members & np.isfinite(losses)])
    return [] if scaled is None else np.histogram(scaled, bins=bins, range=(0, 1))[0].tolist()


def train_epoch(
    cfg, model, plain, opt, batcher, lo, hi, n_total, world, clean, epoch, device, rank
):
    """Step 4: `steps` optimiser steps on this rank's block (same count on every rank)."""
    model.train()
    # cfg.batch_size is the global batch: each rank takes its share, so the number of optimiser
    # steps per epoch, and hence the result, does not depend on the number of workers.
    per_rank = max(1, cfg.batch_size // world)
    steps = steps_per_epoch(n_total, world, per_rank)
    order = epoch_order(lo, hi, steps, per_rank, cfg.seed, epoch)
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + epoch * 31 + rank)
    sums = np.zeros(4)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if cfg.bf16 and device.type == "cuda"
        else nullcontext()
    )
    for idx in order:
        x = batcher.inputs(idx)
        y = batcher.labels(idx)
        if device.type == "cuda":
            x, y = x.pin_memory(), y.pin_memory()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast:
            if clean is None:
                out = ce_loss(model, x, y)
            else:
                mask = torch.from_numpy(clean[idx]).to(device)
                out = sssl_loss(model, plain, x, y, mask, cfg, gen)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        sums += (out.l_mix, out.l_kl, out.n_clean, out.n_noisy)
    return {"l_mix": sums[0] / steps, "l_kl": sums[1] / steps, "steps": steps}


@torch.no_grad()
def segment_accuracy(plain, batcher, table, rank, world, batch_size, device) -> dict[str, float]:
    """Validation segment accuracy against inherited labels and, when known, the truth."""
    plain.eval()
    lo, hi = rank_block(len(table), rank, world)
    counts = np.zeros(3)
    for idx in loss_pass_batches(lo, hi, batch_size):
        pred = plain(batcher.inputs(idx).to(device)).argmax(-1).cpu().numpy()
        counts += (
            np.sum(pred == table.label[idx]),
            np.sum(pred == table.true_label[idx]),
            idx.size,
        )
    hit, true_hit, n = all_reduce_sum(counts.tolist())
    out = {"val_seg_acc": hit / max(n, 1)}
    if (table.true_label >= 0).all() and n:
        out["val_seg_acc_truth"] = true_hit / n
    return out


def song_probabilities(plain, mels, songs_by_id, song_ids, cfg, fc, device, batch_size):
    """P_s(E_k) for every segment of each song: {song id: [S, K] as nested lists}."""
    return {
        sid: segment_probabilities(
            plain, mels[sid], songs_by_id[sid]["duration_s"], cfg, fc, device, batch_size
        ).tolist()
        for sid in song_ids
    }


def song_level_results(cfg, songs_by_id, probs, split_ids) -> dict[str, Any]:
    """Eq. 10 features -> SVM trained on train songs -> val/test metrics, with baselines."""
    feats = {sid: song_features(np.asarray(p), cfg.theta) for sid, p in probs.items() if len(p)}
    train_ids = [s for s in split_ids["train"] if s in feats]
    labels = {sid: songs_by_id[sid][cfg.task] for sid in probs}
    y_train = np.array([labels[s] for s in train_ids])
    clf = SongClassifier(cfg.svm_c, cfg.svm_kernel, cfg.seed).fit(
        np.stack([feats[s] for s in train_ids]), y_train
    )
    out: dict[str, Any] = {}
    for part in ("val", "test"):
        ids = [s for s in split_ids[part] if s in feats]
        if not ids:
            continue
        y = np.array([labels[s] for s in ids])
        pred = clf.predict(np.stack([feats[s] for s in ids]))
        vote = np.array([majority_vote(np.asarray(probs[s])) for s in ids])
        for name, m in classification_metrics(y, pred, cfg.num_classes, y_train).items():
            out[f"{part}_{name}"] = m
        vote_m = classification_metrics(y, vote, cfg.num_classes, y_train)
        out[f"{part}_vote_acc"], out[f"{part}_vote_f1"] = vote_m["acc"], vote_m["f1"]
        out[f"{part}_songs"] = len(ids)
        out[f"{part}_true"] = dict(zip(ids, y.tolist(), strict=True))  # for the confusion plot
        out[f"{part}_pred"] = dict(zip(ids, pred.tolist(), strict=True))
    return out


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------
def save_checkpoint(
    state: dict[str, Any], extra_json: dict[str, Any], cfg: SSSLConfig, metrics, keep: bool = False
):
    """Report metrics with a checkpoint (rank 0 writes it; other ranks report metrics only).

    Ray Train copies the directory to storage, so it is deleted afterwards, except with `keep`
    (local mode, num_workers=0), where Ray keeps pointing at the directory itself.
    """
    if ray.train.get_context().get_world_rank() != 0:
        ray.train.report(metrics)
        return
    tmp = tempfile.mkdtemp(prefix="sssl-ckpt-")
    try:
        torch.save(state, os.path.join(tmp, STATE_FILE))
        for name, data in extra_json.items():
            Path(tmp, name).write_text(json.dumps(data, default=_json_default))
        save_config(cfg, os.path.join(tmp, "config.yaml"))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(type(obj))


def load_state(checkpoint_dir: str | Path) -> dict[str, Any]:
    """Model checkpoints hold tensors and plain values only: weights_only=True loads them."""
    return torch.load(Path(checkpoint_dir) / STATE_FILE, map_location="cpu", weights_only=True)


# --------------------------------------------------------------------------------------------
# The per-worker training function
# --------------------------------------------------------------------------------------------
def train_loop_per_worker(loop: dict[str, Any]) -> None:
    cfg: SSSLConfig = from_dict(SSSLConfig, loop["config"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(cfg.torch_threads)
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank (DDP also syncs)

    # Data: this rank's contiguous block of the fold's training segments, plus its validation
    # block and its share of songs to predict at the end. Only those songs' mels are loaded.
    shards = ShardSet(loop["shards"])
    fc = shards.feature_config
    by_id = {s["song_id"]: s for s in shards.songs}
    split_ids = loop["split_ids"]
    table = SegmentTable.build(
        [by_id[s] for s in split_ids["train"]], cfg.task, cfg.segment_seconds, cfg.hop_seconds
    )
    val_table = SegmentTable.build(
        [by_id[s] for s in split_ids["val"]], cfg.task, cfg.segment_seconds, cfg.hop_seconds
    )
    lo, hi = rank_block(len(table), rank, world)
    vlo, vhi = rank_block(len(val_table), rank, world)
    predict_ids = sorted(sum(split_ids.values(), []))[rank::world]
    needed = (
        {table.song_ids[i] for i in table.song_of[lo:hi]}
        | {val_table.song_ids[i] for i in val_table.song_of[vlo:vhi]}
        | set(predict_ids)
    )
    mels = shards.load_mels(needed)
    batcher, val_batcher = SegmentBatcher(table, mels, fc), SegmentBatcher(val_table, mels, fc)

    plain = build_model(cfg.backbone, cfg.num_classes, cfg.dropout)
    model = ray.train.torch.prepare_model(plain)  # moves to device; DDP when world > 1
    plain = model.module if hasattr(model, "module") else model
    opt = (
        torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        if cfg.optimizer == "adam"
        else torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    )

    eval_batch = cfg.batch_size * 2  # no gradients kept: twice the training batch fits
    start_epoch, history, clean = 0, [], None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:  # resume: after a worker failure, or a re-run of the same run name
        with checkpoint.as_directory() as d:
            state = load_state(d)
            history = json.loads(Path(d, "history.json").read_text())
        plain.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch = int(state["epoch"]) + 1
        clean = state["clean"].numpy() if state["clean"].numel() else None

    for epoch in range(start_epoch, cfg.epochs):
        torch.manual_seed(cfg.seed * 1_000_003 + epoch * 101 + rank)  # dropout; resumable
        t0 = time.perf_counter()
        metrics: dict[str, Any] = {"epoch": epoch, "fold": loop["fold"], "n_train": len(table)}
        if cfg.method != "inherit" and epoch >= cfg.warmup_epochs:
            # 1. loss pass over this rank's block (eval mode, Eq. 2)
            positions, losses = loss_pass(plain, batcher, lo, hi, eval_batch, device)
            t1 = time.perf_counter()
            # Ranks whose blocks hold longer songs finish later: wait here, timed apart, so
            # the gather's own cost is not confused with that imbalance.
            if _distributed():
                dist.barrier()
            t_wait = time.perf_counter()
            # 2. all-gather (position, loss): the full loss vector, every segment once
            all_pos, all_losses = all_gather_losses(positions, losses)
            t_gather = time.perf_counter()
            # 3. one GMM fit on rank 0, clean probabilities broadcast to every rank
            w = None
            if rank == 0:
                split, ordered = fit_split(cfg, table, all_pos, all_losses, epoch)
                w = split.clean_prob
                metrics.update(split_metrics(cfg, table, split, ordered))
                metrics["gathered_exactly_once"] = True  # fit_split raises otherwise
            t_gmm = time.perf_counter()
            clean = broadcast_array(w, len(table)) > cfg.tau
            t2 = time.perf_counter()
            metrics.update(
                time_loss_pass=t1 - t0,
                time_rank_wait=t_wait - t1,
                time_gather=t_gather - t_wait,
                time_gmm=t_gmm - t_gather,
                time_gather_gmm=t2 - t_wait,  # gather + GMM fit + broadcast, without the wait
            )
        else:
            t2 = t0
        # 4. the training step: CE in warm-up / inherit, Eq. 4-9 otherwise, under DDP
        metrics.update(
            train_epoch(
                cfg,
                model,
                plain,
                opt,
                batcher,
                lo,
                hi,
                len(table),
                world,
                clean if epoch >= cfg.warmup_epochs else None,
                epoch,
                device,
                rank,
            )
        )
        t3 = time.perf_counter()
        if len(val_table):
            metrics.update(
                segment_accuracy(plain, val_batcher, val_table, rank, world, eval_batch, device)
            )
        metrics.update(time_train=t3 - t2, time_epoch=time.perf_counter() - t0)
        history.append(metrics)
        _log_epoch(loop, metrics)
        state = _training_state(plain, opt, epoch, clean)
        save_checkpoint(state, {"history.json": history}, cfg, _scalars(metrics), loop["local"])

    # After training: segment probabilities for every song of the fold, shared by all ranks,
    # then Eq. 10 + SVM on rank 0.
    probs = {}
    for part in all_gather_object(
        song_probabilities(plain, mels, by_id, predict_ids, cfg, fc, device, eval_batch)
    ):
        probs.update(part)
    final: dict[str, Any] = {"epoch": cfg.epochs, "fold": loop["fold"], "final": True}
    if rank == 0:
        final.update(song_level_results(cfg, by_id, probs, split_ids))
        if history:
            final.update(
                {
                    k: v
                    for k, v in history[-1].items()
                    if k.startswith("val_seg") or k.startswith("noise_")
                }
            )
    state = _training_state(plain, opt, cfg.epochs - 1, clean)
    save_checkpoint(
        state,
        {
            "history.json": history,
            "result.json": final,
            "songs.json": probs,
            "split_ids.json": split_ids,
        },
        cfg,
        _scalars(final),
        loop["local"],
    )


def _training_state(plain, opt, epoch: int, clean: np.ndarray | None) -> dict[str, Any]:
    """What a checkpoint holds: tensors and plain values only (weights_only loadable)."""
    return {
        "model": plain.state_dict(),
        "optimizer": opt.state_dict(),
        "epoch": epoch,
        "torch_rng": torch.get_rng_state(),
        "clean": torch.from_numpy(clean) if clean is not None else torch.zeros(0),
    }


def _scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    """Ray's reported metrics: numbers and flags only (lists and dicts stay in history.json)."""
    return {k: v for k, v in metrics.items() if isinstance(v, int | float | bool | str)}


def _log_epoch(loop: dict[str, Any], metrics: dict[str, Any]) -> None:
    """Rank 0: scalars to TensorBoard and one JSON line to progress.jsonl (what the driver
    tails for its progress lines) under the run directory."""
    if ray.train.get_context().get_world_rank() != 0 or not loop.get("tensorboard_dir"):
        return
    run_dir = Path(loop["tensorboard_dir"]).parent
    run_dir.mkdir(parents=True, exist_ok=True)  # local mode (num_workers=0) does not create it
    with open(run_dir / PROGRESS_FILE, "a") as fh:
        fh.write(json.dumps(_scalars(metrics)) + "\n")
    from tensorboardX import SummaryWriter

    with SummaryWriter(loop["tensorboard_dir"]) as writer:
        for key, value in _scalars(metrics).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                writer.add_scalar(key, value, metrics["epoch"])


# --------------------------------------------------------------------------------------------
# The driver: one fold as one TorchTrainer
# --------------------------------------------------------------------------------------------
@dataclass
class FoldRun:
    result: dict[str, Any]  # song-level metrics (result.json)
    history: list[dict[str, Any]]  # per-epoch metrics
    songs: dict[str, list]  # per-song segment probabilities
    split_ids: dict[str, list[str]]
    checkpoint_dir: str  # a local copy of the final checkpoint
    run_dir: str


def fold_song_ids(shards: ShardSet, cfg: SSSLConfig, fold: int) -> dict[str, list[str]]:
    songs = shards.songs  # sorted by id: the folds are the same for every configuration
    labels = np.array([s[cfg.task] for s in songs])
    train, val, test = fold_split(labels, cfg.n_folds, fold, cfg.val_fraction, cfg.seed)
    ids = [s["song_id"] for s in songs]
    return {
        "train": [ids[i] for i in train],
        "val": [ids[i] for i in val],
        "test": [ids[i] for i in test],
    }


def run_fold(
    cfg: SSSLConfig,
    shard_dir: str | Path,
    fold: int,
    *,
    storage_path: str | Path,
    name: str,
    workers: int = 2,
    use_gpu: bool = False,
    cpus_per_worker: float = 1.0,
    callbacks: list | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> FoldRun:
    """Train one fold with a TorchTrainer and return its results (copied off the checkpoint).

    Re-running with the same (storage_path, name) resumes from the latest checkpoint.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    shards = ShardSet(shard_dir)
    split_ids = fold_song_ids(shards, cfg, fold)
    storage_path = (
        str(Path(storage_path).resolve()) if "://" not in str(storage_path) else str(storage_path)
    )
    run_dir = f"{storage_path}/{name}"
    tb_dir = f"{run_dir}/tensorboard" if "://" not in run_dir else None
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config": to_dict(cfg),
            "shards": str(Path(shard_dir).resolve()),
            "fold": fold,
            "split_ids": split_ids,
            "tensorboard_dir": tb_dir,
            "local": workers == 0,
        },
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
    result = _fit_with_progress(
        trainer, Path(run_dir) / PROGRESS_FILE if tb_dir else None, on_epoch
    )
    if result.error:
        raise result.error
    local = tempfile.mkdtemp(prefix="sssl-ckpt-")
    result.checkpoint.to_directory(local)
    read = lambda n: json.loads(Path(local, n).read_text())  # noqa: E731
    return FoldRun(
        read("result.json"),
        read("history.json"),
        read("songs.json"),
        read("split_ids.json"),
        local,
        run_dir,
    )


def _fit_with_progress(trainer, progress: Path | None, on_epoch):
    """trainer.fit() in a thread while the driver tails rank 0's progress lines."""
    if progress is None or on_epoch is None:
        return trainer.fit()
    seen = len(progress.read_text().splitlines()) if progress.is_file() else 0
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(trainer.fit)
        while True:
            done = future.done()
            lines = progress.read_text().splitlines() if progress.is_file() else []
            for line in lines[seen:]:
                on_epoch(json.loads(line))
            seen = len(lines)
            if done:
                return future.result()
            time.sleep(0.5)


def mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    return (
        (float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0)
        if arr.size
        else (float("nan"), 0.0)
    )
