"""Dynamic valence and arousal annotations as the data sets distribute them, averaged into
seconds, and the per-second truth the classification tasks are scored against.

The layouts (docs/datasets.md says where each was checked):
- PMEmo2019: `annotations/dynamic_annotations.csv`, long: one row per song and sample with
  `musicId`, `frameTime` (seconds), `Arousal(mean)`, `Valence(mean)`, on [0, 1].
- Emotion in Music: `annotations/valence_cont_average.csv` and `arousal_cont_average.csv`,
  wide: `song_id`, then `sample_15000ms`, `sample_15500ms`, ... `sample_45000ms`, on [-1, 1].
- DEAM: `valence.csv` and `arousal.csv` in `annotations/annotations averaged per song/dynamic
  (per second annotations)/`, wide like EiM, on [-1, 1]; the full-length 2015 songs make rows
  of different lengths (the shorter rows end in empty cells).
Each is the mean over annotators at 2 Hz, from 15 s on: the data sets leave out the first
15 s because a rating takes that long to settle.

A second's rating is the mean of the samples taken in it (a sample at t s counts for second
floor(t)); a second without a sample is unknown (None): the first 15 s, gaps, the end. A
second's truth is the quadrant of its two ratings, each cut at the scale's midpoint, and is
unknown unless both are known.

Bad input is reported the way the static loaders report it, one line per song (LoadReport):
a cell that is not a number or lies off the scale, or repeated rows that disagree, refuse the
song's dynamic ratings (`bad_truth`; the song keeps its static labels); missing samples
(empty cells before the row's last sample, seconds without a sample inside the ratings) and
seconds rated for only one of valence and arousal are kept as unknown seconds
(`partial_truth`); ratings of an id that has no loaded song are `truth_without_song`. Empty
cells after a row's last sample are where its song ends (DEAM's ragged rows), not missing.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from itertools import zip_longest
from pathlib import Path
from typing import TYPE_CHECKING

from sssl_dist.data.records import Scale, SongRecord, quadrant_of_values

if TYPE_CHECKING:
    from shards.loadreport import LoadReport

DIMENSIONS = ("valence", "arousal")
SAMPLE_COLUMN = re.compile(r"sample_(\d+)ms")
# Pandas writes a missing float as an empty cell or as NaN: both are a sample not taken.
MISSING = ("", "nan")


def scale_midpoint(scale: Scale) -> float:
    return (scale[0] + scale[1]) / 2


@dataclass
class Ratings:
    """Dynamic ratings gathered from a data set's files, before they are matched to songs."""

    samples: dict[str, dict[str, list[tuple[float, float]]]] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(default_factory=dict)  # song -> samples not taken
    refused: dict[str, list[str]] = field(default_factory=dict)  # song -> why refused
    files: dict[str, set[str]] = field(default_factory=dict)  # song -> files that rate it
    duplicates: list[str] = field(default_factory=list)  # "id (file)": identical repeated rows

    def add(self, song: str, dimension: str, samples: list[tuple[float, float]], where: str):
        self.files.setdefault(song, set()).add(where)
        self.samples.setdefault(song, {}).setdefault(dimension, []).extend(samples)

    def note_missing(self, song: str, what: str) -> None:
        self.missing.setdefault(song, []).append(what)

    def refuse(self, song: str, where: str, why: str) -> None:
        self.files.setdefault(song, set()).add(where)
        self.refused.setdefault(song, []).append(f"{where}: {why}")


def by_song(rows: list[dict[str, str]], id_column: str) -> dict[str, list[dict[str, str]]]:
    """The rows of each song id, in file order."""
    groups: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault(row[id_column], []).append(row)
    return groups


def _sample(text: str, column: str, scale: Scale) -> float | None:
    """A cell's value; None for a sample not taken. ValueError, naming the column, for text
    that is not a number and for a value off the scale."""
    if text.strip().casefold() in MISSING:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{column} {text!r} is not a number") from None
    if not (math.isfinite(value) and scale[0] <= value <= scale[1]):
        raise ValueError(f"{column} {text!r} is off the {scale[0]:g}..{scale[1]:g} scale")
    return value


