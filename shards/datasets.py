"""Loaders for the public MER datasets as distributed, and for a plain manifest CSV.

Each returns the songs as `SongRecord`s and a `LoadReport` listing what could not be paired:
songs listed without audio, audio without a label row, duplicated ids. Nothing is dropped
silently: the report goes to the log and into the shard manifest. Layouts: DESIGN.md.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sssl_dist.records import SongRecord, labels_from_quadrant, labels_from_va

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".mp3", ".wav", ".flac", ".ogg")
DATASETS = ("4q", "pmemo", "eim", "deam", "manifest", "synthetic")
GROUND_TRUTH_CSV = "ground_truth_per_second.csv"


@dataclass
class LoadReport:
    missing_audio: list[str] = field(default_factory=list)  # listed ids with no audio file
    unlabelled_audio: list[str] = field(default_factory=list)  # audio files with no label row
    duplicate_ids: list[str] = field(default_factory=list)  # ids seen more than once (first kept)
    bad_rows: list[str] = field(default_factory=list)  # rows whose labels cannot be parsed

    def log_summary(self, dataset: str) -> None:
        for name in ("missing_audio", "unlabelled_audio", "duplicate_ids", "bad_rows"):
            items = getattr(self, name)
            if items:
                shown = ", ".join(items[:5]) + (" ..." if len(items) > 5 else "")
                log.warning("%s: %d %s: %s", dataset, len(items), name.replace("_", " "), shown)

    def to_dict(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.__dict__.items()}


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows with column names and values stripped (DEAM's headers carry a leading space)."""
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh, skipinitialspace=True))
    return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in rows]


def _need_columns(rows: list[dict[str, str]], columns: tuple[str, ...], path: Path) -> None:
    present = set(rows[0]) if rows else set()
    missing = [c for c in columns if c not in present]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {sorted(present)}")


def _audio_by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"audio folder not found: {folder}")
    # Hidden files are not songs: macOS "._x.mp3" resource forks in unpacked archives, and the
    # ".x.tmp.ogg" our generator writes before its atomic rename.
    return {
        p.stem: p
        for p in sorted(folder.rglob("*"))
        if p.suffix.lower() in AUDIO_SUFFIXES and not p.name.startswith(".")
    }


def _pair(
    rows: list[dict[str, str]],
    id_column: str,
    audio: dict[str, Path],
    make: Callable[[str, dict[str, str], Path], SongRecord],
) -> tuple[list[SongRecord], LoadReport]:
    """Join label rows with audio files by id, reporting every mismatch."""
    report, records, seen = LoadReport(), [], set()
    for row in rows:
        song_id = row[id_column]
        if song_id in seen:
            report.duplicate_ids.append(song_id)
            continue
        seen.add(song_id)
        if song_id not in audio:
            report.missing_audio.append(song_id)
            continue
        try:
            records.append(make(song_id, row, audio[song_id]))
        except (ValueError, KeyError) as exc:
            report.bad_rows.append(f"{song_id} ({exc})")
    report.unlabelled_audio = sorted(set(audio) - seen)
    return records, report


def _binary(value: float, midpoint: float) -> int:
    """High/positive when strictly above the scale's midpoint (PMEmo 0.5, EiM/DEAM 5)."""
    return int(value > midpoint)


def _va_record(song_id, path, source, v, a, midpoint) -> SongRecord:
    if math.isnan(v) or math.isnan(a):
        raise ValueError("valence/arousal is not a number")
    labels = labels_from_va(_binary(v, midpoint), _binary(a, midpoint))
    return SongRecord(song_id, str(path), source, valence_value=v, arousal_value=a, **labels)


def load_4q(root: Path, source: str = "4q") -> tuple[list[SongRecord], LoadReport]:
    """4Q: MER_audio_taffc_dataset/{Q1..Q4}/<Song>.mp3 + panda_dataset_taffc_annotations.csv."""
    root = Path(root)
    csv_path = root / "panda_dataset_taffc_annotations.csv"
    if not csv_path.is_file():
        csv_path = root / "MER_audio_taffc_dataset" / "panda_dataset_taffc_annotations.csv"
    rows = read_csv(csv_path)
    _need_columns(rows, ("Song", "Quadrant"), csv_path)
    audio = _audio_by_stem(root / "MER_audio_taffc_dataset")

    def make(song_id, row, path):
        quadrant = row["Quadrant"].upper().lstrip("Q")
        if quadrant not in ("1", "2", "3", "4"):
            raise ValueError(f"quadrant {row['Quadrant']!r}")
        return SongRecord(song_id, str(path), source, **labels_from_quadrant(int(quadrant) - 1))

    return _pair(rows, "Song", audio, make)


def _load_static_va(root, audio_dir, id_col, valence_col, arousal_col, midpoint, source):
    """PMEmo and EiM share a shape: one static-annotation CSV, audio named by id."""
    root = Path(root)
    csv_path = root / "annotations" / "static_annotations.csv"
    rows = read_csv(csv_path)
    _need_columns(rows, (id_col, arousal_col, valence_col), csv_path)

    def make(song_id, row, path):
        v, a = float(row[valence_col]), float(row[arousal_col])
        return _va_record(song_id, path, source, v, a, midpoint)

    return _pair(rows, id_col, _audio_by_stem(root / audio_dir), make)


