"""Ray tasks turn songs into WebDataset tar shards of song-level log-mels + a manifest.json.

Each song is decoded and its log-mel computed once; segments of every length are cut from it at
read time (`sssl_dist.data.segments`), so one shard set serves L = 1..5 s. Per song a shard holds
`<key>.mel.npy` (float16 [n_mels, frames], plain .npy, never a pickle) and `<key>.json`.

A shard is written to a temporary name and renamed when complete, with a sidecar
`<shard>.json` written last: a shard counts as done only when its sidecar records the same plan
(each song's id, labels, truth, audio path and the file's size and mtime) and the same feature
digest. An interrupted run therefore never leaves a tar that the reader accepts, and re-running
completes the set, rebuilds the shards whose songs changed and skips the others. One run at a
time writes into an output directory (a lock).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import ray
import webdataset as wds
from filelock import FileLock
from tqdm import tqdm

from sssl_dist.config import FeatureConfig
from sssl_dist.data.audio import AudioError, decode, log_mel, not_a_regular_file, probe_duration
from sssl_dist.data.records import SongRecord
from sssl_dist.data.segments import MANIFEST_NAME, ShardSet, library_versions
from sssl_dist.driver.ray_start import init_ray
from sssl_dist.files.outdir import hold, process_alive

if TYPE_CHECKING:
    from shards.synth import SynthConfig

log = logging.getLogger(__name__)
SHARD_FORMAT = "sssl-shards/1"
DEFAULT_FEATURES = FeatureConfig()  # frozen: safe as a shared default


LOCK_NAME = ".shard.lock"
# What a shard directory was made from (data set and root), beside the manifest rather than in
# it, so that the shard set's digest, and every run named after it, stays what it was.
SOURCE_NAME = "source.json"
_PLAIN_ID = re.compile(r"[A-Za-z0-9_-]+")


def shard_key(song_id: str) -> str:
    """The tar key of a song. WebDataset splits keys at the first dot, so keys keep to
    [A-Za-z0-9_-]. A plain id is its own key (shard sets written before stay valid); any
    other id keeps its readable part plus a short hash of the exact id, so `ü1` and `é1` do
    not both become `_1`."""
    if _PLAIN_ID.fullmatch(song_id):
        return song_id
    readable = re.sub(r"[^A-Za-z0-9_-]", "_", song_id)
    return f"{readable}-{hashlib.sha256(song_id.encode()).hexdigest()[:10]}"


def check_unique_keys(song_ids: list[str]) -> None:
    """Refuse a plan in which two songs would share a tar key (the reader could not tell
    them apart)."""
    counts = Counter(shard_key(s) for s in song_ids)
    clashes = sorted(s for s in song_ids if counts[shard_key(s)] > 1)
    if clashes:
        raise ValueError(f"song ids that map to the same shard key: {clashes[:6]}; rename them")


def plan_entry(record: SongRecord, truth: list[int] | None) -> dict[str, Any]:
    """What a shard's content depends on for one song: its record (id, labels, audio path),
    its per-second truth and its file's (size, mtime_ns). A change in any of them rebuilds
    the shard: an annotation fix, a new truth, a replaced file."""
    try:
        st = os.stat(record.audio_path)
        stamp = [st.st_size, st.st_mtime_ns]
    except OSError:
        stamp = None  # missing: write_shard rejects it, and a file that appears later rebuilds
    return {"record": record.to_dict(), "truth": truth, "file_stat": stamp}


def write_shard(
    planned: list[dict[str, Any]], path: str, fc_dict: dict[str, Any]
) -> dict[str, Any]:
    """Decode, mel and write the songs of one plan (`plan_entry`s); returns its sidecar
    (the plan, songs written, rejects)."""
    fc = FeatureConfig(**fc_dict)
    path = Path(path)
    # The writer's pid in the name tells a later run whether the writer still runs.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    t0 = time.perf_counter()
    try:
        songs, rejects, refused = _write_tar(planned, tmp, fc)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)  # a failed or cancelled write leaves nothing behind
    sidecar = {
        "file": path.name,
        "planned": planned,
        "feature_digest": fc.digest(),
        "songs": songs,
        "rejects": rejects,
        "truth_refused": refused,
        "bytes": path.stat().st_size,
        "seconds": time.perf_counter() - t0,
    }
    _write_json_atomic(path.with_name(path.name + ".json"), sidecar)
    return sidecar


def _write_tar(
    planned: list[dict[str, Any]], tmp: Path, fc: FeatureConfig
) -> tuple[list[dict[str, Any]], list[dict[str, str]], list[dict[str, str]]]:
    """Write the usable songs of a plan into the tar `tmp`; returns (songs written, rejects,
    songs whose per-second truth was refused)."""
    songs, rejects, refused = [], [], []
    with wds.TarWriter(str(tmp)) as tar:
        for entry in planned:
            rec = entry["record"]
            try:
                y = decode(rec["audio_path"], fc)
                mel = log_mel(y, fc)
            except AudioError as exc:
                rejects.append(
                    {"song_id": rec["song_id"], "path": rec["audio_path"], "reason": str(exc)}
                )
                continue
            key = shard_key(rec["song_id"])
            duration = y.size / fc.sample_rate
            meta = {
                **rec,
                "key": key,
                "duration_s": duration,
                "frames": int(mel.shape[1]),
                "truth": entry["truth"],
            }
            overrun = truth_past_audio(entry["truth"], duration)
            if overrun:
                refused.append(
                    {"song_id": rec["song_id"], "path": rec["audio_path"], "reason": overrun}
                )
                meta = without_truth(meta)
            buf = io.BytesIO()
            np.save(buf, mel.astype(np.float16), allow_pickle=False)
            tar.write(
                {"__key__": key, "mel.npy": buf.getvalue(), "json": json.dumps(meta).encode()}
            )
            songs.append(meta)
    return songs, rejects, refused


# A 2 Hz rating can carry a time up to one sample period past the clip's last decoded sample
# (EiM rates its 45 s clips up to sample_45000ms; MP3 decoders differ by a few ms).
TRUTH_OVERRUN_S = 0.5


def truth_past_audio(truth: list[int | None] | None, duration_s: float) -> str | None:
    """Why a song's per-second truth does not fit its audio, or None: a second known after
    the audio ends means the ratings were made on other audio (a full song against this
    excerpt, or another song under this id), so none of its seconds can be trusted."""
    last = max((s for s, q in enumerate(truth or []) if q is not None), default=None)
    if last is None or last < duration_s + TRUTH_OVERRUN_S:
        return None
    return (
        f"per-second truth runs to second {last}, past the audio's end at {duration_s:.1f} s: "
        "refused (the song keeps its clip label, its seconds are unknown)"
    )


def without_truth(meta: dict[str, Any]) -> dict[str, Any]:
    """A song's manifest entry with its dynamic ratings and per-second truth taken out."""
    out = {
        k: v for k, v in meta.items() if k not in ("valence_curve", "arousal_curve", "curve_scale")
    }
    return {**out, "truth": None}


