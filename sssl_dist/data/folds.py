"""Which songs each run trains, validates and tests on, decided here and nowhere else.

A fold's songs (`fold_song_ids`): the test songs are one part of a seeded, label-stratified
k-fold split by song, so no song's segments are on both sides; the validation songs are held
out inside the rest, stratified (`hold_out_validation`). The final refit (`refit_song_ids`)
trains on every song but the validation songs. Cross-fitting (`cross_fit_parts`) splits a
fold's training songs into parts the same way. Songs are sorted by id first, so the folds are
the same for every configuration of one shard set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from sssl_dist.config import SSSLConfig
from sssl_dist.data.segments import ShardSet
from sssl_dist.data.targets import Targets, targets_of

SongIds = dict[str, list[str]]  # {"train": [...], "val": [...], "test": [...]}


def check_shards_serve(
    shards: ShardSet,
    configs: Iterable[SSSLConfig],
    folds: Iterable[int] | None = None,
    targets_of_config: Callable[[SSSLConfig], Targets] | None = None,
) -> None:
    """Refuse, before any training, a task these shards cannot serve: labels the manifest
    and the tars disagree on, a task with songs of one class only (every arm would score the
    same), a class with fewer songs than folds (some test folds would lack it), or a fold
    (of `folds`, default all) whose training songs cannot spare stratified validation songs
    or are fewer than the out-of-sample scorers' parts.
    Names the class counts. `targets_of_config`: each config's task targets (default: the
    class label named by `cfg.task`)."""
    shards.check_labels()
    wanted = None if folds is None else sorted(set(folds))
    seen = set()
    for cfg in configs:
        scorers = cfg.scorer_parts if cfg.split_network == "out_of_sample" else 1
        key = (cfg.task, cfg.n_folds, cfg.val_fraction, cfg.seed, scorers)
        if key in seen:
            continue
        seen.add(key)
        targets = targets_of_config(cfg) if targets_of_config else None
        counts = class_counts(shards, cfg, targets)
        said = ", ".join(f"{name} {n}" for name, n in counts.items())
        where = f"task {cfg.task} on {shards.root} ({said})"
        present = [n for n in counts.values() if n]
        if len(present) < 2:
            raise ValueError(f"{where}: the songs are of one class only; a classifier needs 2")
        if min(present) < 2:  # no number of folds serves it: at least 2 are needed
            raise ValueError(
                f"{where}: a class has only 1 song, and cross-validation needs at least 2 "
                "songs of each class present; add songs"
            )
        if min(present) < cfg.n_folds:
            raise ValueError(
                f"{where}: {cfg.n_folds} folds need at least {cfg.n_folds} songs of each class; "
                f"use at most {min(present)} folds, or more songs"
            )
        for fold in range(cfg.n_folds) if wanted is None else wanted:
            if not 0 <= fold < cfg.n_folds:
                raise ValueError(f"fold {fold} is outside 0..{cfg.n_folds - 1}")
            try:
                ids = fold_song_ids(shards, cfg, fold, targets)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            if len(ids["train"]) < scorers:  # each out-of-sample scorer scores a part of songs
                raise ValueError(
                    f"split_network 'out_of_sample' deals the training songs into scorer_parts "
                    f"({scorers}) parts, but fold {fold} trains on {len(ids['train'])}: lower "
                    "scorer_parts"
                )


def class_counts(
    shards: ShardSet, cfg: SSSLConfig, targets: Targets | None = None
) -> dict[str, int]:
    """Songs per class the folds stratify the config's task by, by class name (ValueError for
    a song without that class)."""
    t = task_targets(cfg, targets)
    labels = [s.get(t.strata_key) for s in shards.songs]
    if None in labels:
        missing = next(s["song_id"] for s in shards.songs if s.get(t.strata_key) is None)
        raise ValueError(f"{shards.root}: song {missing!r} has no {t.strata_key} label")
    counts = np.bincount(np.array(labels, dtype=int), minlength=len(t.strata_names))
    return dict(zip(t.strata_names, map(int, counts), strict=True))


def task_targets(cfg: SSSLConfig, targets: Targets | None) -> Targets:
    """The task's targets, or by default the class label the records hold under `cfg.task`."""
    return targets or targets_of(cfg.task)


def strata(songs: list[dict], cfg: SSSLConfig, targets: Targets | None = None) -> np.ndarray:
    """[songs] the class each song is stratified by in the folds."""
    key = task_targets(cfg, targets).strata_key
    return np.array([s[key] for s in songs])


