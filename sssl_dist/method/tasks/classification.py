"""Classification: the paper's tasks (4 quadrants; valence and arousal as two classes each).

Targets are the class labels of the records (data/targets.py: `ClassLabels`); the per-segment
loss is the CE of Eq. 2; U's targets are the sharpened predictions of Eq. 4-5; the step is
Eq. 4-9 (method/step.py); songs are decided by Eq. 10's features and an SVM (method/song.py);
an inherited label is wrong where the segment's own seconds give another class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from sssl_dist.config import SSSLConfig
from sssl_dist.data.segments import SegmentTable
from sssl_dist.data.targets import ClassLabels
from sssl_dist.method.equations import per_sample_ce, pseudo_label
from sssl_dist.method.song import SongClassifier, song_level_results
from sssl_dist.method.step import StepLosses, ce_loss, sssl_loss
from sssl_dist.method.tasks import Compared


@dataclass(frozen=True)
class Classification:
    """One classification task: the class label the records hold under `name`."""

    name: str
    targets: ClassLabels = field(init=False)
    selection_key: str = "val_seg_acc"
    table_keys: tuple[str, ...] = (
        "test_acc",
        "test_f1",
        "test_majority_acc",
        "val_seg_acc_truth",
        "noise_auc",
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", ClassLabels(self.name))

    @property
    def output_names(self) -> tuple[str, ...]:
        return self.targets.strata_names

    @property
    def num_outputs(self) -> int:
        return len(self.output_names)

    def segment_losses(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return per_sample_ce(outputs, targets)  # Eq. 2

    def warmup_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepLosses:
        return ce_loss(model, x, y)

    def pseudo_targets(self, predictions: torch.Tensor, cfg: SSSLConfig) -> torch.Tensor:
        return pseudo_label(predictions, cfg.temperature)  # Eq. 4-5

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
        return sssl_loss(model, teacher, x, y, clean_w, cfg, generator)  # Eq. 4-9

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(outputs, -1)  # P_s(E_k)

    def split_groups(self, table: SegmentTable) -> tuple[np.ndarray, int]:
        return table.label, self.num_outputs  # one GMM per inherited class

    def segment_scores(
        self, outputs: torch.Tensor, label: np.ndarray, true_label: np.ndarray
    ) -> np.ndarray:
        return hit_counts(outputs.argmax(-1).cpu().numpy(), label, true_label)

    def segment_metrics(self, scores: list[float]) -> dict[str, float]:
        return segment_accuracies(*scores)

    def check_config(self, cfg: SSSLConfig) -> None:
        return None  # every setting is the classification step's

    def song_model(
        self, cfg: SSSLConfig, features: np.ndarray, targets: np.ndarray
    ) -> ClassifiedSongs:
        k = self.num_outputs
        labels = np.asarray(targets)
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise ValueError(
                f"svm_labels must be {len(features)} integers, got {list(labels.shape)}"
            )
        bad = labels[(labels < 0) | (labels >= k)]
        if bad.size:
            raise ValueError(
                f"svm_labels must be in 0..{k - 1} for task {self.name!r}, got {bad[0]}"
            )
        svm = SongClassifier(cfg.svm_c, cfg.svm_kernel, cfg.seed).fit(features, labels)
        return ClassifiedSongs(svm, k)

    def output_scale(self, songs: list[dict]) -> list[float] | None:
        return None

    def columns(self, outputs: np.ndarray, scale: list[float] | None) -> list[dict[str, float]]:
        return [dict(zip(self.output_names, map(float, p), strict=True)) for p in outputs]

    def decision(
        self, song_outputs: np.ndarray, scale: list[float] | None
    ) -> tuple[str, float | None]:
        k = int(np.argmax(song_outputs))
        return self.output_names[k], float(song_outputs[k])

    def compared(self, songs: list[dict], rope: float) -> tuple[Compared, ...]:
        return (
            Compared("test_acc", "song accuracy", rope),
            Compared(
                "val_seg_acc_truth", "segment accuracy against the truth", rope, truth_only=True
            ),
            Compared("noise_auc", "noise AUC", rope, truth_only=True),
        )

    def song_results(
        self,
        cfg: SSSLConfig,
        songs_by_id: dict[str, dict],
        predictions: dict[str, list],
        fold_ids: dict[str, list[str]],
        train_predictions: dict[str, list] | None = None,
    ) -> dict[str, Any]:
        return song_level_results(
            cfg, songs_by_id, predictions, fold_ids, train_predictions, self.name
        )


@dataclass
class ClassifiedSongs:
    """The SVM of Eq. 10 as a task's song model: class probabilities [n, K]."""

    svm: SongClassifier
    num_classes: int

    def predict_outputs(self, features: np.ndarray) -> np.ndarray:
        return self.svm.predict_proba(features, self.num_classes)


def hit_counts(pred: np.ndarray, label: np.ndarray, true_label: np.ndarray) -> np.ndarray:
    """[hits against the inherited label, segments, hits against the truth, segments whose
    truth is known]: a segment whose truth is unknown (-1) is neither right nor wrong."""
    known = true_label >= 0
    return np.array(
        [np.sum(pred == label), pred.size, np.sum(pred[known] == true_label[known]), known.sum()],
        dtype=np.float64,
    )


def segment_accuracies(hit: float, n: float, true_hit: float, known: float) -> dict[str, float]:
    """The summed `hit_counts` of every rank as accuracies; against the truth only where some
    segment's truth is known, over those segments."""
    out = {"val_seg_acc": hit / max(n, 1)}
    if known:
        out["val_seg_acc_truth"] = true_hit / known
    return out


TASKS = {name: Classification(name) for name in ("quadrant", "valence", "arousal")}
