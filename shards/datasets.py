"""Loaders for the public MER datasets as distributed, and for a plain manifest CSV.

Each returns the songs as `SongRecord`s and a `LoadReport` listing what could not be used, one
line each: songs listed without audio, audio without a label row, repeated ids, labels that do
not parse, and conflicts (rows that disagree, files that share an id), and for the dynamic
annotations the ratings refused, the seconds left unknown and the ratings of ids without a
song (shards/dynamic.py). Nothing is dropped silently: the report goes to the log and into the
shard manifest. A file that cannot be read as a whole (not UTF-8, a malformed row, values on
another scale than the midpoint's) raises ValueError naming it. Layouts: docs/datasets.md.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shards.dynamic import (
    Ratings,
    attach,
    by_song,
    parse_time,
    read_long,
    read_wide,
    report_coverage,
    scale_midpoint,
)
from shards.loadreport import LoadReport
from sssl_dist.data.records import Scale, SongRecord, labels_from_quadrant, labels_from_va

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".mp3", ".wav", ".flac", ".ogg")
DATASETS = ("4q", "pmemo", "eim", "deam", "manifest", "synthetic")
GROUND_TRUTH_CSV = "ground_truth_per_second.csv"


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows with column names and values stripped (DEAM's headers carry a leading space).

    A file that is not UTF-8 (a Latin-1 export, say) or a row with more fields than the
    header (an unquoted comma, which would shift the label into the wrong column) raises
    ValueError naming the file and the line. We refuse rather than guess an encoding: a wrong
    guess would turn ids into other ids.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValueError(
            f"{path}, line {line}: not UTF-8 (byte 0x{data[exc.start]:02x}); re-encode it, "
            f"e.g. iconv -f latin1 -t utf-8"
        ) from None
    reader = csv.DictReader(io.StringIO(text, newline=""), skipinitialspace=True)
    rows = []
    try:
        for row in reader:
            if None in row:  # DictReader files surplus fields under the key None
                raise ValueError(
                    f"{path}, line {reader.line_num}: {len(row[None])} field(s) more than the "
                    f"header's {len(reader.fieldnames)} (an unquoted comma?)"
                )
            rows.append({(k or "").strip(): (v or "").strip() for k, v in row.items()})
    except csv.Error as exc:
        raise ValueError(f"{path}, line {reader.line_num}: {exc}") from None
    return rows


def _need_columns(rows: list[dict[str, str]], columns: tuple[str, ...], path: Path) -> None:
    if not rows:  # a header alone (or nothing): say so, not that its columns are missing
        raise ValueError(f"{path}: no rows under the header; nothing to load")
    present = set(rows[0])
    missing = [c for c in columns if c not in present]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {sorted(present)}")


def parse_quadrant(text: str) -> int:
    """0..3 from exactly `Q1`..`Q4` or `1`..`4` (any case); anything else (`QQ1`, `Q5`,
    `1.0`) is refused, never read as something close."""
    match = re.fullmatch(r"[Qq]?([1-4])", text.strip())
    if match is None:
        raise ValueError(f"quadrant {text!r} is not Q1-Q4 or 1-4")
    return int(match.group(1)) - 1


def _audio_by_stem(folder: Path) -> tuple[dict[str, Path], dict[str, list[Path]]]:
    """(stem -> its one audio file, stem -> files where several share it). Two files with
    one stem (`Q1/s1.wav` and `Q2/s1.wav`, or `s1.mp3` beside `s1.wav`) cannot both be the
    song of one label row: neither is used, and the clash is reported."""
    if not folder.is_dir():
        raise FileNotFoundError(f"audio folder not found: {folder}")
    found: dict[str, list[Path]] = {}
    # Hidden files are not songs: macOS "._x.mp3" resource forks in unpacked archives, and the
    # ".x.tmp.ogg" our generator writes before its atomic rename.
    for p in sorted(folder.rglob("*")):
        if p.suffix.lower() in AUDIO_SUFFIXES and not p.name.startswith("."):
            found.setdefault(p.stem, []).append(p)
    unique = {stem: paths[0] for stem, paths in found.items() if len(paths) == 1}
    clashes = {stem: paths for stem, paths in found.items() if len(paths) > 1}
    return unique, clashes


def _describe(fields: dict[str, Any]) -> str:
    """A parsed row in a few words (its file where the row names one), for conflicts."""
    if fields.get("valence_value") is not None:
        label = f"valence {fields['valence_value']:g} arousal {fields['arousal_value']:g}"
    else:
        label = f"Q{fields['quadrant'] + 1}"
    return f"{Path(fields['audio_path']).name} {label}" if "audio_path" in fields else label


def _one_row_per_id(
    rows: list[dict[str, str]],
    id_of: Callable[[dict[str, str]], str],
    parse: Callable[[dict[str, str]], dict[str, Any]],
    report: LoadReport,
) -> dict[str, dict[str, Any]]:
    """song id -> its parsed row. Repeated identical rows keep the first (a duplicate);
    repeated rows that disagree refuse the id (a conflict, naming both labels); rows that do
    not parse are bad rows. Every refusal is a line in the report."""
    groups: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault(id_of(row), []).append(row)
    kept = {}
    for song_id, group in groups.items():
        try:
            parsed = [parse(row) for row in group]
        except (ValueError, KeyError) as exc:
            report.bad_rows.append(f"{song_id} ({exc})")
            continue
        distinct = {json.dumps(p, sort_keys=True): p for p in parsed}
        if len(distinct) > 1:
            shown = " vs ".join(_describe(p) for p in distinct.values())
            report.conflicts.append(f"{song_id}: {len(group)} rows disagree ({shown})")
            continue
        if len(group) > 1:
            report.duplicate_ids.append(song_id)
        kept[song_id] = parsed[0]
    return kept


def _pair(
    rows: list[dict[str, str]],
    id_column: str,
    folder: Path,
    parse: Callable[[dict[str, str]], dict[str, Any]],
    source: str,
) -> tuple[list[SongRecord], LoadReport]:
    """Join label rows with the audio files under `folder` by id, reporting every mismatch."""
    report = LoadReport()
    audio, clashes = _audio_by_stem(folder)
    for stem, paths in clashes.items():
        names = ", ".join(str(p.relative_to(folder)) for p in paths)
        report.conflicts.append(f"{stem}: {len(paths)} audio files share the id ({names})")
    labels = _one_row_per_id(rows, lambda row: row[id_column], parse, report)
    records = []
    for song_id, fields in labels.items():
        if song_id in clashes:
            continue  # refused above
        if song_id not in audio:
            report.missing_audio.append(song_id)
            continue
        records.append(SongRecord(song_id, str(audio[song_id]), source, **fields))
    report.unlabelled_audio = sorted(set(audio) - set(labels))
    return records, report


def _binary(value: float, midpoint: float) -> int:
    """High/positive when strictly above the scale's midpoint (PMEmo 0.5, EiM/DEAM 5)."""
    return int(value > midpoint)


