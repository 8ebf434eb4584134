"""The clean/noisy split of one SSSL epoch (§2.1.2, Eq. 3) and the evidence it is fitted on.

Pure: the gathered losses in, the split out; no Ray, no process group, no network. The driver's
split service (split_service.py) and rank 0 under `gmm_site: rank0` both call
`fit_split_with_metrics`; a rank only ever receives the `clean_w` vector it returns.

What the GMM sees is `cfg.split_evidence` (config.py), computed from the losses by one
function each:
- "loss": the segment's CE against its inherited label, as the paper fits;
- "song_relative": the loss minus its song's median loss;
- "smoothed": the loss averaged over the segment and its neighbours in the same song;
- "song_relative_smoothed": both, the song first;
- "oracle": no GMM at all, X = the segments whose inherited label is right by the per-second
  truth: the ceiling a perfect split gives the step (only on shards with truth).
After the GMM, two optional changes to X, one function each: `uniform_selection`
(`split_balance: uniform`, UNICON's equal share per class) and `matched_confident`
(`split_agreement: matched`, ProMix's matched high-confidence selection).
Shapes: N for the training segments, in the table's order (song id, start second).
"""

from __future__ import annotations

import functools
import logging
import warnings
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from sssl_dist.config import SSSLConfig
from sssl_dist.data.segments import SegmentTable, rank_block
from sssl_dist.method.equations import (
    DegenerateSplitWarning,
    LossMemory,
    Split,
    normalise_losses,
    split_clean_noisy,
    split_from_clean_prob,
)
from sssl_dist.method.tasks import task_of

log = logging.getLogger(__name__)

# Neighbours on each side that `smoothed` averages over: with a 1 s hop, radius 1 spans
# L + 2 seconds, shorter than the 2 s shortest excursion plus one segment length at L >= 1, so
# an excursion's middle segments keep their own evidence. Our choice (dev/split_probe.py).
SMOOTHING_RADIUS = 1
# ε of log(l + ε) in `song_relative`: below a loss of 10^-3 nats (p > 0.999) differences
# carry no information about the label; the ranking is the same for ε from 10^-4 to 10^-2
# (dev/split_probe.py).
LOG_EPS = 1e-3
# λ of the penalty λ Σ (z_t+1 - z_t)² in `per_second_evidence`, relative to the segments' fit.
# Our choice (dev/split_probe.py).
JUMP_PENALTY = 0.03


def song_starts(song_of: np.ndarray) -> np.ndarray:
    """Positions where each song's block of segments begins, plus N at the end: [S + 1].
    A table holds each song's segments contiguously, in start order."""
    change = np.flatnonzero(np.diff(song_of)) + 1
    return np.concatenate([[0], change, [song_of.size]]).astype(np.int64)


def song_relative(losses: np.ndarray, song_of: np.ndarray) -> np.ndarray:
    """log(l_i + ε) - median_{j in song(i)} log(l_j + ε): [N] -> [N], the segment's loss as a
    ratio to its song's median loss, on a log scale.

    A wrong inherited label comes from an excursion, which is a minority of its song, so the
    song's median segment carries the clip label. A hard or ambiguous song has high losses
    everywhere; measured against its own median only its excursions stand out, instead of the
    whole song landing in U. Our addition (the structure of the data: DESIGN.md, "Measuring a
    noisy-label method against its ceiling"). On the log scale both components of the GMM are
    closer to normal than on the raw losses, which are skewed with a long tail: fitted there,
    the posterior keeps the score's ranking (dev/split_probe.py). NaN losses stay NaN.
    """
    out = np.log(np.asarray(losses, dtype=np.float64) + LOG_EPS)
    starts = song_starts(song_of)
    for lo, hi in zip(starts[:-1], starts[1:], strict=True):
        block = out[lo:hi]
        finite = np.isfinite(block)
        if finite.any():
            block -= np.median(block[finite])
    return out


