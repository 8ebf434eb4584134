"""Memory with folds side by side: does it grow with the number of concurrent folds?

Every fold's process reads the mels through one memory-mapped copy per node (data.py's mel
cache), so k folds side by side should hold the mels once, not k times. This runs 1 fold, then
`--concurrent` folds at once (`sssl train --parallel k --workers 0`: local-mode folds as Ray
tasks, each one process) and samples the memory of every process on the machine every 0.5 s.
Run it alone: every process of this user counts, a benchmark beside it included.

Memory is counted as PSS (proportional set size): a page shared by k processes counts 1/k in
each, so the sum over processes counts the shared mels once, as the machine holds them. RSS
would count them k times. The figure is the peak of that sum minus the sum on the idle machine
before the first run.

    python benchmarks/bench_memory.py --gb 1.0 --concurrent 4     # the issue's setting
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

# float16 log-mels: 128 bands x 2 bytes per frame, 22,050 / 512 frames a second.
BYTES_PER_SECOND = 128 * 2 * 22050 / 512


# The kinds of PSS that smaps_rollup splits it into: private and heap memory (anon), mapped
# files (file: the memory-mapped mels), shared memory (shmem: Ray's object store).
KINDS = ("Pss_Anon", "Pss_File", "Pss_Shmem")


def pss_mb() -> dict[str, float]:
    """The sum of PSS over every process this user can read, in MB: "Pss" and each of KINDS."""
    total = dict.fromkeys(("Pss", *KINDS), 0)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                for line in fh:
                    name = line.split(":")[0]
                    if name in total:
                        total[name] += int(line.split()[1])
        except OSError:
            continue  # gone, or not ours
    return {k: v / 1024 for k, v in total.items()}


class PeakSampler:
    """Samples pss_mb() every `period` s in a thread; `peak` is the highest total seen."""

    def __init__(self, period: float = 0.5) -> None:
        self.period, self.peak, self._stop = period, 0.0, threading.Event()
        self.at_peak: dict[str, float] = {}  # the kinds of PSS at the peak
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = pss_mb()
            if now["Pss"] > self.peak:
                self.peak, self.at_peak = now["Pss"], now
            time.sleep(self.period)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def main(gb: float, concurrent: int, work: Path) -> dict[str, float]:
    import ray

    from shards.synth import SynthConfig
    from shards.write import shard_synthetic
    from sssl_dist.config import SSSLConfig
    from sssl_dist.driver.parallel import run_folds_parallel

    mean_duration = 40.0
    songs = int(gb * 1e9 / BYTES_PER_SECOND / mean_duration) + 1
    t0 = time.perf_counter()
    synth = SynthConfig(
        n_songs=songs, seed=11, min_duration_s=35.0, max_duration_s=45.0, formats=(("flac", 1.0),)
    )
    shards = shard_synthetic(work / "corpus", work / "shards", synth, progress=True)
    mel_gb = sum(s["duration_s"] for s in shards.songs) * BYTES_PER_SECOND / 1e9
    print(f"corpus: {songs} songs, {mel_gb:.2f} GB of mels ({time.perf_counter() - t0:.0f} s)")
    if not ray.is_initialized():
        # A local-mode fold reserves one CPU: with Ray's default (one per core) only two folds
        # would run at once on 2 cores, and "4 side by side" would measure 2.
        ray.init(
            num_cpus=max(concurrent, os.cpu_count() or 1),
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    # The smallest run that loads everything a fold needs and trains: one inherit epoch.
    cfg = SSSLConfig(method="inherit", epochs=1, warmup_epochs=1, n_folds=max(concurrent, 2))
    shards.load_mels({s["song_id"] for s in shards.songs})  # the per-node cache, built once
    out = {}
    # Both runs are measured from the same idle level: Ray keeps the first run's finished worker
    # process alive for reuse, and a fresh baseline would hide its memory from the second run.
    time.sleep(2)
    idle = pss_mb()
    before = idle["Pss"]
    for k in (1, concurrent):
        time.sleep(2)
        t0 = time.perf_counter()
        with PeakSampler() as peak:
            folds = list(range(k))
            names = {f: f"k{k}-f{f}" for f in folds}
            for _ in run_folds_parallel(
                cfg, shards, folds, storage_path=work / "ray", names=names, parallel=k
            ):
                pass
        out[k] = peak.peak - before
        kinds = ", ".join(
            f"{kind[4:].lower()} +{peak.at_peak[kind] - idle[kind]:.0f}" for kind in KINDS
        )
        print(
            f"  {k} fold(s) side by side: peak PSS +{out[k]:.0f} MB over the idle "
            f"{before:.0f} MB ({kinds} MB; {time.perf_counter() - t0:.0f} s)"
        )
    ratio = out[concurrent] / out[1]
    print(
        f"memory, {concurrent} folds against 1 on {mel_gb:.2f} GB of mels: {ratio:.2f}x "
        f"(the mels alone {mel_gb * 1000:.0f} MB)"
    )
    return {"mel_gb": mel_gb, "one_mb": out[1], "many_mb": out[concurrent], "ratio": ratio}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--gb", type=float, default=1.0, help="size of the corpus's mels")
    p.add_argument("--concurrent", type=int, default=4)
    p.add_argument("--work", help="keep the corpus here (default: a temporary directory)")
    a = p.parse_args()
    main(a.gb, a.concurrent, Path(a.work or tempfile.mkdtemp(prefix="bench-memory-")))
