"""Checkpoints: what one holds, how it is written, and which one a restarted run resumes from.

Each epoch rank 0 reports a checkpoint directory named after its epoch (`epoch-0003`, and
`final` after the song-level step) under the run directory `storage_path/name`:
state.pt (tensors and plain values only: loads with weights_only=True), history.json,
config.yaml and, for `final`, result.json, songs.json and fold_ids.json.

Why resume from the newest *persisted* checkpoint rather than only `ray.train.get_checkpoint()`:
in Ray Train V2 `ray.train.report` uploads the checkpoint synchronously and then only queues
it; the controller registers it when it next polls the worker (every 2 s). A worker killed in
between leaves a checkpoint on storage that `get_checkpoint()` does not know, so the restart
went back to an older epoch, or to scratch (CI once logged epochs [0, 1, 0, 1, ...]). Reading
the run directory makes the restart point depend on what was written, not on timing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import torch

from sssl_dist.config import SSSLConfig, save_config
from sssl_dist.files.outdir import process_alive
from sssl_dist.files.runfiles import CONFIG, FINAL, HISTORY, RESULT, STATE
from sssl_dist.method.equations import LossMemory

# Epoch checkpoints kept beside `final` (Ray's num_to_keep with workers, ours in local mode):
# the newest is what a restart resumes from, the one before it covers a half-written newest.
KEEP_EPOCHS = 2
# Files a checkpoint must hold, complete and parseable, to be resumed from.
_REQUIRED = (STATE, HISTORY, CONFIG)


def copy_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the model's state_dict, unaffected by later optimiser steps."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@contextmanager
def weights_of(model: torch.nn.Module, state: dict[str, torch.Tensor] | None) -> Iterator[None]:
    """Run the block with `state` loaded into `model`, then put the model's own weights (and
    buffers) back, bit for bit: the network that scores the split (split_network: best_val)
    is a kept copy, while training goes on from the current one. None: the model as it is."""
    if state is None:
        yield
        return
    own = copy_weights(model)
    model.load_state_dict(state)
    try:
        yield
    finally:
        model.load_state_dict(own)


@dataclass
class BestEpoch:
    """The epoch with the highest validation segment accuracy so far, and a copy of its
    weights (eval_epoch: best_val). Ties go to the later epoch, which has trained longer."""

    epoch: int = -1
    score: float = float("-inf")
    state: dict[str, torch.Tensor] | None = None

    def offer(self, epoch: int, score: float, model: torch.nn.Module) -> None:
        if score >= self.score:
            self.epoch, self.score = epoch, score
            self.state = copy_weights(model)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BestEpoch:
        if "best_model" not in state:
            return cls()
        return cls(int(state["best_epoch"]), float(state["best_score"]), state["best_model"])


def epoch_dir_name(epoch: int) -> str:
    return f"epoch-{epoch:04d}"


def training_state(
    plain: torch.nn.Module,
    opt: torch.optim.Optimizer,
    epoch: int,
    clean_w: np.ndarray | None,
    memory: LossMemory,
    best: BestEpoch | None = None,
    teacher: torch.nn.Module | None = None,
    aux: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """What a checkpoint holds: tensors and plain values only (weights_only loadable). The loss
    memory is rank 0's (the `mean_loss` selection reads it; empty sums otherwise); `best` the
    best validation epoch so far (eval_epoch: best_val); `teacher` the EMA of the weights
    (pseudo_label_network: ema), without which a resumed run would restart the average; `aux`
    the state of the networks that score the split (rank/scorers.py: aux_state)."""
    kept = {}
    if best is not None and best.state is not None:
        kept = {"best_model": best.state, "best_epoch": best.epoch, "best_score": best.score}
    if teacher is not None:
        kept["ema_model"] = teacher.state_dict()
    if aux is not None:  # split_network: out_of_sample or peer
        kept["aux"] = aux
    return kept | {
        "model": plain.state_dict(),
        "optimizer": opt.state_dict(),
        "epoch": epoch,
        "torch_rng": torch.get_rng_state(),
        "clean_w": torch.from_numpy(clean_w) if clean_w is not None else torch.zeros(0),
        "loss_sums": torch.from_numpy(memory.sums),
        "loss_counts": torch.from_numpy(memory.counts),
    }


def save_checkpoint(
    state: dict[str, Any],
    extra_json: dict[str, Any],
    cfg: SSSLConfig,
    metrics: dict[str, Any],
    dir_name: str,
    local_run_dir: str | None = None,
) -> None:
    """Report metrics with a checkpoint (rank 0 writes it; other ranks report metrics only).

    With Ray workers, Ray Train copies a temporary directory to storage under `dir_name`, and
    the temporary directory is deleted afterwards. In local mode (num_workers=0) Ray persists
    nothing, so the checkpoint is written under the run directory itself (`local_run_dir`),
    where a re-run of the same run resumes from it, as it does with Ray workers.
    """
    if ray.train.get_context().get_world_rank() != 0:
        ray.train.report(metrics)
        return
    if local_run_dir is not None:
        path = Path(local_run_dir, dir_name)
        write_checkpoint_dir(path, state, extra_json, cfg)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(path)))
        prune_epochs(Path(local_run_dir), KEEP_EPOCHS)
        return
    tmp = temp_dir()
    try:
        _write_files(Path(tmp), state, extra_json, cfg)
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(tmp),
            checkpoint_dir_name=dir_name,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_checkpoint_dir(
    path: Path, state: dict[str, Any], extra_json: dict[str, Any], cfg: SSSLConfig
) -> None:
    """A checkpoint directory at `path`, complete or not at all: written beside it under a
    temporary name, then renamed (a kill mid-write leaves nothing a restart would read)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _write_files(tmp, state, extra_json, cfg)
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


