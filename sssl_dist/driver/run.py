"""One training run on the driver side, owned by one object from its name to its files.

A `Run` is one fold of one configuration (or the final refit, or a cross-fit part inside a
fold): its identity and name, where its files live, the warm-up it keeps for others or starts
from, and how it is trained or read back. `sssl train` and `sssl compare` (cv.py, parallel.py),
`sssl tune` (tuning/sweep.py) and the cross-fit (crossfit.py) all make their runs here, so a
run's name is built in one place (`Run.of`), and warm-up donors are chosen by one routine
(`share_warmups`) for every caller.

The identity: the run's prefix (the report's or the sweep configuration's name), its fold or
role, and a digest of the resolved config and of the shard set. Re-running resumes a run only
when the settings *and* the data are the same ones; a finished run is read back, never
trained again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sssl_dist.config import SSSLConfig, config_digest
from sssl_dist.data.folds import SongIds, fold_song_ids
from sssl_dist.data.segments import ShardSet
from sssl_dist.driver.crossfit import cross_fit
from sssl_dist.driver.fit import fit_run
from sssl_dist.driver.fold import check_fold
from sssl_dist.driver.warmup import is_ready, warmup_key, warmup_source
from sssl_dist.method.tasks import task_of
from sssl_dist.outputs.foldrun import FoldRun


def run_digest(cfg: SSSLConfig, shards: ShardSet) -> str:
    """12 hex digits naming (resolved config, shard set)."""
    blob = f"{config_digest(cfg)}:{shards.digest()}".encode()
    return hashlib.sha256(blob).hexdigest()[:12]


@dataclass(frozen=True)
class Run:
    """One training run: what it trains, what it is called and where its files go."""

    cfg: SSSLConfig
    fold: int | None  # None: the final refit (it only labels the run's metrics)
    storage: Path  # the Ray storage the run's directory is in (the driver reads it too)
    name: str  # the run's directory under `storage`: its identity (`Run.of`)
    fold_ids: SongIds | None = None  # the songs, where they are not the fold's (refit, parts)
    save_warmup: bool = False  # keep the warm-up's end for other runs (warmup.py)
    warmup_from: Path | None = None  # a donor's warm-up checkpoint to start from

    @classmethod
    def of(
        cls,
        prefix: str,
        cfg: SSSLConfig,
        shards: ShardSet,
        fold: int | None,
        storage: str | Path,
        *,
        role: str = "",
        fold_ids: SongIds | None = None,
    ) -> Run:
        """The run of `prefix`'s fold `fold` (role "") or of another kind: "refit", the final
        refit on all songs; "crossfitJofK", part J of a fold's cross-fit. The one place a run's
        name is built; the names are the ones runs stored earlier carry, so they resume."""
        digest = run_digest(cfg, shards)
        if role == "refit":
            name = f"{prefix}-refit-{digest}"
        else:
            name = f"{prefix}-fold{fold}-{digest}" + (f"-{role}" if role else "")
        return cls(cfg, fold, Path(storage), name, fold_ids)

    @property
    def run_dir(self) -> Path:
        return self.storage / self.name

    @property
    def warmup_dir(self) -> Path:
        """Where this run, as a donor, keeps its warm-up's end for the others."""
        return warmup_source(self.run_dir)

    def part(self, role: str, cfg: SSSLConfig, fold_ids: SongIds) -> Run:
        """A run inside this one (a cross-fit part): named after it, in the same storage."""
        return Run(cfg, self.fold, self.storage, f"{self.name}-{role}", fold_ids)

    def songs(self, shards: ShardSet) -> SongIds:
        """The run's songs: given (refit, cross-fit part) or the fold's own (folds.py)."""
        targets = task_of(self.cfg).targets
        return self.fold_ids or fold_song_ids(shards, self.cfg, self.fold, targets)

    def fit(self, shards: ShardSet, *, workers: int, use_gpu: bool, **options: Any) -> FoldRun:
        """Check the run, train it (or read it back when it finished before), and, with
        `svm_features: cross_fit`, re-learn its SVM from out-of-sample features (crossfit.py).
        `options` go to `fit.fit_run`: progress callback, Tune callbacks, CPUs per worker,
        fault injection."""
        fold_ids = self.songs(shards)
        check_fold(self.cfg, shards, fold_ids, workers)
        result = self.train(shards, fold_ids, workers=workers, use_gpu=use_gpu, **options)
        if self.cfg.svm_features == "cross_fit":

            def train_part(role: str, cfg: SSSLConfig, songs: SongIds) -> FoldRun:
                part = self.part(role, cfg, songs)
                return part.train(shards, songs, workers=workers, use_gpu=use_gpu)

            cross_fit(result, self.cfg, shards, train_part)
        return result

    def train(
        self, shards: ShardSet, fold_ids: SongIds, *, workers: int, use_gpu: bool, **options: Any
    ) -> FoldRun:
        """Launch the run's TorchTrainer on `fold_ids`, or read back its finished checkpoint."""
        return fit_run(
            self.cfg,
            shards,
            fold_ids,
            storage_path=self.storage,
            name=self.name,
            fold=self.fold,
            workers=workers,
            use_gpu=use_gpu,
            save_warmup=self.save_warmup,
            warmup_from=self.warmup_from,
            **options,
        )

    def ready_to_start(self, producing: set[Path]) -> bool:
        """Whether the run can start now: a run that shares a warm-up waits until its donor
        has written it, unless the donor is not among the runs `producing` warm-ups (it
        failed, or finished before: then the copy is there, or this run trains its own)."""
        source = self.warmup_from
        return source is None or is_ready(source) or source.parent not in producing


def share_warmups(runs: Sequence[Run]) -> list[Run]:
    """The runs, with those whose warm-up is the same training (same fold, same warm-up key)
    sharing it: the first in order keeps it (`save_warmup`), the others start from it
    (`warmup_from`). The one routine that chooses donors, for compare and Tune alike."""
    first: dict[tuple[int | None, str], int] = {}
    donor_of: dict[int, int] = {}
    for i, run in enumerate(runs):
        key = warmup_key(run.cfg)
        if key is None:
            continue
        donor_of[i] = first.setdefault((run.fold, key), i)
    donors = {d for i, d in donor_of.items() if d != i}
    out = []
    for i, run in enumerate(runs):
        if i in donors:
            run = replace(run, save_warmup=True)
        elif donor_of.get(i, i) != i:
            run = replace(run, warmup_from=runs[donor_of[i]].warmup_dir)
        out.append(run)
    return out


def shared_count(runs: Iterable[Run]) -> int:
    """How many runs start from a warm-up another run trains."""
    return sum(run.warmup_from is not None for run in runs)


def run_fold(
    cfg: SSSLConfig,
    shards: ShardSet,
    fold: int | None,
    *,
    storage_path: str | Path,
    name: str,
    workers: int = 2,
    use_gpu: bool = False,
    fold_ids: SongIds | None = None,
    save_warmup: bool = False,
    warmup_from: Path | None = None,
    **options: Any,
) -> FoldRun:
    """`Run.fit` of a run named `name` by its caller (tests and benchmarks that keep their
    runs apart by hand); the commands name their runs with `Run.of`."""
    run = Run(cfg, fold, Path(storage_path), name, fold_ids, save_warmup, warmup_from)
    return run.fit(shards, workers=workers, use_gpu=use_gpu, **options)
