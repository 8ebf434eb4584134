"""The one typed record every dataset loader yields per song, and its labels per task."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

Scale = tuple[float, float]  # (low, high) of a rating scale, e.g. (1.0, 9.0); midpoint halfway
Curve = tuple[float | None, ...]  # a rating per second from second 0; None where none was made

# Russell quadrants, indexed 0..3 = Q1..Q4. Valence positive = Q1, Q4; arousal high = Q1, Q2
# (DESIGN.md, Panda et al. 2018).
QUADRANT_OF_VA = {(1, 1): 0, (0, 1): 1, (0, 0): 2, (1, 0): 3}  # (valence, arousal) -> index
VA_OF_QUADRANT = {q: va for va, q in QUADRANT_OF_VA.items()}


@dataclass(frozen=True)
class SongRecord:
    """One song as a loader found it: where its audio is and what its labels are."""

    song_id: str
    audio_path: str
    source: str  # "4q", "pmemo", "eim", "deam", "manifest", "synthetic"
    quadrant: int | None = None  # 0..3 = Q1..Q4, where derivable
    valence: int | None = None  # 1 = positive
    arousal: int | None = None  # 1 = high
    valence_value: float | None = None  # continuous annotation, dataset's own scale
    arousal_value: float | None = None
    value_scale: Scale | None = None  # the scale valence_value and arousal_value are on
    valence_curve: Curve | None = None  # dynamic annotation averaged per second
    arousal_curve: Curve | None = None
    curve_scale: Scale | None = None  # the scale of the curves (DEAM, EiM: -1..1; static 1..9)

    def label(self, task: str) -> int | None:
        return {"quadrant": self.quadrant, "valence": self.valence, "arousal": self.arousal}[task]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (lists, not tuples: the shard plan is compared with its JSON copy).
        The fields added after shard sets were first written are left out while unset, so the
        plan and the shards of a data set without them stay byte for byte what they were."""
        out = asdict(self)
        for name in ADDED_FIELDS:
            if out[name] is None:
                del out[name]
            else:
                out[name] = list(out[name])
        return out


ADDED_FIELDS = ("value_scale", "valence_curve", "arousal_curve", "curve_scale")


def labels_from_quadrant(q: int) -> dict[str, int]:
    valence, arousal = VA_OF_QUADRANT[q]
    return {"quadrant": q, "valence": valence, "arousal": arousal}


def labels_from_va(valence: int, arousal: int) -> dict[str, int]:
    return {"quadrant": QUADRANT_OF_VA[(valence, arousal)], "valence": valence, "arousal": arousal}


def quadrant_of_values(valence: float, arousal: float, midpoint: float) -> int:
    """The quadrant of a continuous rating: each dimension is positive/high strictly above the
    scale's midpoint (PMEmo 0.5, EiM/DEAM static 5, dynamic 0)."""
    return QUADRANT_OF_VA[(int(valence > midpoint), int(arousal > midpoint))]


def task_label_of_quadrant(q: int, task: str) -> int:
    """The label a second of music in quadrant q has for a task (used for per-second truth)."""
    return labels_from_quadrant(q)[task]
