"""The pieces of one training epoch on one rank: loss pass, training, validation. The split
between them is fitted on the driver side (split.py), or on rank 0 with the same function.

`train.py` calls them in the order of its numbered steps; `benchmarks/bench_train.py` calls the
same functions without Ray. Each takes the rank's `Worker` (its data, model and optimiser) as
one object.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sssl_dist.config import FeatureConfig, SSSLConfig
from sssl_dist.data.segments import (
    SegmentBatcher,
    SegmentTable,
    epoch_batches,
    loss_pass_batches,
    rank_block,
    rank_share,
    segment_probabilities,
    steps_per_epoch,
)
from sssl_dist.method.equations import clean_bn_statistics, ema_teacher, ema_update
from sssl_dist.method.tasks import Task, task_of
from sssl_dist.rank.collectives import all_reduce_sum

log = logging.getLogger(__name__)


@dataclass
class AuxNet:
    """One network that scores the split apart from the trained one (scorers.py): what it
    trains on, what it scores, and how far it has trained."""

    model: torch.nn.Module  # what gradients flow through (DDP wrapper when world > 1)
    plain: torch.nn.Module
    opt: torch.optim.Optimizer
    train_pos: np.ndarray  # the training positions it is trained on
    score_pos: np.ndarray  # the training positions whose losses it gives the split
    stream: int
    epochs_done: int = 0
    # "peer" only: the split fitted on the trained network's losses, this epoch's step for it.
    clean_w: np.ndarray | None = None


@dataclass
class Worker:
    """Everything one rank trains with: built once per fold by `train.set_up_rank`."""

    cfg: SSSLConfig
    rank: int
    world: int
    device: torch.device
    table: SegmentTable  # the fold's training segments (all ranks hold the same table)
    val_table: SegmentTable  # validation songs' segments
    batcher: SegmentBatcher
    val_batcher: SegmentBatcher
    model: torch.nn.Module  # what gradients flow through (DDP wrapper when world > 1)
    plain: torch.nn.Module  # the bare network inside it
    opt: torch.optim.Optimizer
    fc: FeatureConfig  # the shard set's features (for song-level segmenting)
    # The EMA of `plain`'s weights that predicts the pseudo-labels (pseudo_label_network: ema);
    # None until the first SSSL epoch creates it, or a checkpoint restores it.
    teacher: torch.nn.Module | None = None
    # Whether this rank trains under bf16 autocast: `cfg.bf16` with "auto" resolved
    # (precision.py), the same on every rank.
    bf16: bool = False
    precision: str = "set in the config"  # why `bf16` is what it is, for the log
    # The networks that score the split apart from `plain` (scorers.py; split_network
    # "out_of_sample" or "peer"), empty otherwise.
    aux: list[AuxNet] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        cfg: SSSLConfig,
        table: SegmentTable,
        val_table: SegmentTable,
        mels: dict[str, np.ndarray],
        fc: FeatureConfig,
        model: torch.nn.Module,
        opt: torch.optim.Optimizer,
        *,
        rank: int = 0,
        world: int = 1,
        device: torch.device | None = None,
    ) -> Worker:
        """A rank's worker from its tables and mels; `model` may be a DDP wrapper."""
        return cls(
            cfg=cfg,
            rank=rank,
            world=world,
            device=device or torch.device("cpu"),
            table=table,
            val_table=val_table,
            batcher=SegmentBatcher(table, mels, fc),
            val_batcher=SegmentBatcher(val_table, mels, fc),
            model=model,
            plain=model.module if hasattr(model, "module") else model,
            opt=opt,
            fc=fc,
            bf16=cfg.bf16 is True,
        )

    @property
    def task(self) -> Task:
        """What this run predicts, and everything that depends on it (method/tasks)."""
        return task_of(self.cfg)

    @property
    def block(self) -> tuple[int, int]:
        """This rank's contiguous block of training positions for the loss pass."""
        return rank_block(len(self.table), self.rank, self.world)

    @property
    def eval_batch(self) -> int:
        return self.cfg.batch_size * 2  # no gradients kept: twice the training batch fits

    def autocast(self):
        """bf16 autocast where chosen (`self.bf16`), on the worker's device type (CUDA on
        GPUs; CPU autocast runs the same path in the tests, where no GPU is lent)."""
        if not self.bf16:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)