def per_second_evidence(
    evidence: np.ndarray, song_of: np.ndarray, start: np.ndarray, length_s: int
) -> np.ndarray:
    """The evidence of each second, recovered from the overlapping segments that cover it, then
    each segment's median second: [N] -> [N].

    A segment of L seconds reads roughly the mean of its seconds' evidence, and its true label
    is the majority of its seconds (data.segment_truth). So solve, song by song, for the
    per-second evidence z that the segments average to (least squares, with a penalty on
    second-to-second jumps, since excursions are contiguous runs of seconds), and score the
    segment by the median of its seconds: the majority rule itself. Where an excursion ends
    inside a segment, the plain segment loss blurs the two sides; the median second says
    which side holds the majority. NaN evidence is left out of the fit.

    Songs with the same number of segments share one solve (`_seconds_operator`), so the cost
    grows with the number of distinct song lengths, not of songs.
    """
    out = np.array(evidence, dtype=np.float64)
    bounds = song_starts(song_of)
    lo, counts = bounds[:-1], np.diff(bounds)
    hops = np.where(counts > 1, start[np.minimum(lo + 1, start.size - 1)] - start[lo], 1)
    for n, hop in {(int(c), int(h)) for c, h in zip(counts, hops, strict=True)}:
        songs = lo[(counts == n) & (hops == hop)]
        rows = songs[:, None] + np.arange(n)  # [S, n] table positions
        readings = out[rows]
        whole = np.isfinite(readings).all(axis=1)
        if whole.any():
            z = readings[whole] @ _seconds_operator(n, hop, length_s).T  # [S, seconds]
            out[rows[whole]] = _median_seconds(z, n, hop, length_s)
        for song in rows[~whole]:  # a NaN reading: its own fit, without that segment
            out[song] = _song_seconds(out[song], hop, length_s)
    return out


def _cover(n: int, hop: int, length_s: int) -> np.ndarray:
    """[n, seconds]: segment k averages seconds k*hop .. k*hop + L - 1."""
    cover = np.zeros((n, (n - 1) * hop + length_s))
    for k in range(n):
        cover[k, k * hop : k * hop + length_s] = 1.0 / length_s
    return cover


def _solve_seconds(cover: np.ndarray) -> np.ndarray:
    """[seconds, n]: the penalised least-squares map from segment readings to seconds."""
    seconds = cover.shape[1]
    jumps = np.diff(np.eye(seconds), axis=0)
    lhs = cover.T @ cover + JUMP_PENALTY * jumps.T @ jumps + 1e-9 * np.eye(seconds)
    return np.linalg.solve(lhs, cover.T)


@functools.lru_cache(maxsize=256)
def _seconds_operator(n: int, hop: int, length_s: int) -> np.ndarray:
    return _solve_seconds(_cover(n, hop, length_s))


def _median_seconds(z: np.ndarray, n: int, hop: int, length_s: int) -> np.ndarray:
    """[S, n]: the median of each segment's seconds, from per-second evidence z [S, seconds]."""
    windows = np.lib.stride_tricks.sliding_window_view(z, length_s, axis=1)
    return np.median(windows[:, np.arange(n) * hop], axis=2)


def _song_seconds(readings: np.ndarray, hop: int, length_s: int) -> np.ndarray:
    """One song's `per_second_evidence` fitted on its finite readings only."""
    known = np.isfinite(readings)
    if not known.any():
        return readings
    cover = _cover(readings.size, hop, length_s)
    z = readings[known] @ _solve_seconds(cover[known]).T
    return _median_seconds(z[None], readings.size, hop, length_s)[0]


def smoothed_over_neighbours(
    evidence: np.ndarray, song_of: np.ndarray, radius: int = SMOOTHING_RADIUS
) -> np.ndarray:
    """The mean of e over the segment and its `radius` neighbours on each side within the same
    song (fewer at a song's ends): [N] -> [N]. Excursions are contiguous in time, and at a 1 s
    hop neighbouring segments share most of their audio, so one segment's loss is a noisy
    reading of what its neighbours also show. NaN losses are left out of the mean."""
    out = np.empty(evidence.size, dtype=np.float64)
    starts = song_starts(song_of)
    width = 2 * radius + 1
    for lo, hi in zip(starts[:-1], starts[1:], strict=True):
        block = np.asarray(evidence[lo:hi], dtype=np.float64)
        finite = np.isfinite(block)
        pad = lambda v: np.pad(v, radius)  # noqa: E731
        sums = np.convolve(pad(np.where(finite, block, 0.0)), np.ones(width), "valid")
        counts = np.convolve(pad(finite.astype(np.float64)), np.ones(width), "valid")
        with np.errstate(invalid="ignore", divide="ignore"):
            out[lo:hi] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return out


def oracle_clean_prob(table: SegmentTable) -> np.ndarray:
    """w = 1 where the inherited label is right by the per-second truth, 0 where wrong: [N].
    Raises where a segment's truth is unknown: the oracle is defined only with truth."""
    wrong = table.wrong
    unknown = int((wrong < 0).sum())
    if unknown:
        raise ValueError(
            f"split_evidence 'oracle' needs per-second truth for every training segment; "
            f"{unknown} of {wrong.size} have none (only generated corpora are rated from their "
            "first second)"
        )
    return 1.0 - wrong.astype(np.float64)