def _write_files(
    directory: Path, state: dict[str, Any], extra_json: dict[str, Any], cfg: SSSLConfig
) -> None:
    torch.save(state, directory / STATE)
    write_run_files(directory, extra_json)
    save_config(cfg, directory / CONFIG)


def write_run_files(directory: Path, files: dict[str, Any]) -> None:
    """A run's JSON files (runfiles.py: result.json, history.json, songs.json, ...) into
    `directory`: a checkpoint rank 0 is writing, or a report's fold-K/. The one function that
    writes them, so a report holds exactly what the run's final checkpoint holds."""
    for name, data in files.items():
        Path(directory, name).write_text(json.dumps(data, default=json_default))


def copy_file(source: Path, target: Path) -> None:
    """Copy a run's file (an exported model into its report) whole or not at all: written
    beside `target` under a temporary name, then renamed."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(source, tmp)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


def adopt_checkpoint(source: Path, target: Path) -> None:
    """Another run's checkpoint directory `source` as this run's `target` (a shared warm-up:
    warmup.py), copied beside it under a temporary name and renamed when whole."""
    tmp = target.with_name(f".{target.name}.adopt.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    tmp.rename(target)


def prune_epochs(run_dir: Path, keep: int) -> None:
    """Delete all but the `keep` newest epoch checkpoints of a local-mode run (Ray's
    CheckpointConfig(num_to_keep) does this with Ray workers); `final` is never deleted."""
    epochs = sorted(p for p in run_dir.glob("epoch-*") if p.is_dir())
    for old in epochs[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


# Temporary checkpoint directories carry their writer's pid, so a later run can tell the
# leftovers of a killed process from the live directories of a run beside it.
TEMP_PREFIX = "sssl-ckpt-"


def temp_dir() -> str:
    """A new temporary directory for one checkpoint's files, named after this process."""
    return tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-")


def remove_stray_temp_dirs() -> int:
    """Delete the temporary checkpoint directories whose writer no longer runs (a killed
    worker or driver leaves them behind; each is a full checkpoint). Returns how many."""
    removed = 0
    for d in Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*-*"):
        pid = d.name[len(TEMP_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)
            removed += 1
    return removed


def json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(type(obj))


def load_state(checkpoint_dir: str | Path) -> dict[str, Any]:
    """Model checkpoints hold tensors and plain values only: weights_only=True loads them."""
    return torch.load(Path(checkpoint_dir) / STATE, map_location="cpu", weights_only=True)


def readable_epoch(d: Path) -> int | None:
    """The epoch a checkpoint directory holds, or None if it is incomplete or unreadable (a
    worker killed while its checkpoint was being copied leaves such a directory)."""
    if not all((d / f).is_file() for f in _REQUIRED):
        return None
    try:
        json.loads((d / HISTORY).read_text())
        # Memory-mapped: the zip's index and the pickle are read and checked, the tensors are
        # not copied (a VGG16 checkpoint with its optimiser is over 1 GB, and a restart looks at
        # every candidate).
        state = torch.load(d / STATE, map_location="cpu", weights_only=True, mmap=True)
        return int(state["epoch"])
    except Exception:  # noqa: BLE001 - truncated pickle/JSON of any kind: not resumable
        return None


def finished_checkpoint(run_dir: str | Path) -> Path | None:
    """The run's complete `final` checkpoint (it holds result.json), or None: a re-run of a
    finished run reads it back instead of training or scoring anything again."""
    found = newest_persisted(run_dir, None)
    if found is not None and (found / RESULT).is_file():
        try:
            json.loads((found / RESULT).read_text())
        except ValueError:
            return None
        return found
    return None


def newest_persisted(run_dir: str | Path | None, registered: str | None) -> Path | None:
    """The checkpoint to resume from: the newest complete one among those in `run_dir` and the
    one Ray registered (`registered`, a local path, or None). `final` beats any epoch."""
    candidates = [Path(registered)] if registered else []
    if run_dir and "://" not in str(run_dir) and Path(run_dir).is_dir():
        candidates += [p for p in Path(run_dir).iterdir() if p.is_dir()]
    best, best_key = None, None
    for d in candidates:
        epoch = readable_epoch(d)
        if epoch is None:
            continue
        key = (epoch, d.name == FINAL or (d / RESULT).is_file())
        if best_key is None or key > best_key:
            best, best_key = d, key
    return best