def sample_times(columns: list[str], path: Path) -> list[tuple[str, float]]:
    """(column, its time in seconds) of a wide file's sample columns, in time order. A column
    that is not `sample_<ms>ms`, or two columns at one time, make the file unreadable."""
    out = []
    for column in columns:
        match = SAMPLE_COLUMN.fullmatch(column)
        if match is None:
            raise ValueError(f"{path}: column {column!r} is not song_id or sample_<ms>ms")
        out.append((column, int(match.group(1)) / 1000))
    times = [t for _, t in out]
    if len(set(times)) < len(times):
        raise ValueError(f"{path}: two sample columns at the same time")
    return sorted(out, key=lambda item: item[1])


def read_wide(
    rows: list[dict[str, str]], path: Path, dimension: str, scale: Scale, ratings: Ratings
) -> None:
    """EiM's and DEAM's layout: one row per song, `song_id` then one column per 2 Hz sample.
    An unnamed column with no value in it (a trailing comma on every line) is no sample."""
    named = [c for c in (rows[0] if rows else ()) if c != "song_id"]
    named = [c for c in named if c or any(row[c] for row in rows)]
    columns = sample_times(named, path)

    def parse(row: dict[str, str]) -> tuple[list[tuple[float, float]], list[str]]:
        values = [(c, t, _sample(row[c], c, scale)) for c, t in columns]
        last = max((i for i, (_, _, v) in enumerate(values) if v is not None), default=-1)
        missing = [c for c, _, v in values[:last] if v is None]
        return [(t, v) for _, t, v in values if v is not None], missing

    for song, group in by_song(rows, "song_id").items():
        try:
            parsed = [parse(row) for row in group]
        except ValueError as exc:
            ratings.refuse(song, path.name, str(exc))
            continue
        if any(p != parsed[0] for p in parsed[1:]):
            ratings.refuse(song, path.name, f"{len(group)} rows disagree")
            continue
        if len(group) > 1:
            ratings.duplicates.append(f"{song} ({path.name})")
        samples, missing = parsed[0]
        if not samples:
            ratings.note_missing(song, f"{path.name}: no sample in its row")
        elif missing:
            shown = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
            ratings.note_missing(song, f"{path.name}: {len(missing)} empty cell(s) ({shown})")
        ratings.add(song, dimension, samples, path.name)


def read_long(
    rows: list[dict[str, str]],
    path: Path,
    id_column: str,
    time_column: str,
    value_columns: dict[str, str],
    scale: Scale,
    ratings: Ratings,
) -> None:
    """PMEmo's layout (and a manifest's truth file): one row per song and sample, with its
    time in seconds and a column per dimension (`value_columns`: dimension -> column)."""

    def parse(row: dict[str, str]) -> tuple[float, dict[str, float | None]]:
        time = parse_time(row[time_column], time_column)
        at = f"{{}} at {row[time_column]} s"
        return time, {d: _sample(row[c], at.format(c), scale) for d, c in value_columns.items()}

    for song, group in by_song(rows, id_column).items():
        try:
            parsed = [parse(row) for row in group]
        except ValueError as exc:
            ratings.refuse(song, path.name, str(exc))
            continue
        by_time: dict[float, dict[str, float | None]] = {}
        clash = None
        for time, values in parsed:
            if by_time.setdefault(time, values) != values:
                clash = time
        if clash is not None:
            ratings.refuse(song, path.name, f"rows at {time_column} {clash:g} disagree")
            continue
        if len(by_time) < len(parsed):
            ratings.duplicates.append(f"{song} ({path.name})")
        for dimension, column in value_columns.items():
            present = [(t, v[dimension]) for t, v in sorted(by_time.items())]
            empty = [t for t, v in present if v is None]
            if empty:
                ratings.note_missing(
                    song, f"{path.name}: {len(empty)} empty {column} cell(s) (from {empty[0]:g} s)"
                )
            ratings.add(song, dimension, [(t, v) for t, v in present if v is not None], path.name)