def song_folds(labels: np.ndarray, n_folds: int, seed: int) -> list[np.ndarray]:
    """Test-song indices of each fold; every song is in exactly one test fold."""
    check_fold_count(labels, n_folds)
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [test for _, test in skf.split(np.zeros(len(labels)), labels)]


def check_fold_count(labels: np.ndarray, n_folds: int, task: str = "") -> None:
    """Refuse more folds than the smallest class has songs, saying the most this data allows:
    with more, some test folds lack that class (scikit-learn only warns), and above every
    class's count scikit-learn fails without saying how many folds would do."""
    counts = np.unique(labels, return_counts=True)[1]
    smallest = int(counts.min()) if counts.size else 0
    if n_folds > smallest:
        which = f" for task {task}" if task else ""
        raise ValueError(
            f"{n_folds} folds, but the smallest class{which} has {smallest} song(s): at most "
            f"{smallest} folds on this data (--folds, or n_folds)"
        )


def check_shard_folds(shards: ShardSet, task: str, n_folds: int) -> None:
    """check_fold_count on a shard set's labels for a task (before any run starts)."""
    check_fold_count(np.array([s[task] for s in shards.songs]), n_folds, task)


def fold_indices(
    labels: np.ndarray, n_folds: int, fold: int, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) song indices for one fold. The validation songs are held out inside
    the training songs, stratified, for honest model selection."""
    test = song_folds(labels, n_folds, seed)[fold]
    rest = np.setdiff1d(np.arange(len(labels)), test)
    train, val = hold_out_validation(labels, rest, val_fraction, seed, f"fold {fold}")
    return train, val, test


def hold_out_validation(
    labels: np.ndarray, songs: np.ndarray, val_fraction: float, seed: int, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices: `val_fraction` of `songs` (at least one per class) held out,
    stratified by label. `what` names the song set in the error message."""
    if val_fraction <= 0:
        return songs, np.array([], dtype=int)
    n_val = max(len(np.unique(labels)), int(round(val_fraction * len(songs))))
    counts = np.bincount(labels[songs])
    # Only 2 folds can leave a class 1 training song: every class has at least as many songs
    # as folds (checked before), so at k >= 3 folds it keeps k - 1 >= 2. Fewer folds never help.
    if counts[counts > 0].min() < 2:
        raise ValueError(
            f"{what}: a class has only {counts[counts > 0].min()} training song(s), too few "
            "to hold validation songs out stratified; use more songs or val_fraction=0"
        )
    train, val = train_test_split(songs, test_size=n_val, stratify=labels[songs], random_state=seed)
    return np.sort(train), np.sort(val)


def fold_song_ids(
    shards: ShardSet, cfg: SSSLConfig, fold: int, targets: Targets | None = None
) -> SongIds:
    """The song ids of one cross-validation fold."""
    songs = shards.songs  # sorted by id: the folds are the same for every configuration
    labels = strata(songs, cfg, targets)
    train, val, test = fold_indices(labels, cfg.n_folds, fold, cfg.val_fraction, cfg.seed)
    ids = [s["song_id"] for s in songs]
    return {
        "train": [ids[i] for i in train],
        "val": [ids[i] for i in val],
        "test": [ids[i] for i in test],
    }


def refit_song_ids(shards: ShardSet, cfg: SSSLConfig, targets: Targets | None = None) -> SongIds:
    """The final refit (`sssl train --final`): every song trains, except the validation songs
    held out as in a fold (for `eval_epoch: best_val` and the SVM's validation figures); no
    test songs, since cross-validation already gave the estimate."""
    songs = shards.songs
    labels = strata(songs, cfg, targets)
    train, val = hold_out_validation(
        labels, np.arange(len(songs)), cfg.val_fraction, cfg.seed, "the final refit"
    )
    ids = [s["song_id"] for s in songs]
    return {"train": [ids[i] for i in train], "val": [ids[i] for i in val], "test": []}


def cross_fit_parts(
    shards: ShardSet, cfg: SSSLConfig, train_ids: list[str], targets: Targets | None = None
) -> list[list[str]]:
    """A fold's training songs in `cfg.cross_fit_parts` label-stratified parts (seeded)."""
    by_id = shards.by_id
    labels = strata([by_id[s] for s in train_ids], cfg, targets)
    if np.bincount(labels)[np.unique(labels)].min() < cfg.cross_fit_parts:
        raise ValueError(
            f"cross_fit_parts = {cfg.cross_fit_parts}, but a class has fewer training songs "
            "than that: use fewer parts or more songs"
        )
    return [
        sorted(train_ids[i] for i in part)
        for part in song_folds(labels, cfg.cross_fit_parts, cfg.seed)
    ]
