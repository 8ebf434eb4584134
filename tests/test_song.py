"""The song-level decision (paper §2.2): Eq. 10 on a hand-computed example, the SVM, the
majority vote, and the fold's song-level results."""

from __future__ import annotations

import numpy as np
import pytest

from sssl_dist.config import SSSLConfig
from sssl_dist.method.song import (
    SongClassifier,
    brier_score,
    expected_calibration_error,
    feature_shift,
    majority_vote,
    song_features,
    song_level_results,
)

# 4 segments, 2 classes.
PROBS = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.7, 0.3]])


def test_eq10_song_features_by_hand():
    """Worked by hand (quartiles with linear interpolation between order statistics: the
    q-quantile of n sorted values sits at position q (n - 1)).
    Class 0: sorted 0.2 0.6 0.7 0.9 -> max 0.9, min 0.2, Q1 at 0.75: 0.2 + 0.75 * 0.4 = 0.5,
    median at 1.5: 0.65, Q3 at 2.25: 0.7 + 0.25 * 0.2 = 0.75, mean 0.6, share > 0.5: 3/4.
    Class 1: sorted 0.1 0.3 0.4 0.8 -> 0.8, 0.1, 0.25, 0.35, 0.5, mean 0.4, share > 0.5: 1/4.
    Class-major order: f1..f7 of class 0, then f1..f7 of class 1."""
    expected = [0.9, 0.2, 0.5, 0.65, 0.75, 0.6, 0.75, 0.8, 0.1, 0.25, 0.35, 0.5, 0.4, 0.25]
    np.testing.assert_allclose(song_features(PROBS, theta=0.5), expected, atol=1e-12)
    # θ is a strict threshold: at θ = 0.6 the segment at exactly 0.6 does not count.
    assert song_features(PROBS, theta=0.6)[6] == pytest.approx(0.5)


def test_eq10_refuses_a_song_without_segments():
    with pytest.raises(ValueError, match="S>0"):
        song_features(np.zeros((0, 4)), 0.5)


def test_majority_vote_counts_segment_decisions_and_breaks_ties_low():
    assert majority_vote(PROBS) == 0  # votes 0, 0, 1, 0
    assert majority_vote(np.array([[0.2, 0.8], [0.9, 0.1]])) == 0  # 1-1 tie: lowest index
    assert majority_vote(np.array([[0.1, 0.2, 0.7], [0.0, 0.1, 0.9]])) == 2


def _blobs(n_per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.concatenate(
        [rng.normal(0, 0.3, (n_per_class, 14)), rng.normal(2, 0.3, (n_per_class, 14))]
    )
    return x, np.repeat([0, 1], n_per_class)


def test_song_classifier_separates_and_refits_identically():
    x, y = _blobs(20)
    clf = SongClassifier(seed=3).fit(x, y)
    x_test, y_test = _blobs(10, seed=1)
    assert (clf.predict(x_test) == y_test).mean() == 1.0
    proba = clf.predict_proba(x_test, num_classes=2)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    assert (proba.argmax(1) == y_test).all()
    # Our choice of storing the SVM as its training data rests on this: refitting on the same
    # data gives the same model, so `model.sssl` needs no pickle.
    again = SongClassifier(seed=3).fit(clf.train_features, clf.train_labels)
    np.testing.assert_array_equal(again.predict_proba(x_test, 2), proba)


def test_song_classifier_with_one_class_or_too_few_songs():
    x, _ = _blobs(5)
    one = SongClassifier().fit(x, np.ones(len(x), int))
    assert (one.predict(x) == 1).all()
    np.testing.assert_array_equal(one.predict_proba(x[:2], 3), [[0, 1, 0], [0, 1, 0]])
    # One song of class 0: too few to calibrate, so the probabilities are hard decisions.
    few = SongClassifier().fit(x[[0, 5, 6, 7]], np.array([0, 1, 1, 1]))
    p = few.predict_proba(x, 2)
    assert set(np.unique(p)) <= {0.0, 1.0} and (p.sum(1) == 1).all()


def test_song_level_results_score_every_song_and_refuse_empty_ones():
    cfg = SSSLConfig(task="valence")
    rng = np.random.default_rng(0)
    songs, probs, ids = {}, {}, {"train": [], "val": [], "test": []}
    for i in range(24):
        label = i % 2
        sid = f"s{i:02d}"
        songs[sid] = {"valence": label}
        p1 = np.clip(rng.normal(0.8 if label else 0.2, 0.1, 6), 0, 1)
        probs[sid] = np.stack([1 - p1, p1], 1).tolist()
        ids["train" if i < 16 else "val" if i < 18 else "test"].append(sid)
    out = song_level_results(cfg, songs, probs, ids)
    assert out["test_songs"] == 6 and out["val_songs"] == 2
    assert out["test_acc"] == 1.0 and out["test_vote_acc"] == 1.0
    assert out["test_majority_acc"] == 0.5  # the training songs are balanced: class 0 answered
    assert 0 <= out["test_brier"] < 0.5 and 0 <= out["test_ece"] <= 1
    assert out["test_feature_shift"] >= 0
    probs["s20"] = []  # a song with no segment must not vanish from the test set silently
    with pytest.raises(ValueError, match="no segment"):
        song_level_results(cfg, songs, probs, ids)


def test_calibration_and_feature_shift_by_hand():
    y = np.array([0, 1, 1, 0])
    sure_right = np.eye(2)[y]
    assert brier_score(sure_right, y) == 0.0
    assert brier_score(np.full((4, 2), 0.5), y) == pytest.approx(0.5)  # 1 - 1/K
    # Always 90 % sure, right half the time: ECE = |0.5 - 0.9| = 0.4.
    half = np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.1, 0.9]])
    assert expected_calibration_error(half, np.array([0, 1, 1, 0])) == pytest.approx(0.4)
    assert expected_calibration_error(sure_right, y) == pytest.approx(0.0)
    rng = np.random.default_rng(0)
    train = rng.normal(0, 1, (500, 3))
    assert feature_shift(train, rng.normal(0, 1, (500, 3))) < 0.2
    assert feature_shift(train, rng.normal(1, 1, (500, 3))) == pytest.approx(1.0, abs=0.2)


def test_song_level_results_learn_from_cross_fitted_train_probs():
    """train_probs replaces what the SVM learns from, and only that: here the cross-fitted
    probabilities of the training songs say the opposite of the in-sample ones, so the test
    decisions flip."""
    cfg = SSSLConfig(task="valence")
    rng = np.random.default_rng(1)
    songs, probs, ids = {}, {}, {"train": [], "val": [], "test": []}
    for i in range(24):
        label = i % 2
        sid = f"s{i:02d}"
        songs[sid] = {"valence": label}
        p1 = np.clip(rng.normal(0.8 if label else 0.2, 0.05, 6), 0, 1)
        probs[sid] = np.stack([1 - p1, p1], 1).tolist()
        ids["train" if i < 18 else "test"].append(sid)
    swapped = {s: np.asarray(probs[s])[:, ::-1].tolist() for s in ids["train"]}
    assert song_level_results(cfg, songs, probs, ids)["test_acc"] == 1.0
    assert song_level_results(cfg, songs, probs, ids, swapped)["test_acc"] == 0.0
