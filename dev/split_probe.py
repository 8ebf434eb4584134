"""How well candidate scores find the wrong inherited labels, epoch by epoch, on one fold.

    python dev/split_probe.py --work runs/probe --folds 5 --fold 0 [--L 3] [--drive loss]

With --oos it measures instead whether out-of-sample scoring would help: a network trained
on half of the training songs scores the other half, beside one trained on all of them.

Trains one fold in this process with the product's own pieces (train.build_worker and the
epoch functions; no Ray): the warm-up, then SSSL epochs whose split is driven by the score
named by --drive. At the end of the warm-up and at every SSSL epoch it computes every candidate
score over the training segments and prints its noise AUC against the per-second truth, plus
validation segment accuracy against the truth. One process, one core.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score


def song_rank(x: np.ndarray, song_of: np.ndarray) -> np.ndarray:
    """Each segment's rank within its song, scaled to [0, 1]."""
    from sssl_dist.method.split import song_starts

    out = np.empty(x.size)
    s = song_starts(song_of)
    for lo, hi in zip(s[:-1], s[1:], strict=True):
        out[lo:hi] = np.argsort(np.argsort(x[lo:hi])) / max(hi - lo - 1, 1)
    return out


def median_filter(x: np.ndarray, song_of: np.ndarray, radius: int) -> np.ndarray:
    from scipy.ndimage import median_filter as mf

    from sssl_dist.method.split import song_starts

    out = np.empty(x.size)
    s = song_starts(song_of)
    for lo, hi in zip(s[:-1], s[1:], strict=True):
        out[lo:hi] = mf(x[lo:hi], size=2 * radius + 1, mode="nearest")
    return out


def scores(losses: np.ndarray, probs: np.ndarray, table) -> dict[str, np.ndarray]:
    """Candidate evidence that a segment's inherited label is wrong (higher: more likely)."""
    from sssl_dist.method.split import smoothed_over_neighbours as sm
    from sssl_dist.method.split import song_relative as rel

    so = table.song_of
    r = rel(losses, so)
    # The song's own predicted distribution: mean of the segments' probabilities.
    from sssl_dist.method.split import song_starts

    st = song_starts(so)
    song_mean = np.empty_like(probs)
    for lo, hi in zip(st[:-1], st[1:], strict=True):
        song_mean[lo:hi] = probs[lo:hi].mean(0)
    own = probs[np.arange(len(so)), table.label]
    top = probs.argmax(1)
    return {
        "loss": losses,
        "relative": r,
        "smoothed": sm(losses, so),
        "smoothed2": sm(losses, so, 2),
        "rel_smoothed": sm(r, so),
        "rel_smoothed2": sm(r, so, 2),
        "rel_median3": median_filter(r, so, 1),
        "rel_median5": median_filter(r, so, 2),
        "rank_in_song": song_rank(losses, so),
        # how far the segment's prediction is from its song's mean prediction
        "dist_song_mean": np.abs(probs - song_mean).sum(1),
        "not_top": (top != table.label).astype(float) + (1 - own) * 0.5,
        "rel_prob": -(
            own
            - np.array(
                [
                    np.median(own[lo:hi])
                    for lo, hi in zip(st[:-1], st[1:], strict=True)
                    for _ in range(hi - lo)
                ]
            )
        ),
    }


@torch.no_grad()
def network_losses(w, net) -> tuple[np.ndarray, np.ndarray]:
    """(per-segment CE of the inherited label [N], softmax probabilities [N, K]) of `net`."""
    from sssl_dist.data.segments import loss_pass_batches
    from sssl_dist.method.equations import per_sample_ce

    net.eval()
    losses, probs = [], []
    for idx in loss_pass_batches(0, len(w.table), w.eval_batch):
        logits = net(w.batcher.inputs(idx)).float()
        losses.append(per_sample_ce(logits, w.batcher.labels(idx)))
        probs.append(torch.softmax(logits, -1))
    return torch.cat(losses).numpy(), torch.cat(probs).numpy()


