"""Song-level decision (paper §2.2): segment probabilities -> Eq. 10 features -> SVM.

The SVM is kept as its training data plus settings, never as a pickle: refitting scikit-learn's
SVC on the same data with the same random_state reproduces it exactly, so an exported model
loads with `torch.load(weights_only=True)` and executes no code from the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from sssl_dist.data.targets import CLASS_NAMES

FEATURE_NAMES = ("max", "min", "q1", "median", "q3", "mean", "frac_above_theta")


def song_features(probs: np.ndarray, theta: float) -> np.ndarray:
    """Eq. 10: for each class k, f1..f7 of the segment probabilities P_s(E_k), s ∈ C.

    probs [S, K] (S segments of one song) -> [7K], class-major: [f1^1..f7^1, f1^2..f7^2, ...]
      f1 = max_s P_s(E_k), f2 = min_s P_s(E_k), f3..f5 = quartiles 1-3 (numpy's linear
      interpolation), f6 = mean_s P_s(E_k), f7 = |{s : P_s(E_k) > θ}| / |C|.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] == 0:
        raise ValueError(f"song_features needs [S>0, K] probabilities, got shape {probs.shape}")
    q1, q2, q3 = np.quantile(probs, [0.25, 0.5, 0.75], axis=0)
    per_class = np.stack(
        [
            probs.max(axis=0),
            probs.min(axis=0),
            q1,
            q2,
            q3,
            probs.mean(axis=0),
            (probs > theta).mean(axis=0),
        ],
        axis=1,
    )  # [K, 7]
    return per_class.reshape(-1)


def feature_names(label_names: tuple[str, ...]) -> list[str]:
    return [f"{k}:{f}" for k in label_names for f in FEATURE_NAMES]


def majority_vote(probs: np.ndarray) -> int:
    """Song decision of Sarkar et al.: the class most segments vote for (ties: lowest index)."""
    votes = np.bincount(np.argmax(probs, axis=1), minlength=probs.shape[1])
    return int(np.argmax(votes))


