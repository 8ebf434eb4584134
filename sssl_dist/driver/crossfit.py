"""Out-of-sample song features for the SVM: cross-fitting inside a fold.

The paper's SVM learns from Eq. 10 features of the training songs, computed by the network that
trained on exactly those songs, and is then applied to unseen songs, whose segment
probabilities are less confident: the classic stacking mismatch (Wolpert 1992, "Stacked
generalization"; cleanlab's rule that scores fed to a second model must be out-of-sample).
With `svm_features: cross_fit` the fold's training songs are split into `cross_fit_parts`
song-grouped, label-stratified parts; for each part one extra run trains on the other parts and
predicts that part. The SVM then learns from those out-of-sample features, and the fold's own
network still gives the validation and test songs' features. The paper's in-sample figures are
kept beside the new ones as in_sample_*, from the same fold, so the two are paired.

Cost: `cross_fit_parts` extra runs per fold, each on (parts - 1) / parts of the training songs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from sssl_dist.config import SSSLConfig
from sssl_dist.data.folds import SongIds, cross_fit_parts
from sssl_dist.data.segments import ShardSet
from sssl_dist.method.tasks import task_of
from sssl_dist.outputs.foldrun import FoldRun

log = logging.getLogger(__name__)


# Trains one part of a fold's cross-fit: (role, config, songs) -> its results. The fold's run
# (run.Run) provides it, so the part is named and stored beside the fold's own run.
TrainPart = Callable[[str, SSSLConfig, SongIds], FoldRun]


def cross_fit(result: FoldRun, cfg: SSSLConfig, shards: ShardSet, train_part: TrainPart) -> None:
    """The fold's SVM re-learned from out-of-sample features of its training songs."""
    train_probs = cross_fit_probabilities(
        cfg,
        shards,
        result.fold_ids,
        evaluated_epoch=int(result.result["evaluated_epoch"]),
        train_part=train_part,
    )
    apply_cross_fit(result, cfg, shards, train_probs)


def cross_fit_probabilities(
    cfg: SSSLConfig,
    shards: ShardSet,
    fold_ids: SongIds,
    *,
    evaluated_epoch: int,
    train_part: TrainPart,
) -> dict[str, list]:
    """Each training song's segment probabilities from a run that did not train on it: one
    part per part of the fold's training songs.

    The inner runs train exactly as long as the fold's own network was trained when it was
    evaluated (`evaluated_epoch`, 0-based), so the SVM learns from features made the way the
    test songs' are, only out of sample. Inner runs trained to the last epoch instead, while the
    fold's network was taken at an early best-validation epoch, gave features 3-9x further from
    the test songs' than in-sample ones (2 folds, 2026-11-22), and a worse SVM."""
    # Plain runs of the same method, evaluated at their last epoch (= the fold's evaluated
    # epoch), with no cross-fitting of their own.
    epochs = evaluated_epoch + 1
    inner = replace(
        cfg,
        svm_features="in_sample",
        eval_epoch="last",
        epochs=epochs,
        warmup_epochs=min(cfg.warmup_epochs, epochs),
    )
    parts = cross_fit_parts(shards, cfg, fold_ids["train"], task_of(cfg).targets)
    probs: dict[str, list] = {}
    for j, part in enumerate(parts):
        log.info("cross-fit part %d/%d: %d songs predicted", j + 1, len(parts), len(part))
        others = sorted(s for p in parts if p is not part for s in p)
        done = train_part(
            f"crossfit{j + 1}of{len(parts)}", inner, {"train": others, "val": [], "test": part}
        )
        probs.update({s: done.songs[s] for s in part})
    return probs


def apply_cross_fit(
    run: FoldRun, cfg: SSSLConfig, shards: ShardSet, train_probs: dict[str, list]
) -> None:
    """The fold's song-level results with the SVM learning from `train_probs`; the in-sample
    (paper's) figures stay as in_sample_*. The report and the exported model are made from
    the FoldRun, so the run's checkpoint keeps what training wrote."""
    honest = task_of(cfg).song_results(cfg, shards.by_id, run.songs, run.fold_ids, train_probs)
    paper = {
        f"in_sample_{k}": run.result[k]
        for k, v in honest.items()
        if isinstance(v, int | float) and k in run.result
    }
    run.result = {**run.result, **honest, **paper}
    run.svm_songs = train_probs
