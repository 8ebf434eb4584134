"""Reading shards: song mels, segments cut at read time, rank partitions and folds.

Segments of L seconds with a hop of 1 s (overlap L - 1, paper §4.1, no padding) are cut from
the song-level mel, so one shard set serves every L. A song of d seconds has
n = floor((d - L) / hop) + 1 segments (the pattern of paper Table 1).

Every segment has a stable global id (song id, start second), and tables are sorted by it, so
position i means the same segment on every rank and in every run.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import logging
import math
import os
import tarfile
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import webdataset as wds
from filelock import FileLock

from sssl_dist.config import FeatureConfig
from sssl_dist.data.targets import ClassLabels, Targets, targets_of

log = logging.getLogger(__name__)
MANIFEST_NAME = "manifest.json"
MEL_CACHE = "mel_cache"  # folder beside the shards holding the memory-mapped mels


class LabelMismatch(ValueError):
    """The manifest and a shard's own record of a song disagree (the manifest was edited)."""


# What training reads from a song's record: the manifest must agree with the tars on each.
RECORD_KEYS = ("quadrant", "valence", "arousal", "truth", "duration_s", "frames")


def library_versions() -> dict[str, str]:
    names = ("torch", "ray", "librosa", "soundfile", "scikit-learn", "webdataset", "numpy")
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