def _write_json_atomic(path: Path, data: Any) -> None:
    """Write through a temporary name of this writer's own (pid + uuid: threads of one
    process differ too), so concurrent writers never rename each other's file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _finished(path: Path, planned: list[dict[str, Any]], digest: str) -> dict[str, Any] | None:
    """The sidecar of a complete shard for exactly this plan, or None."""
    side = path.with_name(path.name + ".json")
    if not (path.is_file() and side.is_file()):
        return None
    try:
        sidecar = json.loads(side.read_text())
    except json.JSONDecodeError:
        return None
    ok = (
        sidecar.get("planned") == planned
        and sidecar.get("feature_digest") == digest
        and sidecar.get("bytes") == path.stat().st_size
    )
    return sidecar if ok else None


def shard_dataset(
    records: list[SongRecord],
    out: Path,
    *,
    fc: FeatureConfig = DEFAULT_FEATURES,
    truth: dict[str, list[int]] | None = None,
    songs_per_shard: int = 32,
    dataset: str = "",
    load_report: dict[str, list[str]] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Shard `records` into `out` with one Ray task per shard; returns the manifest.

    Starts Ray in-process if it is not running. Raises outdir.DirectoryBusy when another run holds
    `out`, ValueError when two song ids share a tar key or `songs_per_shard` is below 1,
    RuntimeError when no song is usable.
    """
    out = Path(out)
    if songs_per_shard < 1:  # before `out` and its lock file are made
        raise ValueError(f"songs_per_shard must be at least 1, got {songs_per_shard}")
    check_unique_keys([r.song_id for r in records])
    out.mkdir(parents=True, exist_ok=True)
    lock = lock_output(out)
    try:
        return _shard_locked(
            records, out, fc, truth or {}, songs_per_shard, dataset, load_report, progress
        )
    finally:
        lock.release()


def lock_output(out: Path) -> FileLock:
    """Hold `out` for this run (outdir.py)."""
    return hold(out, "sssl shard", LOCK_NAME)