def segment_evidence(cfg: SSSLConfig, table: SegmentTable, losses: np.ndarray) -> np.ndarray:
    """What the GMM is fitted on under `cfg.split_evidence`, from the losses [N] -> [N]."""
    kind = cfg.split_evidence
    evidence = np.asarray(losses, dtype=np.float64)
    if kind.startswith("song_relative"):
        evidence = song_relative(evidence, table.song_of)
    if kind.endswith("smoothed"):
        evidence = smoothed_over_neighbours(evidence, table.song_of)
    if kind.endswith("seconds"):
        evidence = per_second_evidence(evidence, table.song_of, table.start, table.length_s)
    return evidence


def uniform_selection(
    split: Split, groups: np.ndarray, n_groups: int, min_class_share: float = 0.05
) -> Split:
    """X re-chosen with the same number of segments from every class: |X| / C from each, the
    segments of highest w first, all of a class that has fewer (UNICON's uniform selection,
    Karim et al. 2022, "UNICON: Combating label noise through uniform selection and
    contrastive learning"). One GMM over classes of different difficulty puts the easy
    classes in X and starves the hard ones, and the step then learns the easy ones best.
    Only which segments are in X changes; their w is kept (floored so it stays > 0)."""
    quota = int(np.ceil(split.clean_mask.sum() / max(n_groups, 1)))
    mask = np.zeros_like(split.clean_mask)
    for k in range(n_groups):
        members = np.flatnonzero(groups == k)
        best = members[np.argsort(-split.clean_prob[members], kind="stable")[:quota]]
        mask[best] = True
    return reselected(split, mask, split.clean_prob, groups, n_groups, min_class_share)


def matched_confident(
    split: Split, p_label: np.ndarray, groups: np.ndarray, n_groups: int, confidence: float
) -> Split:
    """X plus every segment whose network gives its inherited label a probability above
    `confidence` (p_label [N] = exp(-CE)): ProMix's matched high-confidence selection (Xiao
    et al. 2023, "ProMix: Combating label noise via maximizing clean sample utility";
    threshold 0.99 there). A clean segment that the GMM left in U only because its song or
    class scores high wastes its label; one the network already predicts with near certainty
    is trained on as labelled. Its w becomes that probability (above τ in practice)."""
    agree = np.asarray(p_label) > confidence
    w = np.where(agree, np.maximum(split.clean_prob, p_label), split.clean_prob)
    return reselected(split, split.clean_mask | agree, w, groups, n_groups)


def reselected(
    split: Split,
    mask: np.ndarray,
    w: np.ndarray,
    groups: np.ndarray,
    n_groups: int,
    min_class_share: float = 0.05,
) -> Split:
    """`split` with X = `mask` and posteriors `w`, its class counts and warnings recounted.
    X is where `Split.clean_w` > 0, so a chosen segment keeps a w of at least 1e-6."""
    w = np.where(mask, np.maximum(w, 1e-6), w)
    recount = split_from_clean_prob(
        mask.astype(np.float64), groups, {}, n_groups, 0.5, min_class_share
    )
    fit_notes = [f"{name}: {f.degenerate}" for name, f in split.fits.items() if f.degenerate]
    return Split(
        clean_prob=w,
        clean_mask=mask,
        fits=split.fits,
        class_counts_in_x=recount.class_counts_in_x,
        warnings=fit_notes + recount.warnings,
    )


def gather_coverage(sent: list[int], n: int) -> dict[str, Any]:
    """How the gathered blocks cover positions 0..n-1: what each rank sent against the block
    it owns. Exact once <=> per_rank == expected (then gathered == n)."""
    world = len(sent)
    expected = [hi - lo for lo, hi in (rank_block(n, r, world) for r in range(world))]
    return {"per_rank": sent, "expected": expected, "gathered": int(sum(sent)), "n": n}


def split_segments(
    cfg: SSSLConfig,
    table: SegmentTable,
    losses: np.ndarray,
    epoch: int,
    memory: LossMemory | None = None,
) -> tuple[Split, np.ndarray]:
    """Eq. 3 on `cfg.split_evidence`: the split of the training segments and the evidence
    vector [N] the GMM saw. `losses` [N] are this epoch's, in position order; with `selection:
    mean_loss` they are first averaged with the earlier SSSL epochs' (`memory`, updated here)."""
    signal = np.asarray(losses, dtype=np.float64)
    if cfg.selection == "mean_loss":
        if memory is None:
            raise ValueError("selection 'mean_loss' needs the loss memory of earlier epochs")
        signal = memory.add(signal)
    groups, n_groups = task_of(cfg).split_groups(table)
    if cfg.split_evidence == "oracle":
        split = split_from_clean_prob(oracle_clean_prob(table), groups, {}, n_groups, cfg.tau)
        return split, signal
    evidence = segment_evidence(cfg, table, signal)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DegenerateSplitWarning)
        split = split_clean_noisy(
            evidence,
            groups,
            num_classes=n_groups,
            tau=cfg.tau,
            mode=cfg.gmm_scope,
            min_class_share=cfg.min_class_share,
            max_iter=cfg.gmm_max_iter,
            tol=cfg.gmm_tol,
            reg_covar=cfg.gmm_reg_covar,
            max_fit=cfg.gmm_max_fit,
            seed=cfg.seed + epoch,
        )
        if cfg.split_balance == "uniform":
            split = uniform_selection(split, groups, n_groups, cfg.min_class_share)
        if cfg.split_agreement == "matched":
            p_label = np.exp(-np.asarray(losses, dtype=np.float64))
            split = matched_confident(split, p_label, groups, n_groups, cfg.agreement_confidence)
    # The final split's own notes, not those of the GMM's X that a selection above replaced.
    others = [w.message for w in caught if not issubclass(w.category, DegenerateSplitWarning)]
    for note in [*others, *split.warnings]:
        log.warning("epoch %d split: %s", epoch, note)
    return split, evidence


