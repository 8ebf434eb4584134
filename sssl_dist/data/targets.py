"""What a task reads from the song records: each song's target, each segment's target by the
per-second truth, the classes the folds are stratified by, and which inherited targets count
as wrong (the noise the split is scored against).

The data layer only needs this much of a task (`Targets`); the rest (losses, pseudo-targets,
the song-level model, the metrics) is the task's own (method/tasks). `ClassLabels` is the
classification tasks' reading: a class label stored in each record under the task's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from sssl_dist.config import QUADRANTS
from sssl_dist.data.records import task_label_of_quadrant

# The class names of each label a record carries (records.py: 1 = positive / high).
CLASS_NAMES = {
    "quadrant": QUADRANTS,
    "valence": ("negative", "positive"),
    "arousal": ("low", "high"),
}


class Targets(Protocol):
    """The part of a task the data layer reads: targets from records, per-second truth, the
    folds' strata, and the noise definition."""

    # The record key of the class each song is stratified by in the folds, and the names of
    # those classes (index = class).
    strata_key: str
    strata_names: tuple[str, ...]
    dtype: Any  # of the target arrays (int64 class indices, float32 values)
    unknown: Any  # the value of a segment target the truth does not give

    def song_target(self, song: dict[str, Any]) -> Any:
        """The target every segment of `song` inherits (the clip's label)."""
        ...

    def segment_truth(self, song: dict[str, Any], start: int, length_s: int) -> Any:
        """The segment's own target by the song's per-second truth, or `unknown`."""
        ...

    def wrong(self, label: np.ndarray, true_label: np.ndarray) -> np.ndarray:
        """[N] 1 where the inherited target is wrong by the truth, 0 where right, -1 unknown."""
        ...


def segment_truth(truth: list[int | None], start: int, length_s: int, task: str) -> int:
    """True class of a segment: the majority over its seconds' quadrants mapped to the task's
    label (ties: the earliest); -1 (unknown) unless every one of its seconds is known. A segment
    half inside the first 15 unrated seconds of a dynamic annotation has no truth: its label
    would rest on the seconds that happen to be rated, and the segment is neither right nor
    wrong."""
    seconds = truth[start : start + length_s]
    if len(seconds) < length_s or any(q is None for q in seconds):
        return -1
    labels = [task_label_of_quadrant(q, task) for q in seconds]
    return max(labels, key=lambda v: (labels.count(v), -labels.index(v)))


@dataclass(frozen=True)
class ClassLabels:
    """A class label stored in each record under `key` ("quadrant", "valence", "arousal");
    the truth of a second is its quadrant's label; an inherited label is wrong where it
    differs from the segment's true label."""

    key: str
    dtype: Any = np.int64
    unknown: int = -1

    @property
    def strata_key(self) -> str:
        return self.key

    @property
    def strata_names(self) -> tuple[str, ...]:
        return CLASS_NAMES[self.key]

    def song_target(self, song: dict[str, Any]) -> int:
        return song[self.key]

    def segment_truth(self, song: dict[str, Any], start: int, length_s: int) -> int:
        truth = song.get("truth")
        return segment_truth(truth, start, length_s, self.key) if truth else -1

    def wrong(self, label: np.ndarray, true_label: np.ndarray) -> np.ndarray:
        return np.where(true_label < 0, -1, (true_label != label).astype(int))


def targets_of(task: str | Targets) -> Targets:
    """A task's targets; a bare name is a class label of the records (the classification
    tasks' reading), which keeps the callers that pass a record key working."""
    return ClassLabels(task) if isinstance(task, str) else task