def out_of_sample(shards, cfg, fold_ids: dict, epochs: int) -> None:
    """Does a network that never saw a song rank its wrong labels better? Train plain CE on
    all training songs (in sample) and on half of them (A); score the other half (B) with both,
    after every epoch, and print the noise AUC of the raw loss and of the song-relative score."""
    from sssl_dist.method.split import song_relative
    from sssl_dist.rank.epoch import train_epoch
    from sssl_dist.rank.train import build_worker

    train = sorted(fold_ids["train"])
    half_a, half_b = train[0::2], train[1::2]
    w_all, _, _ = build_worker(cfg, shards, fold_ids)
    w_a, _, _ = build_worker(cfg, shards, {**fold_ids, "train": half_a})
    scorer_b, _, _ = build_worker(cfg, shards, {**fold_ids, "train": half_b})
    wrong = scorer_b.table.wrong
    for epoch in range(epochs):
        for w in (w_all, w_a):
            torch.manual_seed(cfg.seed * 1_000_003 + epoch * 101)
            train_epoch(w, None, epoch)
        row = {"epoch": epoch}
        for name, w in (("in_sample", w_all), ("out_of_sample", w_a)):
            losses, _ = network_losses(scorer_b, w.plain)
            row[f"{name}_loss"] = roc_auc_score(wrong, losses)
            row[f"{name}_relative"] = roc_auc_score(
                wrong, song_relative(losses, scorer_b.table.song_of)
            )
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--work", type=Path, default=Path("runs/probe"))
    p.add_argument("--songs", type=int, default=200)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--L", type=int, default=3)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--drive", default="loss", help="split_evidence that drives training")
    p.add_argument("--set", nargs="*", default=[], help="config overrides KEY=VALUE")
    p.add_argument(
        "--oos", action="store_true", help="in-sample against out-of-sample scoring instead"
    )
    a = p.parse_args()

    from shards.synth import SynthConfig
    from shards.write import shard_synthetic
    from sssl_dist.config import SSSLConfig, parse_overrides, with_overrides
    from sssl_dist.data.folds import fold_song_ids
    from sssl_dist.method import split as splitmod
    from sssl_dist.rank.epoch import segment_accuracy, train_epoch
    from sssl_dist.rank.train import build_worker

    torch.set_num_threads(1)
    shards = shard_synthetic(
        a.work / "corpus", a.work / "shards", SynthConfig(n_songs=a.songs, seed=0)
    )
    cfg = SSSLConfig(n_folds=a.folds, epochs=a.epochs, warmup_epochs=a.warmup, segment_seconds=a.L)
    cfg = with_overrides(cfg, {"split_evidence": a.drive, **parse_overrides(a.set)})
    if a.oos:
        out_of_sample(shards, cfg, fold_song_ids(shards, cfg, a.fold), a.epochs)
        return
    w, _, _ = build_worker(cfg, shards, fold_song_ids(shards, cfg, a.fold))
    wrong = w.table.wrong
    rows = []
    for epoch in range(cfg.epochs):
        torch.manual_seed(cfg.seed * 1_000_003 + epoch * 101)
        clean_w = None
        if epoch >= cfg.warmup_epochs:
            losses, probs = network_losses(w, w.plain)
            teacher = w.teacher if w.teacher is not None else w.plain
            t_losses, t_probs = network_losses(w, teacher)
            row = {"epoch": epoch}
            for name, score in scores(losses, probs, w.table).items():
                row[name] = roc_auc_score(wrong, score)
            row["teacher_loss"] = roc_auc_score(wrong, t_losses)
            row["teacher_relative"] = roc_auc_score(
                wrong, splitmod.song_relative(t_losses, w.table.song_of)
            )
            np.savez_compressed(
                a.work / f"dump-{a.drive}-L{a.L}-fold{a.fold}-epoch{epoch}.npz",
                losses=losses,
                probs=probs,
                t_losses=t_losses,
                t_probs=t_probs,
                song_of=w.table.song_of,
                start=w.table.start,
                label=w.table.label,
                true_label=w.table.true_label,
            )
            split, _ = splitmod.split_segments(cfg, w.table, losses, epoch)
            row["split_auc"] = roc_auc_score(wrong, 1 - split.clean_prob)
            row["x_share"] = float(split.clean_mask.mean())
            row["x_wrong"] = float(wrong[split.clean_mask].mean())
            clean_w = split.clean_w
        else:
            row = {"epoch": epoch}
        train_epoch(w, clean_w, epoch)
        row.update(segment_accuracy(w))
        rows.append(row)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))
    out = a.work / f"probe-{a.drive}-L{a.L}-fold{a.fold}.json"
    out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
