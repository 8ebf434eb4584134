"""Which songs each run trains, validates and tests on (sssl_dist/data/folds.py)."""

import numpy as np

from sssl_dist.config import SSSLConfig
from sssl_dist.data.folds import (
    cross_fit_parts,
    fold_indices,
    fold_song_ids,
    refit_song_ids,
    song_folds,
)
from sssl_dist.data.segments import SegmentTable, ShardSet

CFG = SSSLConfig(n_folds=2)


def test_folds_by_song_stratified_no_leak():
    labels = np.repeat([0, 1, 2, 3], 25)
    folds = song_folds(labels, 10, seed=0)
    assert np.array_equal(np.sort(np.concatenate(folds)), np.arange(100))
    for f in range(10):
        train, val, test = fold_indices(labels, 10, f, 0.1, seed=0)
        assert not set(train) & set(test) and not set(val) & set(test) and not set(train) & set(val)
        assert len(train) + len(val) + len(test) == 100
        assert np.bincount(labels[test], minlength=4).min() >= 2


def test_folds_by_song_without_leak(shard_dir):
    shards = ShardSet(shard_dir)
    seen_test = []
    for fold in range(CFG.n_folds):
        ids = fold_song_ids(shards, CFG, fold)
        train, val, test = map(set, (ids["train"], ids["val"], ids["test"]))
        assert not (train & test) and not (val & test) and not (train & val)
        table = SegmentTable.build(
            [s for s in shards.songs if s["song_id"] in train], "quadrant", 3
        )
        assert set(table.song_ids) <= train  # no test song contributes a training segment
        seen_test += ids["test"]
    assert sorted(seen_test) == sorted(s["song_id"] for s in shards.songs)


def test_refit_and_cross_fit_parts_partition_their_songs(shard_dir):
    shards = ShardSet(shard_dir)
    refit = refit_song_ids(shards, CFG)
    every = sorted(s["song_id"] for s in shards.songs)
    assert refit["test"] == [] and sorted(refit["train"] + refit["val"]) == every
    assert not set(refit["train"]) & set(refit["val"])
    train = refit["train"]
    parts = cross_fit_parts(shards, CFG, train)
    assert len(parts) == CFG.cross_fit_parts and sorted(sum(parts, [])) == sorted(train)


def test_a_class_with_one_training_song_says_what_helps():
    """2 folds of a class with 2 songs leave it 1 training song: more songs or no validation
    songs help; fewer folds cannot (2 is the least), so the message does not suggest them."""
    import pytest

    labels = np.array([0] * 5 + [1] * 5 + [2] * 2)
    with pytest.raises(ValueError) as err:
        fold_indices(labels, 2, 0, 0.2, 0)
    assert str(err.value).endswith("use more songs or val_fraction=0")
