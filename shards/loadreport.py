"""What a loader could not use, one line per item: the report every loader returns beside its
songs (datasets.py for the labels, dynamic.py for the per-second ratings), logged and kept in
the shard manifest, so nothing is dropped silently."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger("shards.datasets")


@dataclass
class LoadReport:
    missing_audio: list[str] = field(default_factory=list)  # listed ids with no audio file
    unlabelled_audio: list[str] = field(default_factory=list)  # audio files with no label row
    duplicate_ids: list[str] = field(default_factory=list)  # identical repeated rows (first kept)
    bad_rows: list[str] = field(default_factory=list)  # rows whose labels cannot be parsed
    conflicts: list[str] = field(default_factory=list)  # ids refused: their sources disagree
    # Dynamic annotations (shards/dynamic.py); the songs concerned keep their static labels.
    bad_truth: list[str] = field(default_factory=list)  # a song's dynamic ratings refused
    partial_truth: list[str] = field(default_factory=list)  # seconds left unknown, and why
    truth_without_song: list[str] = field(default_factory=list)  # ratings of ids not loaded

    def log_summary(self, dataset: str) -> None:
        for name in self.__dict__:
            items = getattr(self, name)
            if items:
                shown = ", ".join(items[:5]) + (" ..." if len(items) > 5 else "")
                log.warning("%s: %d %s: %s", dataset, len(items), name.replace("_", " "), shown)

    def to_dict(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.__dict__.items()}