@torch.no_grad()
def loss_pass(
    w: Worker, network: torch.nn.Module | None = None, positions: np.ndarray | None = None
) -> torch.Tensor:
    """Step 1: eval-mode per-segment loss (the task's: CE, Eq. 2, for classification) for this
    rank's block [lo, hi), each position once and in position order (the gather relies on that
    order). `network` (default: the trained one) and `positions` (default: the whole block)
    serve the networks that score the split apart from it (scorers.py)."""
    network = w.plain if network is None else network
    network.eval()
    losses = []
    lo, hi = w.block
    chosen = np.arange(lo, hi) if positions is None else np.asarray(positions)
    for at in range(0, chosen.size, w.eval_batch):
        idx = chosen[at : at + w.eval_batch]
        with w.autocast():
            logits = network(w.batcher.inputs(idx).to(w.device)).float()
        losses.append(w.task.segment_losses(logits, w.batcher.labels(idx).to(w.device)).cpu())
    return torch.cat(losses) if losses else torch.zeros(0)


def epoch_lr(cfg: SSSLConfig, epoch: int) -> float:
    """The learning rate of `epoch` under `cfg.lr_schedule` (config.py), times
    `cfg.sssl_lr_scale` in the SSSL epochs."""
    lr = cfg.lr
    if cfg.lr_schedule == "cosine":
        lr = cfg.lr * (1 + math.cos(math.pi * epoch / cfg.epochs)) / 2
    if cfg.method != "inherit" and epoch >= cfg.warmup_epochs:
        lr *= cfg.sssl_lr_scale
    return lr


def begin_sssl_epoch(w: Worker, epoch: int) -> None:
    """What the candidate fixes do as an SSSL epoch begins. At the first one, the optimiser's
    state is cleared (`sssl_optimizer: reset`); a resumed run that restarts that epoch clears
    it again, as the uninterrupted run did. The EMA teacher (`pseudo_label_network: ema`) is
    created from the network unless a checkpoint restored it: it starts where the warm-up
    ended, so runs that share the warm-up need nothing from it."""
    if w.cfg.sssl_optimizer == "reset" and epoch == w.cfg.warmup_epochs:
        w.opt.state.clear()  # Adam: moments and step counts; SGD: momentum buffers
    if w.cfg.pseudo_label_network == "ema" and w.teacher is None:
        w.teacher = ema_teacher(w.plain)


def bn_statistics_batches(w: Worker, epoch: int) -> list[np.ndarray]:
    """`bn_stats: clean`: the training positions the running statistics are recomputed on,
    `bn_stats_segments` of them in random batches, the same on every rank (seeded by seed and
    epoch). Random, not song-ordered: PyTorch averages the batches' own variances, which
    miss the spread between batches if each batch holds one song."""
    order = np.random.default_rng([w.cfg.seed, epoch, 1]).permutation(len(w.table))
    chosen = order[: w.cfg.bn_stats_segments]
    return [chosen[i : i + w.eval_batch] for i in range(0, chosen.size, w.eval_batch)]


def train_epoch(w: Worker, clean_w: np.ndarray | None, epoch: int) -> dict[str, float]:
    """Step 4: the epoch's optimiser steps, the same count on every rank.

    clean_w [N] (w on X, 0 on U) selects the SSSL step (Eq. 4-9); None trains with plain CE
    (warm-up and `inherit`). One global permutation per epoch is cut into global batches, and
    each rank takes its share of every batch: 1 and 2 workers see exactly the same batches.
    """
    cfg = w.cfg
    w.model.train()  # before the EMA teacher is copied from it, as it always was
    if clean_w is not None:
        begin_sssl_epoch(w, epoch)
    # The network that predicts the step's targets: the one being trained, or its EMA.
    targets_by = w.teacher if w.teacher is not None else w.plain
    teacher = w.teacher
    after_step = None if teacher is None else lambda: ema_update(teacher, w.plain, cfg.ema_decay)
    out = optimiser_steps(w, w.model, w.opt, targets_by, clean_w, epoch, after_step=after_step)
    if clean_w is not None and cfg.bn_stats == "clean":
        # Eval mode (next loss pass, validation, prediction) normalises with statistics of
        # unmixed inputs under the epoch's final weights, not those the mixed batches left.
        batches = bn_statistics_batches(w, epoch)
        clean_bn_statistics(w.plain, (w.batcher.inputs(i).to(w.device) for i in batches))
    return out