def fit_split(
    cfg: SSSLConfig,
    table: SegmentTable,
    losses: np.ndarray,
    sent: list[int],
    epoch: int,
    memory: LossMemory | None = None,
) -> tuple[Split, np.ndarray]:
    """Step 3a: `split_segments` on the gathered losses [N], after checking the gather.
    `sent` is what each rank contributed.

    Raises unless every rank sent exactly its own block: a split fitted on a partial or
    shifted loss vector would silently mislabel segments.
    """
    cover = gather_coverage(sent, len(table))
    if cover["per_rank"] != cover["expected"] or losses.size != len(table):
        raise RuntimeError(
            f"the gathered losses do not cover the training set exactly once: {cover}"
        )
    return split_segments(cfg, table, losses, epoch, memory)


def fit_split_with_metrics(
    cfg: SSSLConfig,
    table: SegmentTable,
    losses: np.ndarray,
    sent: list[int],
    epoch: int,
    memory: LossMemory | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Step 3a wherever it runs (the driver's split service or rank 0): the split as
    `Split.clean_w` [N] (w on X, 0 on U) and what the epoch reports about it, the gather's
    coverage included."""
    split, evidence = fit_split(cfg, table, losses, sent, epoch, memory)
    metrics = split_metrics(split, table, evidence, task_of(cfg).split_groups(table)[0])
    metrics["gathered"] = gather_coverage(sent, len(table))
    return split.clean_w, metrics


def split_metrics(
    split: Split, table: SegmentTable, evidence: np.ndarray, groups: np.ndarray | None = None
) -> dict[str, Any]:
    """What each epoch reports about the split, including noise detection against truth.
    `groups` [N]: what each per-class GMM was fitted over (default: the inherited labels)."""
    groups = table.label if groups is None else groups
    m: dict[str, Any] = {
        "n_clean": int(split.clean_mask.sum()),
        "n_noisy": int((~split.clean_mask).sum()),
        "clean_fraction": split.clean_fraction,
        "class_counts_in_x": split.class_counts_in_x,
        "split_warnings": split.warnings,
        "gmm": {
            name: {
                "means": f.means,
                "variances": f.variances,
                "weights": f.weights,
                "degenerate": f.degenerate,
                # What this GMM saw, for the report's plot (full vectors stay out of the JSON).
                "hist": _fit_histogram(name, evidence, groups),
            }
            for name, f in split.fits.items()
        },
        "loss_range": [float(np.nanmin(evidence)), float(np.nanmax(evidence))],
    }
    m.update(noise_detection(split, table.wrong))
    return m


def noise_detection(split: Split, wrong: np.ndarray) -> dict[str, float]:
    """How well the split finds the wrong inherited labels, over the segments whose truth is
    known (`wrong` [N]: 1 wrong, 0 right, -1 unknown; an unknown segment is neither): ROC-AUC
    of 1 - w, and the precision and recall of U. Empty without both right and wrong ones."""
    known = wrong >= 0
    truth = wrong[known]
    if not 0 < truth.sum() < truth.size:
        return {}
    noisy = ~split.clean_mask[known]
    return {
        "noise_auc": float(roc_auc_score(truth, 1 - split.clean_prob[known])),
        "noise_precision": float(truth[noisy].mean()) if noisy.any() else 0.0,
        "noise_recall": float(noisy[truth == 1].mean()),
        "noise_known": int(known.sum()),
    }


def _fit_histogram(
    name: str, evidence: np.ndarray, groups: np.ndarray, bins: int = 30
) -> list[int]:
    """Histogram of the normalised evidence one GMM saw ("all", or "class k" of `groups`),
    for the report."""
    members = np.ones(len(groups), bool) if name == "all" else groups == int(name.split()[-1])
    scaled = normalise_losses(evidence[members & np.isfinite(evidence)])
    return [] if scaled is None else np.histogram(scaled, bins=bins, range=(0, 1))[0].tolist()
