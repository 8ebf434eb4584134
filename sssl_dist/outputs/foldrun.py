"""A finished run's results, as the driver holds them and a report's fold-K/ keeps them: the
song-level metrics, the per-epoch history, every song's segment probabilities and the fold's
songs. Read from a final checkpoint or a report folder, written by `files.checkpoint`'s one
writer, exported as a model (export.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sssl_dist.data.segments import ShardSet
from sssl_dist.files import runfiles
from sssl_dist.files.checkpoint import write_run_files


@dataclass
class FoldRun:
    """A finished run's results, held in memory; the model weights stay in its checkpoint."""

    result: dict[str, Any]  # song-level metrics
    history: list[dict[str, Any]]  # per-epoch metrics
    songs: dict[str, list]  # per-song segment probabilities
    fold_ids: dict[str, list[str]]  # song ids of train / val / test
    run_dir: str = ""
    # The final ray.train.Checkpoint (a local folder or a storage URI); None when read from a
    # report's fold-K/ folder.
    checkpoint: Any = None
    # The driver's split service history, {epoch, n_clean} per SSSL epoch (gmm_site: driver).
    splits: list[dict[str, Any]] = field(default_factory=list)
    # With svm_features: cross_fit, the training songs' out-of-sample probabilities the SVM
    # learned from (crossfit.py); otherwise the SVM learned from `songs`.
    svm_songs: dict[str, list] | None = None

    @classmethod
    def read(cls, directory: str | Path, run_dir: str = "", checkpoint: Any = None) -> FoldRun:
        """From a folder holding the report files: a final checkpoint or a report's fold-K/."""
        read = lambda n: json.loads(Path(directory, n).read_text())  # noqa: E731
        svm = Path(directory, runfiles.SVM_SONGS)
        return cls(
            result=read(runfiles.RESULT),
            history=read(runfiles.HISTORY),
            songs=read(runfiles.SONGS),
            fold_ids=read(runfiles.FOLD_IDS),
            run_dir=run_dir,
            checkpoint=checkpoint,
            svm_songs=json.loads(svm.read_text()) if svm.is_file() else None,
        )

    @classmethod
    def from_checkpoint(cls, checkpoint: Any, run_dir: str) -> FoldRun:
        with checkpoint.as_directory() as local:  # a download only when storage is remote
            return cls.read(local, run_dir, checkpoint)

    def write(self, directory: Path) -> None:
        """The report files into `directory` (a report's fold-K/)."""
        files = {
            runfiles.RESULT: self.result,
            runfiles.HISTORY: self.history,
            runfiles.SONGS: self.songs,
            runfiles.FOLD_IDS: self.fold_ids,
        }
        if self.svm_songs is not None:
            files[runfiles.SVM_SONGS] = self.svm_songs
        write_run_files(Path(directory), files)

    def export(self, shards: ShardSet, path: Path) -> Path:
        """The model artifact (export.py) from the final checkpoint's weights."""
        from sssl_dist.outputs.export import export_model

        with self.checkpoint.as_directory() as local:
            return export_model(local, shards, path, self.svm_songs)