def _shard_locked(records, out, fc, truth, songs_per_shard, dataset, load_report, progress):
    removed = remove_stale_temp_files(out)
    if removed:
        log.info("removed %d temporary file(s) left in %s by an interrupted run", removed, out)
    ordered = sorted(records, key=lambda r: r.song_id)
    plans = [
        [plan_entry(r, truth.get(r.song_id)) for r in ordered[i : i + songs_per_shard]]
        for i in range(0, len(ordered), songs_per_shard)
    ]
    digest = fc.digest()
    sidecars: dict[int, dict[str, Any]] = {}
    todo: dict[int, Path] = {}
    for i, plan in enumerate(plans):
        path = out / f"shard-{i:06d}.tar"
        done = _finished(path, plan, digest)
        if done is None:
            todo[i] = path
        else:
            sidecars[i] = done
    if sidecars:
        log.info("shards: %d of %d already complete, skipped", len(sidecars), len(plans))
    bar = tqdm(total=len(ordered), desc="shard songs", unit="song", disable=not progress)
    bar.update(sum(len(plans[i]) for i in sidecars))
    try:
        for i, sidecar in _write_shards({i: (plans[i], todo[i]) for i in todo}, fc):
            sidecars[i] = sidecar
            bar.update(len(plans[i]))
        bar.close()
        for old in out.glob("shard-*.tar"):  # a larger earlier plan: its extra shards are stale
            if int(old.stem.split("-")[1]) >= len(plans):
                old.unlink()
                old.with_name(old.name + ".json").unlink(missing_ok=True)
        manifest = _manifest(
            out, [sidecars[i] for i in range(len(plans))], fc, dataset, load_report
        )
    except OSError as exc:  # here or in a shard task: one line, not a chain of tracebacks
        left = [plans[i] for i in range(len(plans)) if i not in sidecars]
        raise write_failure(exc, out, left, fc) from None
    for rej in manifest["rejects"]:
        log.warning("rejected %s: %s", rej["path"], rej["reason"])
    for rej in manifest["truth_refused"]:
        log.warning("%s: %s", rej["song_id"], rej["reason"])
    if not manifest["songs"]:
        raise RuntimeError(
            f"no usable song: all {len(ordered)} file(s) were rejected "
            f"(reasons in {out / MANIFEST_NAME})"
        )
    return manifest


# How long a failed run waits for its cancelled shard tasks to stop and clean up (a task stops
# at its next Python bytecode, a few ms; the rest is a loaded machine's scheduling).
CANCEL_WAIT_S = 60.0