def load_pmemo(root: Path) -> tuple[list[SongRecord], LoadReport]:
    """PMEmo2019: chorus/<musicId>.mp3 + annotations/static_annotations.csv ([0, 1], cut 0.5)."""
    return _load_static_va(
        root, "chorus", "musicId", "Valence(mean)", "Arousal(mean)", 0.5, "pmemo"
    )


def load_eim(root: Path) -> tuple[list[SongRecord], LoadReport]:
    """Emotion in Music: clips_45seconds/<song_id>.mp3 + annotations/static_annotations.csv
    (mean_valence / mean_arousal on 1-9, cut at 5)."""
    return _load_static_va(
        root, "clips_45seconds", "song_id", "mean_valence", "mean_arousal", 5.0, "eim"
    )


DEAM_CSV_DIR = Path("annotations/annotations averaged per song/song_level")
DEAM_CSVS = (
    "static_annotations_averaged_songs_1_2000.csv",
    "static_annotations_averaged_songs_2000_2058.csv",
)


def load_deam(root: Path) -> tuple[list[SongRecord], LoadReport]:
    """DEAM: MEMD_audio/<song_id>.mp3 + the two song-level averaged CSVs (1-9, cut at 5;
    column names carry a leading space, stripped by read_csv)."""
    root = Path(root)
    rows: list[dict[str, str]] = []
    found = [
        root / DEAM_CSV_DIR / name for name in DEAM_CSVS if (root / DEAM_CSV_DIR / name).is_file()
    ]
    if not found:
        raise FileNotFoundError(f"no DEAM annotation CSV under {root / DEAM_CSV_DIR}")
    for path in found:
        part = read_csv(path)
        _need_columns(part, ("song_id", "valence_mean", "arousal_mean"), path)
        rows += part

    def make(song_id, row, path):
        v, a = float(row["valence_mean"]), float(row["arousal_mean"])
        return _va_record(song_id, path, "deam", v, a, 5.0)

    return _pair(rows, "song_id", _audio_by_stem(root / "MEMD_audio"), make)


def load_manifest_csv(path: Path, midpoint: float = 0.5) -> tuple[list[SongRecord], LoadReport]:
    """Anyone's data: a CSV with `path` and `quadrant` (Q1-Q4 or 1-4) and/or `valence` and
    `arousal` (0/1, or continuous cut at `midpoint`); optional `id` (default: file stem).
    Relative paths are taken from the CSV's folder."""
    path = Path(path)
    rows = read_csv(path)
    _need_columns(rows, ("path",), path)
    report, records, seen = LoadReport(), [], set()
    for row in rows:
        audio = Path(row["path"])
        audio = audio if audio.is_absolute() else path.parent / audio
        song_id = row.get("id") or audio.stem
        if song_id in seen:
            report.duplicate_ids.append(song_id)
            continue
        seen.add(song_id)
        if not audio.is_file():
            report.missing_audio.append(song_id)
            continue
        try:
            records.append(_manifest_record(song_id, audio, row, midpoint))
        except ValueError as exc:
            report.bad_rows.append(f"{song_id} ({exc})")
    return records, report


def _manifest_record(song_id: str, audio: Path, row: dict[str, str], midpoint: float):
    if row.get("quadrant"):
        q = row["quadrant"].upper().lstrip("Q")
        if q not in ("1", "2", "3", "4"):
            raise ValueError(f"quadrant {row['quadrant']!r}")
        return SongRecord(song_id, str(audio), "manifest", **labels_from_quadrant(int(q) - 1))
    if row.get("valence") and row.get("arousal"):
        v, a = float(row["valence"]), float(row["arousal"])
        return _va_record(song_id, audio, "manifest", v, a, midpoint)
    raise ValueError("needs quadrant, or valence and arousal")


def read_ground_truth(root: Path) -> dict[str, list[int]]:
    """Per-second quadrant truth (0..3) of the synthetic corpus: song -> [q(second 0), ...]."""
    path = Path(root) / GROUND_TRUTH_CSV
    if not path.is_file():
        return {}
    truth: dict[str, dict[int, int]] = {}
    for row in read_csv(path):
        truth.setdefault(row["Song"], {})[int(row["Second"])] = int(row["Quadrant"].lstrip("Q")) - 1
    return {song: [secs[i] for i in sorted(secs)] for song, secs in truth.items()}


def load_dataset(name: str, root: Path, midpoint: float = 0.5):
    """Dispatch by dataset name; returns (records, report, per-second truth or {})."""
    root = Path(root)
    if name == "4q":
        return (*load_4q(root), read_ground_truth(root))
    if name == "synthetic":
        return (*load_4q(root, source="synthetic"), read_ground_truth(root))
    if name == "pmemo":
        return (*load_pmemo(root), {})
    if name == "eim":
        return (*load_eim(root), {})
    if name == "deam":
        return (*load_deam(root), {})
    if name == "manifest":
        return (*load_manifest_csv(root, midpoint), {})
    raise ValueError(f"unknown dataset {name!r}; choose from {DATASETS}")