class ShardSet:
    """A shard directory: its manifest, and mel loading through WebDataset."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        path = self.root / MANIFEST_NAME
        if not path.is_file():
            raise FileNotFoundError(f"no {MANIFEST_NAME} in {self.root}: run `sssl shard` first")
        self.manifest: dict[str, Any] = _read_manifest(path)
        self.feature_config = FeatureConfig(**self.manifest["feature_config"])
        self.songs: list[dict[str, Any]] = sorted(
            self.manifest["songs"], key=lambda s: s["song_id"]
        )
        self.check_shard_files()

    def check_shard_files(self) -> None:
        """Refuse a shard set whose tars are not as `sssl shard` left them: a shard deleted,
        or cut short (a copy that stopped, a full disk). The size recorded in the manifest
        tells; re-running `sssl shard` rewrites exactly such shards."""
        rerun = f"run `sssl shard` again with the same arguments and --out {self.root}"
        for shard in self.manifest["shards"]:
            path = self.root / shard["file"]
            if not path.is_file():
                raise FileNotFoundError(
                    f"shard {shard['file']} listed in {self.root / MANIFEST_NAME} is missing: "
                    f"{rerun} to write it again"
                )
            size, recorded = path.stat().st_size, shard.get("bytes")
            if recorded is not None and size != recorded:
                raise ValueError(
                    f"shard {path} is damaged ({size:,} bytes, the manifest records "
                    f"{recorded:,}): {rerun}, which rewrites it"
                )

    @property
    def by_id(self) -> dict[str, dict[str, Any]]:
        """The manifest's song records by song id."""
        return {s["song_id"]: s for s in self.songs}

    def digest(self) -> str:
        """Short hash of what training reads from this shard set: song ids, durations, frames,
        labels, truth, the feature settings and the shard files' sizes. Re-sharding other songs
        (or the same songs with other features) changes it, so a run is never resumed on
        different data."""
        keys = ("song_id", "duration_s", "frames", "quadrant", "valence", "arousal", "truth")
        # The per-second ratings count where a manifest has them; absent, the entry (and the
        # digest of every shard set written before they existed) is what it was.
        added = ("valence_curve", "arousal_curve", "curve_scale")
        songs = [
            {k: s.get(k) for k in keys} | {k: s[k] for k in added if k in s} for s in self.songs
        ]
        tars = sorted((sh["file"], sh.get("bytes")) for sh in self.manifest["shards"])
        blob = json.dumps([songs, self.manifest["feature_config"], tars], sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @property
    def has_truth(self) -> bool:
        """Whether any second of any song has known per-second truth: then the reports show
        the metrics against it, computed over the segments whose truth is known."""
        return any(q is not None for s in self.songs for q in s.get("truth") or ())

    def load_mels(self, song_ids: set[str] | None = None) -> dict[str, np.ndarray]:
        """song id -> float16 mel [n_mels, frames], read-only.

        The arrays are views into this node's one memory-mapped copy of the shard set
        (`mel_cache`): every rank and every concurrent fold on a node shares the same pages
        through the OS page cache, so host memory does not grow with ranks or folds.
        """
        store, index = self.mel_cache()
        wanted = song_ids if song_ids is not None else set(index)
        missing = wanted - set(index)
        if missing:
            raise RuntimeError(
                f"{len(missing)} song(s) missing from shards in {self.root}: {sorted(missing)[:3]}"
            )
        return {sid: store[:, index[sid][0] : index[sid][0] + index[sid][1]] for sid in wanted}

    def read_tars(self, song_ids: set[str]) -> Iterator[tuple[str, np.ndarray]]:
        """(song id, mel) for the wanted songs, opening only the shards that hold them."""
        for shard in self.manifest["shards"]:
            if song_ids.intersection(shard["songs"]):
                yield from self._read_tar(self.root / shard["file"], song_ids)

    def _read_tar(self, path: Path, song_ids: set[str]) -> Iterator[tuple[str, np.ndarray]]:
        """(song id, mel) for the wanted songs of one shard; a shard that cannot be read is
        named, with what to do."""
        # We choose the shards ourselves, so WebDataset's own node/worker splitting is switched
        # off (identity splitters).
        dataset = wds.WebDataset(
            [str(path)],
            shardshuffle=False,
            empty_check=False,
            nodesplitter=_all_urls,
            workersplitter=_all_urls,
        )
        by_id = self.by_id
        try:
            for sample in dataset:
                meta = json.loads(sample["json"])
                if meta["song_id"] in song_ids:
                    self._check_record(by_id, meta, sample.get("__url__", "a shard"))
                    mel = np.load(io.BytesIO(sample["mel.npy"]), allow_pickle=False)
                    yield meta["song_id"], mel
        except LabelMismatch:
            raise
        except Exception as exc:  # noqa: BLE001 - tarfile, WebDataset, JSON and .npy errors alike
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise RuntimeError(
                f"shard {path} cannot be read ({type(exc).__name__}: {first}): delete it and "
                f"run `sssl shard` again with the same arguments and --out {self.root}, which "
                "writes it again"
            ) from exc

    def check_labels(self) -> None:
        """Refuse a manifest whose labels (or truth, durations, frames) differ from the
        shards' own per-song records, naming the first song that differs: training reads the
        manifest, and a hand-edited label would be trained and reported as if it were true.

        Free once the mel cache exists: its folder is keyed by the digest, which covers every
        field compared, and building it made the same check (`read_tars`). Before that, only
        the tars' small JSON records are read, not their mels."""
        if self._open_mel_cache(*self._cache_paths()) is not None:
            return
        by_id = self.by_id
        for shard in self.manifest["shards"]:
            path = self.root / shard["file"]
            try:
                with tarfile.open(path) as tar:
                    for member in tar:
                        if member.name.endswith(".json"):
                            meta = json.loads(tar.extractfile(member).read())
                            self._check_record(by_id, meta, str(path))
            except (OSError, tarfile.TarError, json.JSONDecodeError) as exc:
                raise ValueError(
                    f"{path}: cannot read this shard ({type(exc).__name__}: {exc}); re-run "
                    "`sssl shard` to rebuild it"
                ) from None

    def _check_record(self, by_id: dict[str, dict[str, Any]], meta: dict[str, Any], shard: str):
        """One song's record in a tar against the manifest's (check_labels)."""
        song = by_id.get(meta.get("song_id"))
        if song is None:
            return  # in a tar but not in the manifest: never read
        for key in RECORD_KEYS:
            if song.get(key) != meta.get(key):
                raise LabelMismatch(
                    f"{self.root / MANIFEST_NAME} disagrees with {Path(shard).name} on song "
                    f"{meta['song_id']!r}: {key} is {_short(song.get(key))} in the manifest, "
                    f"{_short(meta.get(key))} in the shard. The manifest was edited after "
                    "sharding: change labels in the data set's annotations and re-run `sssl "
                    "shard`, which rebuilds the shards that change"
                )

    def mel_cache(self) -> tuple[np.ndarray, dict[str, list[int]]]:
        """(store [n_mels, all frames] float16, memory-mapped; {song id: [offset, frames]}).

        Built once per shard set and node, on first use: the songs' mels end to end in one .npy
        file next to the shards (or in the node's temp directory when the shard directory is
        read-only), written under a file lock to a temporary name and renamed, so concurrent
        ranks and trials build it once and never read half a file. Keyed by the shard-set
        digest: re-sharding builds a new one. A cache that fails validation on open (a file
        cut short by a kill, an index that does not match the manifest) is rebuilt.
        """
        store, index_path = self._cache_paths()
        folder = store.parent
        cache = self._open_mel_cache(store, index_path)
        if cache is None:
            with FileLock(str(folder / ".lock")):
                cache = self._open_mel_cache(store, index_path)  # another process built it
                if cache is None:
                    if index_path.exists():
                        log.warning("mel cache %s is damaged: rebuilding it", folder)
                    index_path.unlink(missing_ok=True)
                    self._build_mel_cache(store, index_path)
                    cache = self._open_mel_cache(store, index_path)
        if cache is None:
            raise RuntimeError(f"the mel cache in {folder} is invalid right after building it")
        return cache

    def _cache_paths(self) -> tuple[Path, Path]:
        """(the .npy store, its index) of this shard set's mel cache."""
        folder = self._cache_folder()
        return folder / "mels.npy", folder / "index.json"

    def _cache_index(self) -> dict[str, list[int]]:
        """{song id: [offset, frames]}: the songs end to end, in song-id order."""
        index, offset = {}, 0
        for song in self.songs:
            index[song["song_id"]] = [offset, int(song["frames"])]
            offset += int(song["frames"])
        return index

    def _open_mel_cache(
        self, store: Path, index_path: Path
    ) -> tuple[np.ndarray, dict[str, list[int]]] | None:
        """The memory-mapped cache if it is whole and matches the manifest, else None. Checks
        the index against the manifest, and the file's size against its header's shape and
        dtype (np.load would otherwise fail on a short file forever)."""
        expected = self._cache_index()
        shape = (self.feature_config.n_mels, sum(n for _, n in expected.values()))
        try:
            if json.loads(index_path.read_text()) != expected:
                return None
            found_shape, fortran, dtype, data_start = _npy_layout(store)
        except (OSError, ValueError):  # missing, unreadable, bad JSON or bad .npy header
            return None
        size = data_start + math.prod(shape) * np.dtype(np.float16).itemsize
        if found_shape != shape or fortran or dtype != np.float16 or store.stat().st_size != size:
            return None
        return np.load(store, mmap_mode="r"), expected

    def _cache_folder(self) -> Path:
        for base in (self.root / MEL_CACHE, Path(tempfile.gettempdir()) / "sssl-mel-cache"):
            folder = base / self.digest()
            try:
                folder.mkdir(parents=True, exist_ok=True)
                probe = folder / f".probe-{os.getpid()}"
                probe.touch()
                probe.unlink()
                return folder
            except OSError:
                continue  # read-only shard directory: use the node's temp directory
        raise OSError(f"no writable place for the mel cache of {self.root}")

    def _build_mel_cache(self, store: Path, index_path: Path) -> None:
        n_mels = self.feature_config.n_mels
        index = self._cache_index()
        frames = sum(n for _, n in index.values())
        tmp = store.with_name(f".{store.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        try:
            self._fill_mel_cache(tmp, index, (n_mels, frames))
            os.replace(tmp, store)
        finally:
            tmp.unlink(missing_ok=True)  # a failed build leaves nothing behind
        tmp_index = index_path.with_name(f".{index_path.name}.{os.getpid()}.tmp")
        tmp_index.write_text(json.dumps(index))
        os.replace(tmp_index, index_path)  # written last: its presence means the cache is whole

    def _fill_mel_cache(self, path: Path, index: dict[str, list[int]], shape: tuple) -> None:
        """Write every song's mel from the shards into a new .npy at `path`."""
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape)
        seen = set()
        for sid, mel in self.read_tars(set(index)):
            lo, n = index[sid]
            if mel.shape != (shape[0], n):
                raise RuntimeError(f"{sid}: mel shape {mel.shape} != manifest ({shape[0]}, {n})")
            out[:, lo : lo + n] = mel
            seen.add(sid)
        out.flush()
        del out
        missing = set(index) - seen
        if missing:
            raise RuntimeError(
                f"{len(missing)} song(s) missing from shards in {self.root}: {sorted(missing)[:3]}"
            )


def _read_manifest(path: Path) -> dict[str, Any]:
    """A shard set's manifest, or ValueError naming the file when it is cut short or not a
    manifest (`sssl shard` writes it whole, through a temporary name)."""
    again = f"run `sssl shard` again with the same arguments and --out {path.parent} to rewrite it"
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is damaged (not valid JSON: {exc}): {again}") from None
    needed = ("feature_config", "shards", "songs")
    missing = [k for k in needed if k not in manifest] if isinstance(manifest, dict) else needed
    if missing:
        raise ValueError(f"{path} is not a shard manifest (no {', '.join(missing)}): {again}")
    return manifest


def _short(value: Any) -> str:
    """A value for a one-line message (per-second truth is a long list)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _npy_layout(path: Path) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran order, dtype, offset of the data) from a .npy file's header."""
    with path.open("rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"{path}: .npy version {version} not written by us")
        return shape, fortran, dtype, fh.tell()


def _all_urls(urls):
    yield from urls


def segment_count(duration_s: float, length_s: int, hop_s: int = 1) -> int:
    """n = floor((d - L) / hop) + 1 for d >= L, else 0 (no padding, paper §3.3)."""
    if duration_s < length_s:
        return 0
    return int(math.floor((duration_s - length_s) / hop_s + 1e-9)) + 1


@dataclass
class SegmentTable:
    """All segments of some songs for one L, in global-id order (song id, start)."""

    song_ids: list[str]  # the songs, sorted
    song_of: np.ndarray  # [N] index into song_ids
    start: np.ndarray  # [N] start second
    label: np.ndarray  # [N] (or [N, D]) target inherited from the song (clip) for the task
    true_label: np.ndarray  # [N] target from per-second truth, `targets.unknown` when unknown
    length_s: int
    # What the targets are (data/targets.py): the classification reading when not given.
    targets: Targets | None = None

    @property
    def wrong(self) -> np.ndarray:
        """[N] 1 where the inherited label is truly wrong, 0 where right, -1 if unknown (the
        task's noise definition)."""
        return (self.targets or ClassLabels("quadrant")).wrong(self.label, self.true_label)

    @property
    def known(self) -> np.ndarray:
        """[N] True where the segment's truth is known."""
        return self.wrong >= 0

    def __len__(self) -> int:
        return int(self.start.size)

    def global_ids(self) -> list[str]:
        return [f"{self.song_ids[s]}@{t}" for s, t in zip(self.song_of, self.start, strict=True)]

    @classmethod
    def build(
        cls, songs: list[dict[str, Any]], task: str | Targets, length_s: int, hop_s: int = 1
    ) -> SegmentTable:
        """The segments of `songs` with the targets of `task` (a Targets, or the record key of
        a class label)."""
        targets = targets_of(task)
        songs = sorted(songs, key=lambda s: s["song_id"])
        song_of, start, label, true_label = [], [], [], []
        for i, song in enumerate(songs):
            n = segment_count(song["duration_s"], length_s, hop_s)
            target = targets.song_target(song)
            for k in range(n):
                song_of.append(i)
                start.append(k * hop_s)
                label.append(target)
                true_label.append(targets.segment_truth(song, k * hop_s, length_s))
        as_int = lambda v: np.asarray(v, dtype=np.int64)  # noqa: E731
        as_target = lambda v: np.asarray(v, dtype=targets.dtype)  # noqa: E731
        return cls(
            [s["song_id"] for s in songs],
            as_int(song_of),
            as_int(start),
            as_target(label),
            as_target(true_label),
            length_s,
            targets,
        )


def training_table(songs: list[dict[str, Any]], cfg: Any, targets: Targets) -> SegmentTable:
    """The segments a run trains on, with the labels `cfg.train_labels` names: inherited from
    the clip (the paper), or each segment's own by the per-second truth (the oracle-labels
    ceiling; every segment must have truth). The one place a training table is built, so the
    ranks and the driver's split service see the same labels. `targets`: the task's."""
    table = SegmentTable.build(songs, targets, cfg.segment_seconds, cfg.hop_seconds)
    if cfg.train_labels == "truth":
        unknown = int((~table.known).sum())
        if unknown:
            raise ValueError(
                f"train_labels 'truth' needs per-second truth for every training segment; "
                f"{unknown} of {len(table)} have none (only generated corpora are rated from "
                "their first second)"
            )
        table = replace(table, label=table.true_label.copy())
    return table


def cut_segment(mel: np.ndarray, start_s: int, length_s: int, fps: float) -> np.ndarray:
    """mel [n_mels, frames] -> [n_mels, round(L * fps)], shifted back if rounding overruns."""
    width = int(round(length_s * fps))
    lo = min(int(round(start_s * fps)), mel.shape[1] - width)
    return mel[:, lo : lo + width]


class SegmentBatcher:
    """Builds float32 batches [B, 1, n_mels, frames] of table positions from in-memory mels."""

    def __init__(self, table: SegmentTable, mels: dict[str, np.ndarray], fc: FeatureConfig):
        self.table, self.mels, self.fps = table, mels, fc.frames_per_second

    def inputs(self, positions: np.ndarray) -> torch.Tensor:
        t = self.table
        segs = [
            cut_segment(self.mels[t.song_ids[t.song_of[p]]], int(t.start[p]), t.length_s, self.fps)
            for p in positions
        ]
        return torch.from_numpy(np.stack(segs).astype(np.float32)).unsqueeze(1)

    def labels(self, positions: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.table.label[positions])


class SegmentHead(Protocol):
    """What turns a network's outputs into a task's segment predictions (method/tasks)."""

    num_outputs: int

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        """outputs [B, num_outputs] -> predictions [B, num_outputs]."""
        ...


@torch.no_grad()
def segment_probabilities(
    net: torch.nn.Module,
    mel: np.ndarray,
    duration_s: float,
    cfg,
    fc: FeatureConfig,
    head: SegmentHead,
    device: torch.device | str = "cpu",
    batch_size: int = 128,
) -> np.ndarray:
    """The task's prediction [S, K] for every segment of one song, in start order (eval
    mode): P_s(E_k) for classification.

    The same segmentation as training (duration from samples, as in the manifest), used for
    the fold's song-level features and by `sssl predict`.
    """
    net.eval()
    # Only the segmentation is needed here: the song's one label is a placeholder.
    song = {"song_id": "song", "duration_s": duration_s, "quadrant": 0}
    table = SegmentTable.build([song], "quadrant", cfg.segment_seconds, cfg.hop_seconds)
    batcher = SegmentBatcher(table, {"song": mel}, fc)
    probs = [
        head.predict(net(batcher.inputs(idx).to(device)).float()).cpu()
        for idx in loss_pass_batches(0, len(table), batch_size)
    ]
    return torch.cat(probs).numpy() if probs else np.zeros((0, head.num_outputs))


# --------------------------------------------------------------------------------------------
# Partitioning across DDP ranks
# --------------------------------------------------------------------------------------------
def rank_block(n: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous block [lo, hi) of n positions for a rank; blocks cover 0..n-1 exactly once
    and differ in size by at most one. Contiguous (not strided) so a rank needs the mels of
    only about 1/world of the songs."""
    return rank * n // world, (rank + 1) * n // world


def steps_per_epoch(n: int, global_batch: int) -> int:
    """Optimiser steps per epoch: every training segment once (the last batch wraps around).
    The count is the same on every rank: unequal counts would leave one rank waiting in
    all-reduce until the gloo timeout."""
    return max(1, math.ceil(n / global_batch))


def epoch_batches(n: int, steps: int, global_batch: int, seed: int, epoch: int) -> np.ndarray:
    """[steps, global_batch] positions of 0..n-1: one permutation per epoch, seeded by (seed,
    epoch) only, wrapped around (and re-permuted) to fill the last batch.

    The permutation does not depend on the number of workers: each rank takes its share of
    every global batch (`rank_share`), so a 2-worker epoch trains on exactly the batches of a
    1-worker epoch.
    """
    if n <= 0:
        raise ValueError("no training segment: use more songs or a shorter segment length")
    rng = np.random.default_rng([seed, epoch])
    need = steps * global_batch
    chunks, total = [], 0
    while total < need:
        chunks.append(rng.permutation(n))
        total += n
    return np.concatenate(chunks)[:need].reshape(steps, global_batch)


def rank_share(batch: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This rank's contiguous share of a global batch (the batch size is a multiple of world)."""
    per_rank = batch.size // world
    return batch[rank * per_rank : (rank + 1) * per_rank]


def loss_pass_batches(lo: int, hi: int, batch_size: int) -> list[np.ndarray]:
    """Every position of [lo, hi) exactly once, in order (the per-epoch loss pass)."""
    return [np.arange(a, min(a + batch_size, hi)) for a in range(lo, hi, batch_size)]
