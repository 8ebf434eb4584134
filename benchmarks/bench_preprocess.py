"""Preprocessing: the naive per-segment pipeline against this project's shard stage.

(a) naive, as segment-based MER code usually does it: for each segment length L in 1..5 s, load
    each song and compute a librosa log-mel separately for every segment;
(b) `shard_dataset`: decode and log-mel once per song with Ray tasks, writing shards that
    serve all five lengths (segments are cut at read time);
(c) the floor: decode + one STFT + one mel product per song, nothing else.
All on the same songs in one run; throughput is songs/s per core used.

    python benchmarks/bench_preprocess.py [--songs 24]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import librosa
import numpy as np


def naive(records, fc) -> int:
    """Per L, per song: load, then one librosa log-mel per segment. Returns segments made."""
    from sssl_dist.data.audio import log_mel

    n = 0
    for length in range(1, 6):
        for r in records:
            y, _ = librosa.load(r.audio_path, sr=fc.sample_rate, mono=True)
            width = length * fc.sample_rate
            for start in range(0, int(len(y) / fc.sample_rate - length) + 1):
                seg = y[start * fc.sample_rate : start * fc.sample_rate + width]
                log_mel(seg, fc)  # the same front end as the shard stage, per segment
                n += 1
    return n


def floor(records, fc) -> None:
    """Decode + one STFT + one mel product per song."""
    basis = librosa.filters.mel(sr=fc.sample_rate, n_fft=fc.n_fft, n_mels=fc.n_mels)
    for r in records:
        y, _ = librosa.load(r.audio_path, sr=fc.sample_rate, mono=True)
        spec = np.abs(librosa.stft(y, n_fft=fc.n_fft, hop_length=fc.hop_length)) ** 2
        basis @ spec


def main(songs: int = 24) -> dict[str, float]:
    import ray

    from shards.datasets import load_dataset
    from shards.synth import SynthConfig, generate_corpus
    from shards.write import shard_dataset
    from sssl_dist.config import FeatureConfig
    from sssl_dist.data.segments import SegmentTable, ShardSet

    fc = FeatureConfig()
    work = Path(tempfile.mkdtemp(prefix="bench-pre-"))
    generate_corpus(work / "corpus", SynthConfig(n_songs=songs, seed=11), progress=False)
    records, _, truth = load_dataset("synthetic", work / "corpus")
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    cores = int(ray.cluster_resources()["CPU"])

    # Ray worker processes start and import torch/librosa once (seconds); a real dataset pays
    # that once, so time it apart from the steady-state throughput.
    t = time.perf_counter()
    shard_dataset(records[:cores], work / "warm", fc=fc, songs_per_shard=1, progress=False)
    t_cold = time.perf_counter() - t

    t = time.perf_counter()
    n_naive = naive(records, fc)
    t_naive = time.perf_counter() - t

    t = time.perf_counter()
    shard_dataset(
        records,
        work / "shards",
        fc=fc,
        truth=truth,
        songs_per_shard=max(1, songs // cores),
        progress=False,
    )
    shards = ShardSet(work / "shards")
    n_ours = sum(len(SegmentTable.build(shards.songs, "quadrant", L)) for L in range(1, 6))
    t_ours = time.perf_counter() - t

    t = time.perf_counter()
    floor(records, fc)
    t_floor = time.perf_counter() - t
    shutil.rmtree(work, ignore_errors=True)

    naive_rate = songs / t_naive  # one core
    ours_rate = songs / t_ours / cores
    floor_rate = songs / t_floor  # one core
    figures = {
        "naive_songs_s_core": naive_rate,
        "shard_songs_s_core": ours_rate,
        "floor_songs_s_core": floor_rate,
        "ratio": ours_rate / naive_rate,
        "of_floor": ours_rate / floor_rate,
        "cold_start_s": t_cold,
    }
    print_figures(figures, songs, cores, n_naive, n_ours, songs / t_ours)
    return figures


def print_figures(f: dict[str, float], songs, cores, n_naive, n_ours, all_rate) -> None:
    print(
        f"preprocessing, {songs} songs, segments for L = 1..5 s "
        f"(naive made {n_naive}, shards serve {n_ours})"
    )
    print(f"  (a) naive per-segment mel, 1 core : {f['naive_songs_s_core']:7.2f} songs/s/core")
    print(
        f"  (b) shard stage, {cores} Ray cores   : {f['shard_songs_s_core']:7.2f} songs/s/core "
        f"({all_rate:.2f} songs/s in all)"
    )
    print(f"  (c) decode+STFT+mel floor, 1 core  : {f['floor_songs_s_core']:7.2f} songs/s/core")
    print(
        f"  ratio (b)/(a) per core: {f['ratio']:.1f}x   "
        f"(b) reaches {f['of_floor']:.0%} of the floor (c)"
    )
    print(
        f"  one-off Ray worker start-up before (b), not included above: {f['cold_start_s']:.1f} s"
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--songs", type=int, default=24)
    main(p.parse_args().songs)