def _write_shards(
    jobs: dict[int, tuple[list[dict[str, Any]], Path]], fc: FeatureConfig
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(shard index, sidecar) as each shard task finishes, one Ray task per shard. An OSError
    in a task (a full disk) is raised here as itself; the other tasks are then cancelled, and
    each removes its temporary file."""
    if not jobs:
        return
    init_ray()  # the CLI has started Ray already; a library caller may not have
    remote = ray.remote(num_cpus=1)(write_shard)
    pending = {remote.remote(plan, str(path), asdict(fc)): i for i, (plan, path) in jobs.items()}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(ready[0])
            try:
                sidecar = ray.get(ready[0])
            except ray.exceptions.RayTaskError as exc:
                if isinstance(exc.cause, OSError):
                    raise exc.cause from None
                raise
            yield i, sidecar
    finally:
        for ref in pending:
            ray.cancel(ref)
        # A cancelled task removes its temporary file as it stops (write_shard's finally):
        # wait for that, so nothing of it is left when the error reaches the user.
        if pending:
            ray.wait(list(pending), num_returns=len(pending), timeout=CANCEL_WAIT_S)


# What a write fails with when the disk (or the user's quota) is full.
_DISK_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}
# Per song beyond its float16 mel: two tar members' headers and padding and the JSON record;
# per shard: the tar's end-of-archive blocking.
_SONG_OVERHEAD_BYTES, _TAR_OVERHEAD_BYTES = 3072, 10240


class ShardWriteError(RuntimeError):
    """Writing the shard set failed (a full disk, a folder not writable); finished shards are
    kept, and the same command continues from them."""


def write_failure(
    exc: OSError, out: Path, left: list[list[dict[str, Any]]], fc: FeatureConfig
) -> ShardWriteError:
    """One line for a failed write: for a full disk, about how much the unfinished shards
    need and how much is free."""
    again = "finished shards are kept and the same command continues from them"
    if exc.errno in _DISK_FULL:
        need = max(1, math.ceil(estimated_bytes(left, fc) / 1e6))
        free = shutil.disk_usage(out).free / 1e6
        return ShardWriteError(
            f"{_DISK_FULL[exc.errno]} at {out} (needs about {need} MB more, {free:.0f} MB "
            f"free): free some space or choose another --out; {again}"
        )
    where = f" ({exc.filename})" if exc.filename else ""
    return ShardWriteError(f"sharding into {out} failed{where}: {exc.strerror or exc}; {again}")


def estimated_bytes(plans: list[list[dict[str, Any]]], fc: FeatureConfig) -> int:
    """About what the tars of `plans` take: each song's float16 mel at the duration its header
    gives (at most max_duration_s), plus the tar's own bytes."""
    total = 0
    for plan in plans:
        total += _TAR_OVERHEAD_BYTES
        for entry in plan:
            path = entry["record"]["audio_path"]
            # Only a regular file is probed: opening a FIFO would block.
            seconds = probe_duration(path) if not_a_regular_file(path) is None else None
            frames = min(seconds or 0.0, fc.max_duration_s) * fc.frames_per_second + 1
            total += fc.n_mels * frames * np.dtype(np.float16).itemsize + _SONG_OVERHEAD_BYTES
    return int(total)


# The temporary names of this module's writers: `.shard-000004.tar.<pid>.tmp` (a tar) and
# `.<file>.<pid>.<uuid>.tmp` (a shard's sidecar, the manifest).
_TEMP_NAME = re.compile(
    rf"\.(?:shard-\d+\.tar(?:\.json)?|{re.escape(MANIFEST_NAME)})\.(\d+)(?:\.[0-9a-f]{{32}})?\.tmp"
)


def remove_stale_temp_files(out: Path) -> int:
    """Delete the temporary files of writers that no longer run: a shard task stopped by
    SIGKILL, or by Ray when its driver got SIGTERM, leaves its temporary tar behind. Called
    under the output's lock, so no other run writes here; a file whose pid still runs on this
    machine is kept all the same. Returns how many were removed."""
    removed = 0
    for path in out.glob(".*.tmp"):
        match = _TEMP_NAME.fullmatch(path.name)
        if match and not process_alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _manifest(out, sidecars, fc, dataset, load_report) -> dict[str, Any]:
    songs = [dict(s, shard=sc["file"]) for sc in sidecars for s in sc["songs"]]
    manifest = {
        "format": SHARD_FORMAT,
        "dataset": dataset,
        "feature_config": asdict(fc),
        "feature_digest": fc.digest(),
        "library_versions": library_versions(),
        "shards": [
            {"file": sc["file"], "songs": [s["song_id"] for s in sc["songs"]], "bytes": sc["bytes"]}
            for sc in sidecars
        ],
        "songs": songs,
        "rejects": [r for sc in sidecars for r in sc["rejects"]],
        # Sidecars written before this check have no such list.
        "truth_refused": [r for sc in sidecars for r in sc.get("truth_refused", [])],
        "load_report": load_report or {},
    }
    _write_json_atomic(out / MANIFEST_NAME, manifest)
    return manifest


def shard_synthetic(
    corpus: Path,
    out: Path,
    synth: SynthConfig,
    *,
    songs_per_shard: int = 32,
    progress: bool = True,
) -> ShardSet:
    """The ground-truth corpus end to end: generate it into `corpus` (4Q layout + per-second
    truth), load it, and shard it into `out`. One helper for `sssl demo`, the benchmarks and
    the tests; generation and sharding both skip work already done."""
    from shards.datasets import load_dataset
    from shards.synth import generate_corpus

    generate_corpus(Path(corpus), synth, progress=progress)
    records, report, truth = load_dataset("synthetic", Path(corpus))
    shard_dataset(
        records,
        Path(out),
        truth=truth,
        songs_per_shard=songs_per_shard,
        dataset="synthetic",
        load_report=report.to_dict(),
        progress=progress,
    )
    return ShardSet(out)


def shard_source(dataset: str, root: Path) -> dict[str, str]:
    """The data set and root a shard directory is made from, as `check_source` compares them."""
    return {"dataset": dataset, "root": str(Path(root).resolve())}


def check_source(out: Path, source: dict[str, str], replace: bool) -> None:
    """Refuse to shard into a directory that holds the shards of another data set or root:
    re-sharding the same source updates it (changed labels, replaced files), but another
    source would silently replace the shard set every run trained on. `replace` allows it."""
    old_path = Path(out) / SOURCE_NAME
    if replace or not old_path.is_file():
        return
    try:
        old = json.loads(old_path.read_text())
    except ValueError as exc:
        old = type(exc).__name__
    if not isinstance(old, dict) or not {"dataset", "root"} <= old.keys():
        raise ValueError(
            f"{old_path} is damaged ({old if isinstance(old, str) else 'no dataset and root'}), "
            f"so what {out} holds is unknown: pass --replace to shard into it anyway"
        )
    if old != source:
        raise ValueError(
            f"{out} holds the shards of {old['dataset']} at {old['root']}, not of "
            f"{source['dataset']} at {source['root']}; shard into another --out, or pass "
            "--replace to replace them"
        )


def write_source(out: Path, source: dict[str, str]) -> None:
    _write_json_atomic(Path(out) / SOURCE_NAME, source)