def optimiser_steps(
    w: Worker,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    targets_by: torch.nn.Module,
    clean_w: np.ndarray | None,
    epoch: int,
    *,
    positions: np.ndarray | None = None,
    stream: int = 0,
    after_step: Callable[[], None] | None = None,
) -> dict[str, float]:
    """One epoch of optimiser steps of `model` over the training positions (`positions`, or
    all of them): plain CE with clean_w None, else the SSSL step with `targets_by` predicting
    its targets. `stream` gives another network its own batch order and mixup draws (0: the
    trained network's); `after_step` runs after every step (the EMA teacher's update)."""
    cfg = w.cfg
    model.train()
    lr = epoch_lr(cfg, epoch)
    for group in opt.param_groups:  # a function of the epoch alone: resumes exactly
        group["lr"] = lr
    # cfg.batch_size is the global batch: each rank takes its share, so the number of optimiser
    # steps per epoch, and hence the result, does not depend on the number of workers.
    per_rank = max(1, cfg.batch_size // w.world)
    n = len(w.table) if positions is None else positions.size
    steps = steps_per_epoch(n, per_rank * w.world)
    batches = epoch_batches(n, steps, per_rank * w.world, cfg.seed + stream, epoch)
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + epoch * 31 + w.rank + stream * 65537)
    sums = np.zeros(2)
    for batch in batches:
        idx = rank_share(batch, w.rank, w.world)
        if positions is not None:
            idx = positions[idx]
        x, y = w.batcher.inputs(idx), w.batcher.labels(idx)
        if w.device.type == "cuda":
            x, y = x.pin_memory(), y.pin_memory()
        x, y = x.to(w.device, non_blocking=True), y.to(w.device, non_blocking=True)
        with w.autocast():
            if clean_w is None:
                out = w.task.warmup_loss(model, x, y)
            else:
                weights = torch.from_numpy(clean_w[idx]).to(w.device)
                out = w.task.step_loss(model, targets_by, x, y, weights, cfg, gen)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        if after_step is not None:
            after_step()
        sums += (out.l_mix, out.l_kl)
    return {"l_mix": sums[0] / steps, "l_kl": sums[1] / steps, "steps": steps, "lr": lr}


@torch.no_grad()
def segment_accuracy(w: Worker) -> dict[str, float]:
    """Validation segment figures (the task's: accuracy against inherited labels and, when
    known, the truth, for classification), summed over every rank's block."""
    w.plain.eval()
    table = w.val_table
    lo, hi = rank_block(len(table), w.rank, w.world)
    sums = None
    for idx in loss_pass_batches(lo, hi, w.eval_batch):
        with w.autocast():
            outputs = w.plain(w.val_batcher.inputs(idx).to(w.device))
        scores = w.task.segment_scores(outputs, table.label[idx], table.true_label[idx])
        sums = scores if sums is None else sums + scores
    if sums is None:  # an empty block still joins the all-reduce, with zeros of the same size
        sums = w.task.segment_scores(
            torch.zeros(0, w.task.num_outputs), table.label[:0], table.true_label[:0]
        )
    return w.task.segment_metrics(all_reduce_sum(sums.tolist()))


def song_probabilities(
    w: Worker,
    mels: dict[str, np.ndarray],
    songs_by_id: dict[str, dict[str, Any]],
    song_ids: list[str],
) -> dict[str, list]:
    """P_s(E_k) for every segment of each song: {song id: [S, K] as nested lists}."""
    return {
        sid: segment_probabilities(
            w.plain,
            mels[sid],
            songs_by_id[sid]["duration_s"],
            w.cfg,
            w.fc,
            w.task,
            w.device,
            w.eval_batch,
        ).tolist()
        for sid in song_ids
    }