@dataclass
class SongClassifier:
    """Standardisation + SVM on Eq. 10 features, trained on the training songs of a fold."""

    c: float = 1.0
    kernel: str = "rbf"
    seed: int = 0

    def fit(self, features: np.ndarray, labels: np.ndarray) -> SongClassifier:
        self.train_features = np.asarray(features, dtype=np.float64)
        self.train_labels = np.asarray(labels, dtype=np.int64)
        self.classes = np.unique(self.train_labels)
        if self.classes.size == 1:
            # One class in training: SVC refuses; the only honest answer is that class.
            self._pipe = None
            return self
        svm = SVC(C=self.c, kernel=self.kernel, random_state=self.seed)
        # Song probabilities by Platt scaling on internal folds, as SVC(probability=True) did
        # before scikit-learn 1.9 deprecated it; the folds are unshuffled, so the fit is
        # deterministic and a model refit from its stored training data is the same model.
        smallest = int(np.bincount(self.train_labels)[self.classes].min())
        head = (
            CalibratedClassifierCV(svm, ensemble=False, cv=min(5, smallest))
            if smallest >= 2
            else svm
        )
        self._pipe = make_pipeline(StandardScaler(), head)
        self._pipe.fit(self.train_features, self.train_labels)
        self._calibrated = smallest >= 2
        return self

    def predict_proba(self, features: np.ndarray, num_classes: int) -> np.ndarray:
        """[n, 7K] -> [n, num_classes] (classes absent from training get probability 0)."""
        features = np.atleast_2d(np.asarray(features, dtype=np.float64))
        out = np.zeros((features.shape[0], num_classes))
        if self._pipe is None:
            out[:, self.classes[0]] = 1.0
            return out
        if not self._calibrated:  # too few songs per class to calibrate: hard decisions
            out[np.arange(len(features)), self._pipe.predict(features)] = 1.0
            return out
        out[:, self._pipe.classes_] = self._pipe.predict_proba(features)
        return out

    def predict(self, features: np.ndarray) -> np.ndarray:
        features = np.atleast_2d(np.asarray(features, dtype=np.float64))
        if self._pipe is None:
            return np.full(features.shape[0], self.classes[0])
        return self._pipe.predict(features)


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, train_labels: np.ndarray
) -> dict[str, float]:
    """Accuracy and F1 (binary: F1 of class 1; 4 classes: macro-F1), and the majority-class
    baseline: the accuracy of always answering the most frequent training class."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    majority = int(np.argmax(np.bincount(np.asarray(train_labels), minlength=num_classes)))
    if num_classes == 2:
        f1 = f1_score(y_true, y_pred, pos_label=1, average="binary", zero_division=0)
    else:
        f1 = f1_score(
            y_true, y_pred, labels=list(range(num_classes)), average="macro", zero_division=0
        )
    return {
        "acc": float(accuracy_score(y_true, y_pred)),
        "f1": float(f1),
        "majority_acc": float(np.mean(y_true == majority)),
    }


def brier_score(probs: np.ndarray, y: np.ndarray) -> float:
    """Multi-class Brier score (Brier 1950): mean over songs of sum_k (p_k - [y = k])^2.
    0 is perfect; always answering 1/K scores 1 - 1/K."""
    onehot = np.eye(probs.shape[1])[y]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """ECE of the top-class probability (Guo et al. 2017): the gap between confidence and
    accuracy in 10 equal-width confidence bins, weighted by the share of songs in each bin."""
    conf, hit = probs.max(axis=1), (probs.argmax(axis=1) == y).astype(float)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    return float(
        sum(
            abs(hit[which == b].mean() - conf[which == b].mean()) * np.mean(which == b)
            for b in np.unique(which)
        )
    )


def feature_shift(train: np.ndarray, other: np.ndarray) -> float:
    """How far `other` songs' Eq. 10 features lie from the training songs' that the SVM learned
    from: the mean over features of |mean difference| / training std (standardised mean
    difference; 0 = same centre). In-sample segment predictions make training songs look more
    confident than unseen ones (the stacking mismatch, crossfit.py)."""
    std = train.std(axis=0)
    keep = std > 1e-12
    return float(np.mean(np.abs(train.mean(0) - other.mean(0))[keep] / std[keep]))


def song_level_results(
    cfg,
    songs_by_id: dict[str, dict],
    probs: dict[str, list],
    fold_ids: dict[str, list[str]],
    train_probs: dict[str, list] | None = None,
    label_key: str | None = None,
) -> dict[str, Any]:
    """Eq. 10 features -> SVM trained on the fold's train songs -> val/test metrics, with the
    majority-vote and majority-class baselines beside them. `train_probs` (cross-fitted,
    out-of-sample segment probabilities of the training songs) replaces what the SVM learns
    from; `probs` still gives the validation and test songs' features. `label_key`: the
    record key of the songs' class labels (default `cfg.task`).

    Every song of the fold must have at least one segment: the driver refuses a segment length
    longer than a song before launch, so a song can never drop out of the SVM or the test set
    silently.
    """
    empty = sorted(s for ids in fold_ids.values() for s in ids if not len(probs.get(s, [])))
    if empty:
        raise ValueError(
            f"{len(empty)} song(s) have no segment of {cfg.segment_seconds} s: {empty[:5]}"
        )
    key = label_key or cfg.task
    num_classes = len(CLASS_NAMES[key])
    feats = {sid: song_features(np.asarray(p), cfg.theta) for sid, p in probs.items()}
    labels = {sid: songs_by_id[sid][key] for sid in probs}
    train_ids = fold_ids["train"]
    y_train = np.array([labels[s] for s in train_ids])
    learn_from = probs if train_probs is None else train_probs
    clf = SongClassifier(cfg.svm_c, cfg.svm_kernel, cfg.seed).fit(
        np.stack([song_features(np.asarray(learn_from[s]), cfg.theta) for s in train_ids]),
        y_train,
    )
    out: dict[str, Any] = {}
    for part in ("val", "test"):
        ids = fold_ids[part]
        if not ids:
            continue
        y = np.array([labels[s] for s in ids])
        x = np.stack([feats[s] for s in ids])
        pred = clf.predict(x)
        p = clf.predict_proba(x, num_classes)
        vote = np.array([majority_vote(np.asarray(probs[s])) for s in ids])
        for name, m in classification_metrics(y, pred, num_classes, y_train).items():
            out[f"{part}_{name}"] = m
        vote_m = classification_metrics(y, vote, num_classes, y_train)
        out[f"{part}_vote_acc"], out[f"{part}_vote_f1"] = vote_m["acc"], vote_m["f1"]
        # Do the song probabilities mean what they say (what `sssl predict` prints)?
        out[f"{part}_brier"] = brier_score(p, y)
        out[f"{part}_ece"] = expected_calibration_error(p, y)
        out[f"{part}_feature_shift"] = feature_shift(clf.train_features, x)
        out[f"{part}_songs"] = len(ids)
        out[f"{part}_true"] = dict(zip(ids, y.tolist(), strict=True))  # for the confusion plot
        out[f"{part}_pred"] = dict(zip(ids, pred.tolist(), strict=True))
    return out
