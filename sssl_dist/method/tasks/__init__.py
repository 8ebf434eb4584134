"""A task is one object: everything that depends on what is predicted lives behind `Task`.

A task decides its targets (from a song's record, and per segment from the per-second truth),
the number of network outputs, the per-segment loss the split fits its GMM on, the warm-up's
loss, U's pseudo-targets and the SSSL step, the segment predictions, the validation figures
that choose the evaluated epoch, the song-level model and its metrics, and which inherited
targets count as wrong (the noise the split is scored against). The training loop, the split
and the reports ask the task, never the task's name.

`task_of(cfg)` picks the implementation by `cfg.task`. Adding a task is one new module here
with a class that satisfies `Task`, named in `_MODULES` (and its name among `cfg.task`'s
choices in config.py).
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from sssl_dist.config import SSSLConfig
from sssl_dist.data.segments import SegmentTable
from sssl_dist.data.targets import Targets
from sssl_dist.method.step import StepLosses


@dataclass(frozen=True)
class Compared:
    """A result `sssl compare` tests arm against arm, and how its verdict is worded."""

    key: str  # the fold result's key
    name: str  # what it is, in words
    rope: float = 0.01  # the region of practical equivalence, in the figure's own unit
    span: float = 1.0  # the largest possible |gain| (1 for figures in [0, 1])
    lower_is_better: bool = False  # compared as its reduction (RMSE)
    scale: float = 100.0  # figures are shown times this, in `unit` (100: accuracy in points)
    unit: str = " points"
    digits: int = 1
    truth_only: bool = False  # reported only on shards with per-second truth


class SongModel(Protocol):
    """A task's song-level model, fitted on Eq. 10 features of the training songs."""

    def predict_outputs(self, features: np.ndarray) -> np.ndarray:
        """[n, 7K] -> [n, K]: class probabilities, or values on the common scale."""
        ...


class Task(Protocol):
    """What one task decides (see the module docstring)."""

    name: str
    targets: Targets  # targets from records, per-second truth, strata, noise definition
    output_names: tuple[str, ...]  # one name per network output (classes, or V/A)
    selection_key: str  # the validation figure (higher is better) that picks the epoch

    @property
    def num_outputs(self) -> int: ...

    def segment_losses(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-segment loss [B] of outputs [B, K] against targets: what the GMM splits."""
        ...

    def warmup_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepLosses:
        """The loss of a warm-up (or `inherit`) step on the inherited targets."""
        ...

    def pseudo_targets(self, predictions: torch.Tensor, cfg: SSSLConfig) -> torch.Tensor:
        """U's targets from the teacher's predictions [B, K]."""
        ...

    def step_loss(
        self,
        model: nn.Module,
        teacher: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        clean_w: torch.Tensor,
        cfg: SSSLConfig,
        generator: torch.Generator | None = None,
    ) -> StepLosses:
        """The SSSL step's loss on one batch (clean_w [B]: w on X, 0 on U)."""
        ...

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        """Network outputs [B, K] -> the segment predictions [B, K] songs are decided from."""
        ...

    def split_groups(self, table: SegmentTable) -> tuple[np.ndarray, int]:
        """([N] group of each training segment, number of groups): what `gmm_scope: per_class`
        fits one GMM for."""
        ...

    def segment_scores(
        self, outputs: torch.Tensor, label: np.ndarray, true_label: np.ndarray
    ) -> np.ndarray:
        """Sums over some validation segments, from the network's outputs [B, K], that add up
        across ranks (all_reduce_sum)."""
        ...

    def segment_metrics(self, scores: list[float]) -> dict[str, float]:
        """The summed `segment_scores` of every rank as the validation figures (val_seg_*)."""
        ...

    def compared(self, songs: list[dict], rope: float) -> tuple[Compared, ...]:
        """The results `sssl compare` tests, the first being the one every verdict is about;
        `rope`: the comparison's ROPE for figures in [0, 1] (`--rope`)."""
        ...

    table_keys: tuple[str, ...]  # the results a comparison's table shows per arm

    def check_config(self, cfg: SSSLConfig) -> None:
        """ValueError (one line) for a setting this task does not implement."""
        ...

    def song_model(self, cfg: SSSLConfig, features: np.ndarray, targets: np.ndarray) -> SongModel:
        """The song-level model fitted on features [n, 7K] and song targets; ValueError for
        targets that are not the task's (an exported model's data are checked with it)."""
        ...

    def output_scale(self, songs: list[dict]) -> list[float] | None:
        """The data set's scale predictions are reported on (None: class probabilities)."""
        ...

    def columns(self, outputs: np.ndarray, scale: list[float] | None) -> list[dict[str, float]]:
        """Per row of outputs [n, K]: the named figures a prediction reports."""
        ...

    def decision(
        self, song_outputs: np.ndarray, scale: list[float] | None
    ) -> tuple[str, float | None]:
        """A song's decision in words, and its probability where it has one."""
        ...

    def song_results(
        self,
        cfg: SSSLConfig,
        songs_by_id: dict[str, dict],
        predictions: dict[str, list],
        fold_ids: dict[str, list[str]],
        train_predictions: dict[str, list] | None = None,
    ) -> dict[str, Any]:
        """The song-level model, trained on the fold's training songs, and its val/test
        metrics."""
        ...


# Task name -> the module whose TASKS maps it to its implementation.
_MODULES = {
    "quadrant": "classification",
    "valence": "classification",
    "arousal": "classification",
    "valence_reg": "regression",
    "arousal_reg": "regression",
    "va_reg": "regression",
}


@functools.cache
def task_named(name: str) -> Task:
    """The implementation of task `name` (one object per name and process)."""
    if name not in _MODULES:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(_MODULES)}")
    module = importlib.import_module(f"{__name__}.{_MODULES[name]}")
    return module.TASKS[name]


def task_of(cfg: SSSLConfig) -> Task:
    """The task a config trains (`cfg.task`)."""
    return task_named(cfg.task)


def targets_of_config(cfg: SSSLConfig) -> Targets:
    """The data-layer part of a config's task (for data/folds.py's checks)."""
    return task_of(cfg).targets
