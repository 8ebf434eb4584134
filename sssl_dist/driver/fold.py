"""The checks before a run is launched: what the shards cannot serve (`check_shards`) and
what would fail inside the run (`check_fold`). `run.Run.fit` makes them before it trains."""

from __future__ import annotations

import logging

from sssl_dist.config import SSSLConfig
from sssl_dist.data.folds import SongIds
from sssl_dist.data.segments import SegmentTable, ShardSet, segment_count, training_table
from sssl_dist.method.tasks import task_of

log = logging.getLogger(__name__)


def check_shards(cfg: SSSLConfig, shards: ShardSet) -> None:
    """Refuse a config these shards cannot serve, before Ray starts: the ceiling arms
    (`split_evidence: oracle`, `train_labels: truth`) train on the per-second truth of every
    training segment, which only generated corpora have; dynamic annotations leave the first
    15 s of every song unknown. Checked on every song, so no fold can fail later. Every song
    must also have the task's target (a regression task needs each song's continuous
    rating)."""
    task_of(cfg).check_config(cfg)
    targets = task_of(cfg).targets
    for song in shards.songs:
        try:
            targets.song_target(song)
        except KeyError as missing:
            raise ValueError(
                f"task {cfg.task}: song {song['song_id']!r} in {shards.root} has no {missing} label"
            ) from None
    if not cfg.needs_truth:
        return
    table = SegmentTable.build(shards.songs, targets, cfg.segment_seconds, cfg.hop_seconds)
    unknown = int((~table.known).sum())
    if unknown:
        what = (
            "split_evidence 'oracle'" if cfg.split_evidence == "oracle" else "train_labels 'truth'"
        )
        raise ValueError(
            f"{what} trains on per-second truth, and {unknown} of the {len(table)} segments in "
            f"{shards.root} have none (only corpora from `sssl synth` are rated throughout): "
            "use shards with per-second truth for every second, or drop this setting (and "
            "--ceiling) here"
        )


def check_fold(cfg: SSSLConfig, shards: ShardSet, fold_ids: SongIds, workers: int) -> SegmentTable:
    """Refuse, before any worker starts, what would otherwise fail (or hang) inside the run.
    Returns the fold's training segments.

    - a song shorter than L has no segment: it would vanish from the SVM and the test set;
    - fewer training segments than ranks would leave a rank with an empty loss-pass block.
    """
    check_shards(cfg, shards)
    by_id = shards.by_id
    fold_songs = [by_id[s] for ids in fold_ids.values() for s in ids]
    short = sorted(
        (s["duration_s"], s["song_id"])
        for s in fold_songs
        if segment_count(s["duration_s"], cfg.segment_seconds, cfg.hop_seconds) == 0
    )
    if short:
        names = ", ".join(f"{sid} ({d:.1f} s)" for d, sid in short[:5])
        raise ValueError(
            f"{len(short)} song(s) are shorter than segment_seconds = {cfg.segment_seconds}: "
            f"{names}{' …' if len(short) > 5 else ''}. They would have no segment and drop out "
            f"of the song-level decision; use segment_seconds <= {int(short[0][0])}, or re-shard "
            "without them"
        )
    table = training_table([by_id[s] for s in fold_ids["train"]], cfg, task_of(cfg).targets)
    n_train = len(table)
    ranks = max(workers, 1)
    if n_train < ranks:
        raise ValueError(
            f"{n_train} training segment(s) for {ranks} worker(s): every worker needs at least "
            "one; use fewer workers or more songs"
        )
    if cfg.batch_size % ranks:
        log.warning(
            "batch_size %d is not a multiple of %d workers: the global batch is %d",
            cfg.batch_size,
            ranks,
            cfg.batch_size // ranks * ranks,
        )
    return table
