"""The Ray Train (V2) per-worker function: one fold of SSSL on one DDP rank.

`train_loop_per_worker` runs on every rank and reads as its steps:
  set up this rank -> restore -> for each epoch: split the epoch, train the epoch, report
  -> finish the fold.
Splitting an SSSL epoch (after warm-up; never for `inherit`) is:
  1. loss pass: eval mode, per-sample CE (Eq. 2) of every training segment of this rank's block;
  2. gather every rank's block of losses to rank 0 (float16; positions follow from the blocks);
  3. one GMM fit, by the driver's split service (split_service.py; `gmm_site: driver`) or on
     rank 0 (`gmm_site: rank0`); rank 0 broadcasts ok/error first, then the split (w on X, 0 on U);
and training the epoch is
  4. the SSSL step (Eq. 4-9) under DDP: one global permutation per epoch, each rank taking its
     share of every global batch, so all ranks take the same number of steps.

Either way the gather goes to rank 0 and the split leaves from rank 0 on the process group that
is already open; the driver side adds one object-store round trip per epoch (its measured cost
is in BENCHMARKS.md) and keeps the split history where a worker failure cannot reach it.

The driver side (`run_fold`) is in fold.py; the epoch pieces in epoch.py; collectives in
collectives.py; checkpoint input/output in checkpoint.py.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.train
import ray.train.collective
import torch

from sssl_dist.config import SSSLConfig, from_dict
from sssl_dist.data.segments import SegmentTable, ShardSet, training_table
from sssl_dist.files import runfiles
from sssl_dist.files.checkpoint import (
    BestEpoch,
    copy_weights,
    epoch_dir_name,
    load_state,
    newest_persisted,
    save_checkpoint,
    training_state,
    weights_of,
    write_checkpoint_dir,
)
from sssl_dist.method.equations import LossMemory, ema_teacher
from sssl_dist.method.models import build_model
from sssl_dist.method.split import fit_split_with_metrics
from sssl_dist.method.tasks import task_of
from sssl_dist.rank.collectives import (
    all_gather_object,
    broadcast_clean_w,
    broadcast_status,
    distributed,
    gather_losses,
    rank0_decides,
)
from sssl_dist.rank.epoch import (
    Worker,
    loss_pass,
    segment_accuracy,
    song_probabilities,
    train_epoch,
)
from sssl_dist.rank.precision import choose_precision
from sssl_dist.rank.scorers import (
    aux_state,
    build_aux,
    catch_up,
    load_aux_state,
    scored_losses,
    train_peer_epoch,
)


@dataclass(frozen=True)
class LoopConfig:
    """What the driver hands every rank (Ray's train_loop_config carries it as a dict)."""

    config: dict[str, Any]  # the resolved SSSLConfig, as a dict
    shards: str  # shard directory (same path on every node)
    fold: int | None  # None for the final refit: it only labels the metrics
    fold_ids: dict[str, list[str]]  # song ids of train / val / test
    run_dir: str  # storage_path/name: where this run's checkpoints are persisted
    tensorboard_dir: str | None  # None for remote storage
    local: bool  # Ray Train local mode (num_workers=0)
    # Tests only: raise inside this step on rank 0 ("gmm"), to prove that a failure there
    # ends the run promptly instead of leaving the other ranks waiting.
    fault: str = ""
    # The fold's split service as the driver named it: (namespace, name), or ("", "") to fit
    # the GMM on rank 0. The driver says where it is, so a rank never imports the driver.
    split_service: tuple[str, str] = ("", "")
    # Keep the last warm-up epoch's checkpoint as run_dir/warmup for other runs (warmup.py).
    save_warmup: bool = False


@dataclass
class Progress:
    """Where a (re)started rank begins: the next epoch, the history so far, the last split."""

    start_epoch: int = 0
    history: list[dict[str, Any]] | None = None
    clean_w: np.ndarray | None = None  # the last split: w on X, 0 on U
    memory: LossMemory | None = None  # rank 0's per-segment loss sums (selection: mean_loss)
    best: BestEpoch | None = None  # the best validation epoch so far (eval_epoch: best_val)


def train_loop_per_worker(loop_dict: dict[str, Any]) -> None:
    loop = LoopConfig(**loop_dict)
    w, mels, by_id = set_up_rank(loop)
    progress = restore(w, loop)
    history, clean_w = progress.history or [], progress.clean_w
    memory = progress.memory or LossMemory.empty(len(w.table))
    best = progress.best or BestEpoch()
    if loop.split_service[1] and w.rank == 0:
        # The service may hold splits of epochs this (re)started run trains again.
        ray.get(_service(loop.split_service).resume.remote(progress.start_epoch, progress.memory))
    cfg = w.cfg
    for epoch in range(progress.start_epoch, cfg.epochs):
        torch.manual_seed(cfg.seed * 1_000_003 + epoch * 101 + w.rank)  # dropout; resumable
        t0 = time.perf_counter()
        metrics: dict[str, Any] = {
            "epoch": epoch,
            "fold": loop.fold,
            "n_train": len(w.table),
            "bf16": w.bf16,
        }
        if epoch == progress.start_epoch:  # the driver's first progress line says why
            metrics["precision"] = w.precision
        sssl_epoch = cfg.method != "inherit" and epoch >= cfg.warmup_epochs
        if sssl_epoch:  # steps 1-3
            scorer = best.state if cfg.split_network == "best_val" else None
            if scorer is not None:
                metrics["split_network_epoch"] = best.epoch
            clean_w = split_epoch(w, loop, epoch, metrics, memory, scorer)
        t_train = time.perf_counter()
        metrics.update(train_epoch(w, clean_w if sssl_epoch else None, epoch))  # step 4
        if sssl_epoch:
            train_peer_epoch(w, epoch)  # split_network: peer (scorers.py)
        t_val = time.perf_counter()
        if len(w.val_table):
            metrics.update(segment_accuracy(w))
            # Tracked whatever eval_epoch and split_network say (only they read it), so runs
            # that differ in those alone train identical warm-up checkpoints (warmup.py).
            best.offer(epoch, metrics[w.task.selection_key], w.plain)
        metrics.update(time_train=t_val - t_train, time_epoch=time.perf_counter() - t0)
        history.append(metrics)
        _log_epoch(loop, metrics)
        state = training_state(
            w.plain, w.opt, epoch, clean_w, memory, best, w.teacher, aux_state(w.aux)
        )
        files = {runfiles.HISTORY: history}
        save_checkpoint(
            state, files, cfg, _scalars(metrics), epoch_dir_name(epoch), _local_run_dir(loop)
        )
        if loop.save_warmup and epoch == cfg.warmup_epochs - 1 and w.rank == 0:
            # The warm-up's end, kept apart from the rotating epoch checkpoints: runs that
            # differ only after the warm-up continue from it (warmup.py).
            write_checkpoint_dir(Path(loop.run_dir, runfiles.WARMUP), state, files, cfg)
        if after_checkpoint(w.rank == 0 and stop_requested(loop)) and epoch < cfg.epochs - 1:
            return  # the driver asked to stop (Ctrl-C, SIGTERM): this epoch is checkpointed
    finish_fold(w, loop, mels, by_id, history, clean_w, memory, best)


def after_checkpoint(stop: bool) -> bool:
    """Where every rank waits for rank 0 to finish writing and uploading the epoch's
    checkpoint (a VGG16 one with its optimiser is 2-2.7 GB: minutes on slow shared storage),
    and learns rank 0's `stop`. The wait is Ray Train's barrier, which has no timeout (it warns
    each minute), not a torch collective: the next one would fail after gloo_timeout_s."""
    return bool(ray.train.collective.broadcast_from_rank_zero(stop))


def stop_requested(loop: LoopConfig) -> bool:
    """Whether the driver has asked this run to stop after the epoch in flight."""
    return "://" not in loop.run_dir and Path(loop.run_dir, runfiles.STOP).is_file()


def set_up_rank(loop: LoopConfig) -> tuple[Worker, dict[str, np.ndarray], dict[str, dict]]:
    """This rank's data (segment tables and the mels they need), model and optimiser."""
    cfg: SSSLConfig = from_dict(SSSLConfig, loop.config)
    ctx = ray.train.get_context()
    torch.set_num_threads(cfg.torch_threads)
    return build_worker(
        cfg,
        ShardSet(loop.shards),
        loop.fold_ids,
        rank=ctx.get_world_rank(),
        world=ctx.get_world_size(),
        device=ray.train.torch.get_device(),
        prepare=ray.train.torch.prepare_model,  # moves to the device; DDP when world > 1
    )


def build_worker(
    cfg: SSSLConfig,
    shards: ShardSet,
    fold_ids: dict[str, list[str]],
    *,
    rank: int = 0,
    world: int = 1,
    device: torch.device | None = None,
    prepare: Callable[[torch.nn.Module], torch.nn.Module] = lambda model: model,
) -> tuple[Worker, dict[str, np.ndarray], dict[str, dict]]:
    """One rank's Worker for the songs `fold_ids`: the trainer's (set_up_rank) and, with the
    defaults, a plain single process's (benchmarks time the same path without Ray)."""
    by_id = shards.by_id
    task = task_of(cfg)
    table = training_table([by_id[s] for s in fold_ids["train"]], cfg, task.targets)
    # Validation keeps the inherited labels whatever `train_labels` says: every arm selects its
    # epoch the same way, and segment accuracy against the truth is reported beside it.
    val_table = SegmentTable.build(
        [by_id[s] for s in fold_ids["val"]], task.targets, cfg.segment_seconds, cfg.hop_seconds
    )
    # Each global batch mixes segments from all training songs, so every rank needs all the
    # training mels (and the validation and test songs it predicts at the end).
    mels = shards.load_mels({s for ids in fold_ids.values() for s in ids})
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank (DDP also syncs)
    model = prepare(build_model(cfg.backbone, task.num_outputs, cfg.dropout))
    worker = Worker.build(
        cfg,
        table,
        val_table,
        mels,
        shards.feature_config,
        model,
        build_optimizer(cfg, model.parameters()),
        rank=rank,
        world=world,
        device=device,
    )
    worker.aux = build_aux(
        cfg, table, task.num_outputs, prepare, lambda m: build_optimizer(cfg, m.parameters())
    )
    if cfg.bf16 == "auto":
        resolve_auto_bf16(worker)
    return worker, mels, by_id


def resolve_auto_bf16(w: Worker) -> None:
    """`bf16: auto` for this run: rank 0 probes its device (precision.py) and every rank takes
    its answer, so DDP ranks never train in different precisions."""
    chosen = None
    if w.rank == 0:
        shape = tuple(w.batcher.inputs(np.arange(min(len(w.table), w.cfg.batch_size))).shape)
        chosen = choose_precision("auto", w.plain, shape, w.device)
    w.bf16 = rank0_decides(chosen is not None and chosen.bf16)
    w.precision = chosen.reason if chosen is not None else "rank 0's choice"


def build_optimizer(cfg: SSSLConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """Adam, the paper's optimiser, or SGD with momentum."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def restore(w: Worker, loop: LoopConfig) -> Progress:
    """Resume from the newest complete checkpoint: after a worker failure, or a re-run of the
    same run name. Every rank reads the same directory, so all ranks resume from one epoch."""
    registered = ray.train.get_checkpoint()
    found = newest_persisted(loop.run_dir, registered.path if registered else None)
    if found is None:
        return Progress()
    state = load_state(found)
    # A final checkpoint of `eval_epoch: best_val` holds the evaluated weights as "model" and
    # the last epoch's, which training state continues from, as "last_model".
    w.plain.load_state_dict(state.get("last_model", state["model"]))
    w.opt.load_state_dict(state["optimizer"])
    if "ema_model" in state:  # pseudo_label_network: ema, past its first SSSL epoch
        w.teacher = ema_teacher(w.plain)
        w.teacher.load_state_dict(state["ema_model"])
    if "aux" in state:  # split_network: out_of_sample or peer, past its first SSSL epoch
        load_aux_state(w.aux, state["aux"])
    torch.set_rng_state(state["torch_rng"])
    # Checkpoints written before `clean_targets` hold a bool mask: X with w = 1.
    split = state["clean_w"] if "clean_w" in state else state["clean_mask"].float()
    return Progress(
        start_epoch=int(state["epoch"]) + 1,
        history=json.loads(Path(found, runfiles.HISTORY).read_text()),
        clean_w=split.numpy() if split.numel() else None,
        memory=LossMemory(state["loss_sums"].numpy(), state["loss_counts"].numpy()),
        best=BestEpoch.from_state(state),
    )


def split_epoch(
    w: Worker,
    loop: LoopConfig,
    epoch: int,
    metrics: dict[str, Any],
    memory: LossMemory,
    scorer: dict[str, torch.Tensor] | None = None,
) -> np.ndarray:
    """Steps 1-3: this epoch's split [N] (w on X, 0 on U), the same on every rank. `memory` is
    rank 0's per-segment loss history (what the `mean_loss` selection fits on); `scorer` the
    weights that compute the losses (split_network: best_val), None for the current network.
    With auxiliary networks (split_network: out_of_sample, peer) they compute the losses, and
    a peer gets its own split from the trained network's losses."""
    t0 = time.perf_counter()
    # 1. loss pass over this rank's block (eval mode, Eq. 2), in position order
    catch_up(w, epoch)
    with weights_of(w.plain, scorer):
        losses = scored_losses(w) if w.aux else loss_pass(w)
    t1 = time.perf_counter()
    clean_w = gathered_split(w, loop, losses, epoch, metrics, memory, "main")
    if w.cfg.split_network == "peer":
        peer_metrics: dict[str, Any] = {}
        w.aux[0].clean_w = gathered_split(w, loop, loss_pass(w), epoch, peer_metrics, None, "peer")
        metrics.update({f"peer_{k}": v for k, v in peer_metrics.items() if k.startswith("noise_")})
    metrics.update(time_loss_pass=t1 - t0)
    return clean_w


def gathered_split(
    w: Worker,
    loop: LoopConfig,
    losses: torch.Tensor,
    epoch: int,
    metrics: dict[str, Any],
    memory: LossMemory | None,
    role: str,
) -> np.ndarray:
    """Steps 2-3 for one loss vector: gather this rank's block of `losses` to rank 0, fit the
    split there or at the driver's service, and broadcast it: [N] (w on X, 0 on U) on every
    rank. `role` "peer": the split a peer network trains on (no loss memory, no history)."""
    t1 = time.perf_counter()
    # Ranks whose blocks hold longer songs finish later: wait here, timed apart, so the gather's
    # own cost is not confused with that imbalance.
    if distributed():
        torch.distributed.barrier()
    t_wait = time.perf_counter()
    # 2. gather the blocks to rank 0 only (float16, positions implied by the rank blocks)
    all_losses, sent = gather_losses(losses)
    t_gather = time.perf_counter()
    # 3. one GMM fit (driver's service or rank 0); rank 0's ok/error status goes out before the
    #    split, so a failure here ends every rank at once instead of leaving them waiting.
    split, error = None, None
    if w.rank == 0:
        try:
            if loop.fault == "gmm":
                raise RuntimeError("injected fault in the GMM step (test)")
            split, split_info = fit_at_site(w, loop, all_losses, sent, epoch, memory, role)
            metrics.update(split_info)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            broadcast_status(error)
            raise
    broadcast_status(error)
    t_gmm = time.perf_counter()
    clean_w = broadcast_clean_w(split, len(w.table))
    t2 = time.perf_counter()
    metrics.update(
        time_rank_wait=t_wait - t1,
        time_gather=t_gather - t_wait,
        time_gmm=t_gmm - t_gather,
        time_gather_gmm=t2 - t_wait,  # gather + GMM fit + broadcast, without the wait
    )
    return clean_w


def fit_at_site(
    w: Worker,
    loop: LoopConfig,
    losses: np.ndarray,
    sent: list[int],
    epoch: int,
    memory: LossMemory | None,
    role: str = "main",
) -> tuple[np.ndarray, dict[str, Any]]:
    """Step 3a on rank 0: the split (`Split.clean_w`) and its metrics, from the driver's split
    service or fitted here. `memory` (rank 0's copy, for the checkpoint) follows the service's."""
    if not loop.split_service[1]:
        return fit_split_with_metrics(w.cfg, w.table, losses, sent, epoch, memory)
    service = _service(loop.split_service)
    clean_w, metrics, kept = ray.get(service.fit.remote(epoch, losses, sent, role))
    if kept is not None and memory is not None:
        memory.sums[:], memory.counts[:] = kept.sums, kept.counts
    return clean_w, metrics


@functools.cache
def _service(where: tuple[str, str]):
    """The fold's split service, looked up once per process (one GCS call, not one an epoch).
    Each fold's service has its own name, so a process reused for the next fold looks again."""
    namespace, name = where
    return ray.get_actor(name, namespace=namespace)


def finish_fold(
    w: Worker,
    loop: LoopConfig,
    mels: dict[str, np.ndarray],
    by_id: dict[str, dict],
    history: list[dict[str, Any]],
    clean_w: np.ndarray | None,
    memory: LossMemory,
    best: BestEpoch,
) -> None:
    """Segment probabilities for every song of the fold (shared by all ranks), then Eq. 10 +
    SVM on rank 0, reported with the final checkpoint. The network is the last epoch's, or
    with `eval_epoch: best_val` the best validation epoch's (then also the exported one); the
    last epoch's figures are then reported beside it as last_epoch_* (same training run, so
    the two are paired)."""
    cfg = w.cfg
    last = cfg.epochs - 1
    final: dict[str, Any] = {"epoch": cfg.epochs, "fold": loop.fold, "final": True}
    probs, results = _evaluate(w, loop, mels, by_id, history, last)
    last_weights = None
    if cfg.eval_epoch == "best_val" and best.state is not None:
        final.update({f"last_epoch_{k}": v for k, v in results.items() if _is_number(v)})
        if best.epoch != last:
            last_weights = copy_weights(w.plain)
            w.plain.load_state_dict(best.state)
            probs, results = _evaluate(w, loop, mels, by_id, history, best.epoch)
    final.update(results, evaluated_epoch=best.epoch if last_weights else last)
    state = training_state(w.plain, w.opt, last, clean_w, memory, best, w.teacher, aux_state(w.aux))
    if last_weights is not None:  # what a re-run resumes training state from
        state["last_model"] = last_weights
    save_checkpoint(
        state,
        {
            runfiles.HISTORY: history,
            runfiles.RESULT: final,
            runfiles.SONGS: probs,
            runfiles.FOLD_IDS: loop.fold_ids,
        },
        cfg,
        _scalars(final),
        runfiles.FINAL,
        _local_run_dir(loop),
    )


def _evaluate(
    w: Worker,
    loop: LoopConfig,
    mels: dict[str, np.ndarray],
    by_id: dict[str, dict],
    history: list[dict[str, Any]],
    epoch: int,
) -> tuple[dict[str, list], dict[str, Any]]:
    """The fold's segment probabilities under the network now in `w` (ranks share the songs),
    and on rank 0 the song-level results with `epoch`'s segment figures (the split's noise_*
    figures are the last epoch's)."""
    mine = sorted(s for ids in loop.fold_ids.values() for s in ids)[w.rank :: w.world]
    probs: dict[str, list] = {}
    for part in all_gather_object(song_probabilities(w, mels, by_id, mine)):
        probs.update(part)
    results: dict[str, Any] = {}
    if w.rank == 0:
        results.update(w.task.song_results(w.cfg, by_id, probs, loop.fold_ids))
        if history:
            chosen = next(h for h in history if h["epoch"] == epoch)
            results.update({k: v for k, v in chosen.items() if k.startswith("val_seg")})
            results.update({k: v for k, v in history[-1].items() if k.startswith("noise_")})
    return probs, results


def _local_run_dir(loop: LoopConfig) -> str | None:
    """Where local mode writes its checkpoints (None with Ray workers: Ray Train persists)."""
    return loop.run_dir if loop.local else None


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    """Ray's reported metrics: numbers and flags only (lists and dicts stay in history.json)."""
    return {k: v for k, v in metrics.items() if isinstance(v, int | float | bool | str)}


def _log_epoch(loop: LoopConfig, metrics: dict[str, Any]) -> None:
    """Rank 0: scalars to TensorBoard and one JSON line to progress.jsonl (what the driver
    tails for its progress lines) under the run directory."""
    if ray.train.get_context().get_world_rank() != 0 or not loop.tensorboard_dir:
        return
    run_dir = Path(loop.tensorboard_dir).parent
    run_dir.mkdir(parents=True, exist_ok=True)  # local mode (num_workers=0) does not create it
    with open(run_dir / runfiles.PROGRESS, "a") as fh:
        line = _scalars(metrics) | {k: metrics[k] for k in ("precision",) if k in metrics}
        fh.write(json.dumps(line) + "\n")
    from tensorboardX import SummaryWriter

    with SummaryWriter(loop.tensorboard_dir) as writer:
        for key, value in _scalars(metrics).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                writer.add_scalar(key, value, metrics["epoch"])