def parse_time(text: str, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{column} {text!r} is not a number") from None
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{column} {text!r} is not a time in seconds")
    return value


def per_second(samples: list[tuple[float, float]]) -> list[float | None]:
    """The mean of the samples in each second, from second 0 to the last rated one; None for a
    second without a sample. A sample at t s counts for second floor(t)."""
    sums: dict[int, list[float]] = {}
    for t, v in samples:
        # 1e-9: a time written in decimal (15.5) may read back a hair below its second.
        sums.setdefault(math.floor(t + 1e-9), []).append(v)
    n = max(sums) + 1 if sums else 0
    return [sum(sums[s]) / len(sums[s]) if s in sums else None for s in range(n)]


def _inner_gaps(curve: list[float | None]) -> list[int]:
    """Seconds without a sample between a curve's first and last rated second."""
    known = [s for s, v in enumerate(curve) if v is not None]
    return [s for s in range(known[0], known[-1]) if curve[s] is None] if known else []


def quadrant_truth(
    valence: list[float | None], arousal: list[float | None], mid: float
) -> list[int | None]:
    """Per second: the quadrant of (valence, arousal) against the midpoint, None unless both
    are known; trailing unknown seconds left out."""
    truth = [
        quadrant_of_values(v, a, mid) if v is not None and a is not None else None
        for v, a in zip_longest(valence, arousal)
    ]
    while truth and truth[-1] is None:
        truth.pop()
    return truth


def report_coverage(
    records: list[SongRecord], rated: dict[str, set[str]], report: LoadReport
) -> None:
    """One line for each rated id without a loaded song, and each song without a rating.
    `rated`: song id -> the files that rate it."""
    loaded = {r.song_id for r in records}
    for song in sorted(set(rated) - loaded):
        files = ", ".join(sorted(rated[song]))
        report.truth_without_song.append(f"{song} ({files}): no song was loaded under this id")
    for song in sorted(loaded - set(rated)):
        report.partial_truth.append(f"{song}: no dynamic rating; its seconds are unknown")


def attach(
    records: list[SongRecord],
    ratings: Ratings,
    scale: Scale | None,
    mid: float,
    report: LoadReport,
) -> tuple[list[SongRecord], dict[str, list[int | None]]]:
    """The records with their per-second curves on `scale`, and each song's per-second truth
    cut at `mid` (the songs with at least one known second). Every rating that cannot be used,
    and every song without one, is a line in `report`."""
    report_coverage(records, ratings.files, report)
    report.duplicate_ids += ratings.duplicates
    out, truth = [], {}
    for record in records:
        song = record.song_id
        if song in ratings.refused:
            report.bad_truth.append(f"{song} ({'; '.join(ratings.refused[song])})")
        if song in ratings.refused or song not in ratings.files:
            out.append(record)
            continue
        curves = {d: per_second(ratings.samples[song].get(d, [])) for d in DIMENSIONS}
        notes = ratings.missing.get(song, []) + _gap_notes(curves)
        if notes:
            report.partial_truth.append(f"{song}: {'; '.join(notes)}; those seconds are unknown")
        seconds = quadrant_truth(curves["valence"], curves["arousal"], mid)
        if any(q is not None for q in seconds):
            truth[song] = seconds
        rated = {d: tuple(c) for d, c in curves.items() if any(v is not None for v in c)}
        if rated:
            record = replace(
                record,
                valence_curve=rated.get("valence"),
                arousal_curve=rated.get("arousal"),
                curve_scale=scale,
            )
        out.append(record)
    return out, truth


def _gap_notes(curves: dict[str, list[float | None]]) -> list[str]:
    """What a song's curves leave unknown inside its ratings: seconds without a sample, and
    seconds rated for only one dimension (the quadrant needs both)."""
    notes = []
    for d in DIMENSIONS:
        gaps = _inner_gaps(curves[d])
        if gaps:
            notes.append(f"{d}: {len(gaps)} second(s) without a sample (from {gaps[0]} s)")
    one_sided = sum(
        (v is None) != (a is None) for v, a in zip_longest(curves["valence"], curves["arousal"])
    )
    if one_sided:
        notes.append(f"{one_sided} second(s) rated for only one of valence and arousal")
    return notes