def _number(text: str, name: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{name} {text!r} is not a finite number")
    return value


def _va_labels(valence: str, arousal: str, midpoint: float, scale: Scale) -> dict[str, Any]:
    """Binary labels cut at the midpoint, and the continuous values on their scale (a value
    off the scale makes the row a bad row)."""
    v, a = _number(valence, "valence"), _number(arousal, "arousal")
    for name, value in (("valence", v), ("arousal", a)):
        if not scale[0] <= value <= scale[1]:
            raise ValueError(f"{name} {value:g} is off the {scale[0]:g}..{scale[1]:g} scale")
    labels = labels_from_va(_binary(v, midpoint), _binary(a, midpoint))
    return {**labels, "valence_value": v, "arousal_value": a, "value_scale": scale}


# The scales MER annotations come on: PMEmo [0, 1], -1..1 (some circumplex tools), EiM and
# DEAM 1..9. Values are matched to the narrowest one that holds them all.
SCALES = ((0.0, 1.0), (-1.0, 1.0), (1.0, 9.0))


def check_scale(values: list[float], midpoint: float, where: str, hint: str) -> Scale | None:
    """The scale the values come on (the narrowest of SCALES that holds them all, else their
    own range; None without values). Refuses a midpoint outside it: 1..9 values cut at 0.5
    would make every song positive and high. `hint` says how to set the midpoint, e.g.
    "pass --midpoint {mid:g}"."""
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return None
    lo, hi = min(values), max(values)
    a, b = next(((a, b) for a, b in SCALES if a <= lo and hi <= b), (lo, hi))
    if not a < midpoint < b:
        mid = (a + b) / 2
        raise ValueError(
            f"{where}: valence/arousal values span {lo:g}..{hi:g} (a {a:g}..{b:g} scale), but "
            f"the midpoint is {midpoint:g}: {hint.format(mid=mid)}"
        )
    return (a, b)


def _column_values(rows: list[dict[str, str]], columns: tuple[str, ...]) -> list[float]:
    """The values of some columns that parse as numbers (the rest become bad rows later)."""
    values = []
    for row in rows:
        for column in columns:
            try:
                values.append(float(row.get(column) or "nan"))
            except ValueError:
                continue
    return values


def load_4q(root: Path, source: str = "4q") -> tuple[list[SongRecord], LoadReport]:
    """4Q: MER_audio_taffc_dataset/{Q1..Q4}/<Song>.mp3 + panda_dataset_taffc_annotations.csv."""
    root = Path(root)
    csv_path = root / "panda_dataset_taffc_annotations.csv"
    if not csv_path.is_file():
        csv_path = root / "MER_audio_taffc_dataset" / "panda_dataset_taffc_annotations.csv"
    rows = read_csv(csv_path)
    _need_columns(rows, ("Song", "Quadrant"), csv_path)

    def parse(row):
        return labels_from_quadrant(parse_quadrant(row["Quadrant"]))

    return _pair(rows, "Song", root / "MER_audio_taffc_dataset", parse, source)


# The scales each data set states (docs/datasets.md says where): static and dynamic PMEmo
# ratings on 0..1; EiM's and DEAM's static ratings on the 9-point scale, their dynamic ones
# on -1..1. Binary labels cut each at its midpoint.
UNIT: Scale = (0.0, 1.0)
NINE_POINT: Scale = (1.0, 9.0)
SIGNED: Scale = (-1.0, 1.0)

Loaded = tuple[list[SongRecord], LoadReport, dict[str, list[int | None]]]


def _load_static_va(root, audio_dir, id_col, valence_col, arousal_col, scale, source):
    """PMEmo and EiM share a shape: one static-annotation CSV, audio named by id."""
    root = Path(root)
    csv_path = root / "annotations" / "static_annotations.csv"
    rows = read_csv(csv_path)
    _need_columns(rows, (id_col, arousal_col, valence_col), csv_path)
    values = _column_values(rows, (valence_col, arousal_col))
    mid = scale_midpoint(scale)
    check_scale(values, mid, str(csv_path), f"is this the {source} annotation file?")

    def parse(row):
        return _va_labels(row[valence_col], row[arousal_col], mid, scale)

    return _pair(rows, id_col, root / audio_dir, parse, source)


PMEMO_DYNAMIC = Path("annotations/dynamic_annotations.csv")
PMEMO_COLUMNS = {"valence": "Valence(mean)", "arousal": "Arousal(mean)"}


def load_pmemo(root: Path) -> Loaded:
    """PMEmo2019: chorus/<musicId>.mp3 + annotations/static_annotations.csv ([0, 1], cut 0.5),
    and the per-second truth from annotations/dynamic_annotations.csv (long: musicId,
    frameTime, Arousal(mean), Valence(mean), [0, 1])."""
    records, report = _load_static_va(
        root, "chorus", "musicId", PMEMO_COLUMNS["valence"], PMEMO_COLUMNS["arousal"], UNIT, "pmemo"
    )
    path = Path(root) / PMEMO_DYNAMIC
    if not path.is_file():
        log.warning("pmemo: no %s, so no per-second truth", path)
        return records, report, {}
    rows = read_csv(path)
    _need_columns(rows, ("musicId", "frameTime", *PMEMO_COLUMNS.values()), path)
    ratings = Ratings()
    read_long(rows, path, "musicId", "frameTime", PMEMO_COLUMNS, UNIT, ratings)
    return _with_ratings(records, report, ratings, UNIT)


EIM_DYNAMIC = {
    "valence": Path("annotations/valence_cont_average.csv"),
    "arousal": Path("annotations/arousal_cont_average.csv"),
}


def load_eim(root: Path) -> Loaded:
    """Emotion in Music: clips_45seconds/<song_id>.mp3 + annotations/static_annotations.csv
    (mean_valence / mean_arousal on 1-9, cut at 5), and the per-second truth from
    annotations/{valence,arousal}_cont_average.csv (wide: song_id, sample_15000ms, ...; -1..1)."""
    records, report = _load_static_va(
        root, "clips_45seconds", "song_id", "mean_valence", "mean_arousal", NINE_POINT, "eim"
    )
    ratings = _read_wide_pair(Path(root), EIM_DYNAMIC, SIGNED, "eim")
    return _with_ratings(records, report, ratings, SIGNED)


DEAM_CSV_DIR = Path("annotations/annotations averaged per song/song_level")
DEAM_CSVS = (
    "static_annotations_averaged_songs_1_2000.csv",
    "static_annotations_averaged_songs_2000_2058.csv",
)
DEAM_DYNAMIC_DIR = Path(
    "annotations/annotations averaged per song/dynamic (per second annotations)"
)
DEAM_DYNAMIC = {
    "valence": DEAM_DYNAMIC_DIR / "valence.csv",
    "arousal": DEAM_DYNAMIC_DIR / "arousal.csv",
}


def load_deam(root: Path) -> Loaded:
    """DEAM: MEMD_audio/<song_id>.mp3 + the two song-level averaged CSVs (1-9, cut at 5;
    column names carry a leading space, stripped by read_csv), and the per-second truth from
    the dynamic valence.csv and arousal.csv (wide like EiM, -1..1, rows of different lengths)."""
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
        values = _column_values(part, ("valence_mean", "arousal_mean"))
        check_scale(
            values, scale_midpoint(NINE_POINT), str(path), "is this a DEAM annotation file?"
        )
        rows += part

    def parse(row):
        return _va_labels(
            row["valence_mean"], row["arousal_mean"], scale_midpoint(NINE_POINT), NINE_POINT
        )

    records, report = _pair(rows, "song_id", root / "MEMD_audio", parse, "deam")
    ratings = _read_wide_pair(root, DEAM_DYNAMIC, SIGNED, "deam")
    return _with_ratings(records, report, ratings, SIGNED)


def _read_wide_pair(
    root: Path, files: dict[str, Path], scale: Scale, source: str
) -> Ratings | None:
    """The ratings of a valence file and an arousal file in the wide layout; None when the
    data set came without them. One without the other is refused: the truth needs both."""
    paths = {d: root / f for d, f in files.items()}
    present = [p for p in paths.values() if p.is_file()]
    if not present:
        log.warning(
            "%s: no %s, so no per-second truth", source, " or ".join(map(str, paths.values()))
        )
        return None
    if len(present) < len(paths):
        absent = next(p for p in paths.values() if not p.is_file())
        raise FileNotFoundError(
            f"{absent} not found beside {present[0].name}: the per-second truth needs both"
        )
    ratings = Ratings()
    for dimension, path in paths.items():
        rows = read_csv(path)
        _need_columns(rows, ("song_id",), path)
        read_wide(rows, path, dimension, scale, ratings)
    return ratings


def _with_ratings(
    records: list[SongRecord], report: LoadReport, ratings: Ratings | None, scale: Scale
) -> Loaded:
    if ratings is None:
        return records, report, {}
    records, truth = attach(records, ratings, scale, scale_midpoint(scale), report)
    return records, report, truth


def load_manifest_csv(path: Path, midpoint: float = 0.5, truth_path: Path | None = None) -> Loaded:
    """Anyone's data: a CSV with `path` and `quadrant` (Q1-Q4 or 1-4) and/or `valence` and
    `arousal` (0/1, or continuous cut at `midpoint`); optional `id` (default: file stem).
    Relative paths are taken from the CSV's folder. `truth_path`: an optional per-second truth
    CSV (`manifest_truth`)."""
    path = Path(path)
    rows = read_csv(path)
    _need_columns(rows, ("path",), path)
    scale = check_scale(
        _column_values([r for r in rows if not r.get("quadrant")], ("valence", "arousal")),
        midpoint,
        str(path),
        "pass --midpoint {mid:g}",
    )

    def audio_of(row):
        audio = Path(row["path"])
        return audio if audio.is_absolute() else path.parent / audio

    def parse(row):  # the file belongs to the row: two files under one id are a conflict
        return {"audio_path": str(audio_of(row)), **_manifest_labels(row, midpoint, scale)}

    report = LoadReport()
    kept = _one_row_per_id(rows, lambda row: row.get("id") or audio_of(row).stem, parse, report)
    records = []
    for song_id, fields in kept.items():
        # Only a path with nothing there is missing audio: a folder or a FIFO of that name
        # goes on to the shard stage, which rejects it saying what it is.
        if not os.path.lexists(fields["audio_path"]):
            report.missing_audio.append(song_id)
            continue
        records.append(SongRecord(song_id=song_id, source="manifest", **fields))
    if truth_path is None:
        return records, report, {}
    return manifest_truth(records, report, Path(truth_path), midpoint)


def _manifest_labels(row: dict[str, str], midpoint: float, scale: Scale | None) -> dict[str, Any]:
    if row.get("quadrant"):
        return labels_from_quadrant(parse_quadrant(row["quadrant"]))
    if row.get("valence") and row.get("arousal"):
        # No scale: no value in the file is a finite number, so _va_labels refuses the row.
        return _va_labels(row["valence"], row["arousal"], midpoint, scale or (-math.inf, math.inf))
    raise ValueError("needs quadrant, or valence and arousal")


def manifest_truth(
    records: list[SongRecord], report: LoadReport, path: Path, midpoint: float
) -> Loaded:
    """A manifest's per-second truth file, long like PMEmo's: `id` (the manifest's id), `time`
    (seconds from the start of the audio; samples at any rate are averaged into seconds), and
    either `valence` and `arousal` on the manifest's scale (cut at `midpoint`) or `quadrant`
    (Q1-Q4 or 1-4)."""
    rows = read_csv(path)
    _need_columns(rows, ("id", "time"), path)
    if rows and "quadrant" in rows[0]:
        truth = read_quadrant_seconds(rows, path, report)
        report_coverage(records, {song: {path.name} for song in truth}, report)
        loaded = {r.song_id for r in records}
        return records, report, {s: t for s, t in truth.items() if s in loaded}
    _need_columns(rows, ("valence", "arousal"), path)
    values = _column_values(rows, ("valence", "arousal"))
    scale = check_scale(values, midpoint, str(path), "pass --midpoint {mid:g}")
    ratings = Ratings()
    columns = {"valence": "valence", "arousal": "arousal"}
    read_long(rows, path, "id", "time", columns, scale or (-math.inf, math.inf), ratings)
    records, truth = attach(records, ratings, scale, midpoint, report)
    return records, report, truth


def read_quadrant_seconds(
    rows: list[dict[str, str]], path: Path, report: LoadReport
) -> dict[str, list[int | None]]:
    """A truth file with a quadrant per row: song -> quadrant per second (from second 0). A
    second whose rows name two quadrants is unknown; a row that does not parse refuses the
    song's truth."""
    truth = {}
    for song, group in by_song(rows, "id").items():
        try:
            parsed = [(parse_time(r["time"], "time"), parse_quadrant(r["quadrant"])) for r in group]
        except ValueError as exc:
            report.bad_truth.append(f"{song} ({path.name}: {exc})")
            continue
        seen: dict[int, set[int]] = {}
        for t, q in parsed:
            seen.setdefault(math.floor(t + 1e-9), set()).add(q)
        torn = sorted(s for s, qs in seen.items() if len(qs) > 1)
        if torn:
            report.partial_truth.append(
                f"{song}: {path.name}: {len(torn)} second(s) name two quadrants (from "
                f"{torn[0]} s); those seconds are unknown"
            )
        truth[song] = [
            next(iter(seen[s])) if len(seen.get(s, ())) == 1 else None for s in range(max(seen) + 1)
        ]
    return truth


def read_ground_truth(root: Path) -> dict[str, list[int]]:
    """Per-second quadrant truth (0..3) of the synthetic corpus: song -> [q(second 0), ...]."""
    path = Path(root) / GROUND_TRUTH_CSV
    if not path.is_file():
        return {}
    truth: dict[str, dict[int, int]] = {}
    for row in read_csv(path):
        truth.setdefault(row["Song"], {})[int(row["Second"])] = parse_quadrant(row["Quadrant"])
    return {song: [secs[i] for i in sorted(secs)] for song, secs in truth.items()}


def load_dataset(name: str, root: Path, midpoint: float = 0.5, truth: Path | None = None) -> Loaded:
    """Dispatch by dataset name; returns (records, report, per-second truth or {}). `truth`:
    a manifest's per-second truth file (the data sets read their own)."""
    root = Path(root)
    if truth is not None and name != "manifest":
        raise ValueError(
            f"--truth is for --dataset manifest; {name!r} reads its own per-second annotations"
        )
    if name == "4q":
        return (*load_4q(root), read_ground_truth(root))
    if name == "synthetic":
        return (*load_4q(root, source="synthetic"), read_ground_truth(root))
    if name == "pmemo":
        return load_pmemo(root)
    if name == "eim":
        return load_eim(root)
    if name == "deam":
        return load_deam(root)
    if name == "manifest":
        return load_manifest_csv(root, midpoint, truth)
    raise ValueError(f"unknown dataset {name!r}; choose from {DATASETS}")
