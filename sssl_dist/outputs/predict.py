"""`sssl predict` on a catalogue: Ray Data decode tasks -> model actor pool -> Parquet parts.

    file list ──► Ray tasks: decode + log-mel (audio.py) of a group of files, once per file
              whatever the models
              ──► actor pool (map_batches + ActorPoolStrategy): every model on every mel
              ──► driver: one committed part per batch of finished files

The output directory is the resumable record of a run:

    segments/part-NNNNN.parquet   file, model, start_s, end_s, p_<label>...,
                                  p_valence_pos, p_arousal_pos (null where the task has no axis)
    files/part-NNNNN.parquet      file, model, output, task, decision, probability, p_<label>...
    failures/part-NNNNN.parquet   file, model (null when the audio itself failed), reason
    done/part-NNNNN.json          commit marker: the files that part finished
    done/run.json                 the models (their sha256) and settings of this output
    predictions.csv            one row per file and model, for spreadsheets
    <output>.json/.segments.csv/.png   per-file results and plots (small runs or --plots)

A part is written under a hidden name first (pyarrow and pandas skip names starting with
"."), then its marker, then renamed into place; at start a marker's hidden parts are rolled
forward and hidden parts without a marker are deleted. So a kill at any instant (SIGKILL
included) loses only the files in flight, and a re-run skips every file of every marker: no
file is predicted twice and no row is duplicated.
"""

from __future__ import annotations

import csv
import hashlib
import heapq
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sssl_dist.config import FeatureConfig, from_dict, to_dict
from sssl_dist.data.audio import AudioError, decode, log_mel
from sssl_dist.files.outdir import hold

# The decode tasks import this module: torch and scikit-learn (export.py) are imported only
# where a model is used, so a decode worker starts without them.
if TYPE_CHECKING:
    from ray.data import Dataset

    from sssl_dist.outputs.export import LoadedModel

log = logging.getLogger("sssl.predict")

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
MANIFEST_COLUMN = "path"  # the manifest CSV's column of audio paths
PLOT_MAX_FILES = 20  # runs this small get per-file JSON, CSV and plot without --plots
_NAME_MAX_BYTES = 80  # output names stay far below the 255-byte file name limit
_TABLES = ("segments", "files", "failures")
LOCK_NAME = ".predict.lock"
# Quadrants with positive valence and with high arousal (Russell's plane; DESIGN.md, 4Q).
_VALENCE_POS = {"quadrant": ("Q1", "Q4"), "valence": ("positive",)}
_AROUSAL_POS = {"quadrant": ("Q1", "Q2"), "arousal": ("high",)}
CSV_COLUMNS = ["file", "output", "decision", "probability", "duration_s", "segments", "model"]


# --------------------------------------------------------------------------- inputs
def find_audio(inputs: Iterable[str | os.PathLike]) -> list[str]:
    """Audio paths from files, directories (searched recursively, sorted) and manifest CSVs
    (column `path`, relative to the CSV's folder). Repeated paths are kept once, first
    place first. A named file that does not exist is kept, to be reported as a failure."""
    found: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found += sorted(str(f) for f in p.rglob("*") if _is_audio(f))
        elif p.suffix.lower() == ".csv":
            found += read_manifest(p)
        else:
            found.append(str(p))
    return list(dict.fromkeys(found))


def _is_audio(path: Path) -> bool:
    """An audio-named entry of a searched folder. Anything but a folder (which is searched
    itself) counts: a FIFO or a broken link named .mp3 is listed among the failures with what
    it is, never skipped unseen."""
    return path.suffix.lower() in AUDIO_SUFFIXES and not path.is_dir()


def read_manifest(path: Path) -> list[str]:
    """The `path` column of a manifest CSV; relative paths are relative to the CSV."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if MANIFEST_COLUMN not in (reader.fieldnames or []):
                raise ValueError(
                    f"manifest {path} has no {MANIFEST_COLUMN!r} column "
                    f"(columns: {reader.fieldnames})"
                )
            rows = [(reader.line_num, row[MANIFEST_COLUMN]) for row in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"manifest {path}: not a UTF-8 CSV ({exc})") from None
    if not rows:
        raise ValueError(f"manifest {path} has a header but no rows: list one audio file a row")
    empty = [line for line, value in rows if not (value or "").strip()]
    if empty:
        raise ValueError(f"manifest {path}: empty {MANIFEST_COLUMN!r} on line {empty[0]}")
    return [str(path.parent / value.strip()) for _, value in rows]


def file_key(path: str) -> str:
    """The file's name as stored in the tables and the done-list: its path, with bytes that
    are not UTF-8 written as \\xNN (Parquet strings must be UTF-8)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def safe_name(path: str) -> str:
    """A file-system-safe output name from the file's stem: letters, digits and `-_.+()`
    kept (any script), anything else `_`; a long stem is cut and tagged with a hash of the
    full path so that cut names stay distinct."""
    stem = re.sub(r"[^\w\-.+() ]", "_", file_key(Path(path).stem)).strip(" .") or "file"
    if len(stem.encode()) <= _NAME_MAX_BYTES:
        return stem
    cut = stem.encode()[:_NAME_MAX_BYTES].decode("utf-8", "ignore").rstrip(" .")
    return f"{cut}~{hashlib.sha1(os.fsencode(path)).hexdigest()[:8]}"


def output_names(files: list[str]) -> list[str]:
    """One distinct safe output name per input: the stem, or, where stems collide
    (`a/song.mp3`, `b/song.mp3`), the parent folder and the stem (`a__song`), then the input's
    position when even that collides."""
    stems = [safe_name(f) for f in files]
    names = [
        stem if stems.count(stem) == 1 else f"{safe_name(Path(f).parent.name or 'root')}__{stem}"
        for f, stem in zip(files, stems, strict=True)
    ]
    return [name if names.count(name) == 1 else f"{name}-{i}" for i, name in enumerate(names)]


def model_names(paths: list[str]) -> list[str]:
    """A short distinct name per model: its report folder for `.../<run>/model.sssl`, else
    the file's stem."""
    raw = [
        safe_name(str(Path(p).parent)) if Path(p).stem == "model" else safe_name(p) for p in paths
    ]
    # A model's per-file outputs go to a folder of its name: never into a table's folder.
    raw = [f"{n}-model" if n in (*_TABLES, "done") else n for n in raw]
    return [n if raw.count(n) == 1 else f"{n}-{i}" for i, n in enumerate(raw)]


# --------------------------------------------------------------------------- decode task
def decode_row(
    row: dict[str, Any], fc: dict[str, Any], max_seconds: float | None
) -> dict[str, Any]:
    """Ray Data task: one file -> its log-mel as float32 bytes, or the reason it failed.
    Every exception becomes a reason: one bad file must never end the run."""
    path = os.fsdecode(row["path"])
    out = {"file": row["file"], "mel": b"", "n_mels": 0, "duration_s": 0.0, "error": ""}
    try:
        features = from_dict(FeatureConfig, fc)
        y = _decode_any_name(path, features)
        if max_seconds is not None:
            y = y[: int(max_seconds * features.sample_rate)]
        mel = checked_mel(log_mel(y, features))
        out.update(mel=mel.tobytes(), n_mels=mel.shape[0], duration_s=y.size / features.sample_rate)
    except Exception as exc:  # noqa: BLE001 - recorded as the file's failure reason
        out["error"] = failure_reason(exc)
    return out


def _decode_any_name(path: str, fc: FeatureConfig) -> np.ndarray:
    """decode(), also for names that are not UTF-8: libsndfile's Python binding cannot open
    such a path, so it reads the file through a symlink with a plain name."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        with tempfile.TemporaryDirectory(prefix="sssl-predict-") as tmp:
            link = Path(tmp) / f"audio{safe_name('x' + Path(path).suffix)[1:]}"
            os.symlink(os.fsencode(os.path.abspath(path)), link)
            return decode(link, fc, enforce_limits=False)
    return decode(path, fc, enforce_limits=False)


def checked_mel(mel: np.ndarray) -> np.ndarray:
    """The log-mel, or AudioError when it is not finite (huge but finite samples square to inf
    inside the STFT): a NaN mel must be a failure row, never a probability."""
    if not np.isfinite(mel).all():
        raise AudioError(f"log-mel has {int(np.sum(~np.isfinite(mel)))} NaN/inf values")
    return mel


def failure_reason(exc: BaseException) -> str:
    """One line: AudioError's own words, any other error with its type."""
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return text if isinstance(exc, AudioError) else f"{type(exc).__name__}: {text}".rstrip(": ")


# --------------------------------------------------------------------------- model actor
class SegmentPredictor:
    """Ray Data actor: loads every model once, then predicts each mel of a batch with each.
    Returns one JSON result per file, so ragged per-segment arrays cross no Arrow type."""

    def __init__(self, model_paths: list[str], names: list[str], gpu: bool, threads: int):
        import torch

        from sssl_dist.outputs.export import (
            checked_segment_probabilities,
            load_model,
            song_probabilities,
        )

        self.segment_probabilities = checked_segment_probabilities
        self.song_probabilities = song_probabilities
        torch.set_num_threads(max(1, threads))
        self.device = "cuda" if gpu else "cpu"
        self.models = {n: load_model(p) for n, p in zip(names, model_paths, strict=True)}
        for m in self.models.values():
            m.net.to(self.device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = [
            self.segment_result(mel, int(n_mels), float(dur), str(err))
            for mel, n_mels, dur, err in zip(
                batch["mel"], batch["n_mels"], batch["duration_s"], batch["error"], strict=True
            )
        ]
        self.add_song_probabilities(results)
        return {
            "file": batch["file"],
            "result": np.array(
                [json.dumps(r, default=np.ndarray.tolist) for r in results], dtype=object
            ),
        }

    def segment_result(self, mel: bytes, n_mels: int, duration_s: float, error: str) -> dict:
        """One file's segment probabilities [S, K] by each model, or its error."""
        if error:
            return {"duration_s": duration_s, "error": error}
        spec = np.frombuffer(mel, dtype=np.float32).reshape(n_mels, -1)
        per_model: dict[str, dict[str, Any]] = {}
        for name, model in self.models.items():
            try:
                probs = self.segment_probabilities(model, spec, duration_s, device=self.device)
                per_model[name] = {"probs": probs}
            except Exception as exc:  # noqa: BLE001 - recorded as this file's failure
                per_model[name] = {"error": failure_reason(exc)}
        return {"duration_s": duration_s, "error": "", "models": per_model}

    def add_song_probabilities(self, results: list[dict]) -> None:
        """Each model's song probabilities for all the batch's files in one SVM call."""
        for name, model in self.models.items():
            done = [
                r["models"][name] for r in results if "probs" in r.get("models", {}).get(name, {})
            ]
            if done:
                song = self.song_probabilities(model, [d["probs"] for d in done])
                for d, p in zip(done, song, strict=True):
                    d["song"] = p


# --------------------------------------------------------------------------- part store
class PartStore:
    """The committed parts of one output directory (see the module docstring)."""

    def __init__(self, out: Path):
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        # One `sssl predict` per output directory: two would commit parts of one done-list.
        self._lock = hold(out, "sssl predict", LOCK_NAME)
        for table in (*_TABLES, "done"):
            (out / table).mkdir(parents=True, exist_ok=True)
        self.done: set[str] = set()
        self.next_part = 0
        self._recover()

    def __enter__(self) -> PartStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release(force=True)

    def _recover(self) -> None:
        markers = sorted((self.out / "done").glob("part-*.json"))
        for marker in markers:
            for table in _TABLES:
                hidden = self.out / table / f".{marker.stem}.parquet"
                if hidden.exists():  # killed after the marker, before the rename
                    hidden.rename(self.out / table / f"{marker.stem}.parquet")
            self.done.update(json.loads(marker.read_text()))
        committed = {m.stem for m in markers}
        for table in (*_TABLES, "done"):
            for stray in (self.out / table).glob(".*"):
                if stray.name.split(".")[1] not in committed or table == "done":
                    stray.unlink()  # a part whose batch never committed, or a marker's temp
        self.next_part = 1 + max((int(m.stem.split("-")[1]) for m in markers), default=-1)

    def commit(self, tables: dict[str, pa.Table], files: list[str]) -> None:
        """Write one part of every table and mark its files done, atomically as a whole."""
        name = f"part-{self.next_part:05d}"
        for table, data in tables.items():
            pq.write_table(data, self.out / table / f".{name}.parquet")
        tmp = self.out / "done" / f".{name}.json.tmp"
        tmp.write_text(json.dumps(files))
        _fsync(tmp)
        tmp.rename(self.out / "done" / f"{name}.json")  # the commit point
        for table in tables:
            (self.out / table / f".{name}.parquet").rename(self.out / table / f"{name}.parquet")
        self.done.update(files)
        self.next_part += 1

    def read(self, table: str) -> pa.Table | None:
        parts = sorted((self.out / table).glob("part-*.parquet"))
        return pa.concat_tables([pq.read_table(p) for p in parts]) if parts else None


def _fsync(path: Path) -> None:
    with path.open("rb+") as fh:
        os.fsync(fh.fileno())


# --------------------------------------------------------------------------- tables
def probability_columns(models: dict[str, LoadedModel]) -> list[str]:
    """p_<label> for every label of every classification model (union, first seen first)."""
    labels = [label for m in models.values() if m.scale is None for label in m.label_names]
    return [f"p_{label}" for label in dict.fromkeys(labels)]


def value_columns(models: dict[str, LoadedModel]) -> list[str]:
    """The rating columns of the regression models (valence, arousal: values on each model's
    data set scale, stated in scale_low and scale_high), union, first seen first."""
    names = [n for m in models.values() if m.scale is not None for n in m.label_names]
    return [*dict.fromkeys(names), "scale_low", "scale_high"] if names else []


def valence_arousal(task: str, labels: list[str], p: np.ndarray) -> tuple[Any, Any]:
    """P(valence+), P(arousal+) [n] from class probabilities [n, K]; None where the task
    says nothing about that axis (a valence model knows nothing of arousal)."""
    idx = {label: i for i, label in enumerate(labels)}
    val = _VALENCE_POS.get(task)
    aro = _AROUSAL_POS.get(task)
    return (
        None if val is None else p[:, [idx[x] for x in val]].sum(1),
        None if aro is None else p[:, [idx[x] for x in aro]].sum(1),
    )


@dataclass
class Batch:
    """Rows of finished files, waiting for their commit."""

    files: list[str] = field(default_factory=list)
    segments: list[dict[str, Any]] = field(default_factory=list)
    songs: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    audio_s: float = 0.0
    failed_files: int = 0


def add_result(
    batch: Batch, key: str, result: dict, models: dict[str, LoadedModel], output: dict[str, str]
) -> None:
    """One finished file's rows into the batch (a failure row per failing model)."""
    batch.files.append(key)
    batch.audio_s += result["duration_s"]
    if result["error"]:
        batch.failures.append({"file": key, "model": None, "reason": result["error"]})
        batch.failed_files += 1
        return
    failed = False
    for name, res in result["models"].items():
        if "error" in res:
            batch.failures.append({"file": key, "model": name, "reason": res["error"]})
            failed = True
            continue
        probs, song_p = np.asarray(res["probs"]), np.asarray(res["song"])
        batch.segments += segment_rows(key, name, models[name], probs)
        song = song_row(key, name, models[name], song_p)
        song.update(output=output[name], duration_s=round(result["duration_s"], 2))
        batch.songs.append({**song, "segments": len(probs)})
    batch.failed_files += failed


def class_columns(model: LoadedModel, p: np.ndarray) -> list[dict[str, Any]]:
    """Per row of p [n, K]: p_<label> for each class, P(valence+) and P(arousal+); for a
    regression model its ratings on its data set's scale, and that scale."""
    if model.scale is not None:
        from sssl_dist.method.tasks import task_of

        low, high = model.scale
        rows = task_of(model.cfg).columns(p, model.scale)
        return [{**row, "scale_low": low, "scale_high": high} for row in rows]
    val, aro = valence_arousal(model.cfg.task, model.label_names, p)
    return [
        {
            **{f"p_{lab}": float(p[i, k]) for k, lab in enumerate(model.label_names)},
            "p_valence_pos": None if val is None else float(val[i]),
            "p_arousal_pos": None if aro is None else float(aro[i]),
        }
        for i in range(len(p))
    ]


def segment_rows(key: str, name: str, model: LoadedModel, probs: np.ndarray) -> list[dict]:
    """One row per segment: where it lies in the file (s) and its probabilities."""
    hop, length = model.cfg.hop_seconds, model.cfg.segment_seconds
    return [
        {"file": key, "model": name, "start_s": i * hop, "end_s": i * hop + length, **cols}
        for i, cols in enumerate(class_columns(model, probs))
    ]


def song_row(key: str, name: str, model: LoadedModel, song_p: np.ndarray) -> dict[str, Any]:
    """The song-level decision (the SVM on Eq. 10 features) and its probabilities, or a
    regression model's ratings (its SVR on the same features)."""
    from sssl_dist.method.tasks import task_of

    decision, probability = task_of(model.cfg).decision(song_p, model.scale)
    return {
        "file": key,
        "model": name,
        "task": model.cfg.task,
        "decision": decision,
        "probability": probability,
        **class_columns(model, song_p[None])[0],
    }


def log_failures(key: str, result: dict) -> None:
    if result["error"]:
        log.error("%s: skipped: %s", key, result["error"])
    for name, res in result.get("models", {}).items():
        if "error" in res:
            log.error("%s: skipped: %s (model %s)", key, res["error"], name)


def table_schemas(models: dict[str, LoadedModel]) -> dict[str, pa.Schema]:
    """Fixed schemas, so every part of a table reads as one dataset (empty parts included)."""
    probs = [pa.field(c, pa.float32()) for c in probability_columns(models)]
    probs += [pa.field(c, pa.float64()) for c in value_columns(models)]
    va = [pa.field("p_valence_pos", pa.float32()), pa.field("p_arousal_pos", pa.float32())]
    key = [pa.field("file", pa.string()), pa.field("model", pa.string())]
    return {
        "segments": pa.schema(
            [*key, pa.field("start_s", pa.int32()), pa.field("end_s", pa.int32()), *probs, *va]
        ),
        "files": pa.schema(
            [
                *key,
                pa.field("output", pa.string()),
                pa.field("task", pa.string()),
                pa.field("decision", pa.string()),
                pa.field("probability", pa.float64()),
                *probs,
                *va,
                pa.field("duration_s", pa.float64()),
                pa.field("segments", pa.int32()),
            ]
        ),
        "failures": pa.schema([*key, pa.field("reason", pa.string())]),
    }


def batch_tables(batch: Batch, schemas: dict[str, pa.Schema]) -> dict[str, pa.Table]:
    rows = {"segments": batch.segments, "files": batch.songs, "failures": batch.failures}
    return {t: pa.Table.from_pylist(rows[t], schema=schemas[t]) for t in _TABLES}


# --------------------------------------------------------------------------- per-file outputs
def write_file_outputs(
    out: Path, key: str, result: dict, models: dict[str, LoadedModel], output: dict[str, str]
) -> None:
    """<output>.json, .segments.csv and .png of one file, per model (small runs, --plots)."""
    from sssl_dist.outputs.export import song_result
    from sssl_dist.outputs.report import plot_emotion_curve

    for name, res in result.get("models", {}).items():
        if "error" in res:
            continue
        m = models[name]
        doc = song_result(
            m, key, result["duration_s"], np.asarray(res["probs"]), np.asarray(res["song"])
        )
        stem = out / output[name]
        stem.parent.mkdir(parents=True, exist_ok=True)
        Path(f"{stem}.json").write_text(json.dumps(doc, indent=1))
        with Path(f"{stem}.segments.csv").open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["start_s", "end_s", *m.label_names])
            w.writeheader()
            w.writerows(doc["segments"])
        plot_emotion_curve(doc, Path(f"{stem}.png"))


def write_outputs_or_record(
    batch: Batch, out: Path, key: str, result: dict, models: dict, output: dict[str, str]
) -> None:
    """write_file_outputs, with any error recorded as the file's failure: its rows stay in
    the tables, and the run goes on."""
    try:
        write_file_outputs(out, key, result, models, output)
    except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
        reason = f"per-file outputs not written: {failure_reason(exc)}"
        batch.failures.append({"file": key, "model": None, "reason": reason})
        batch.failed_files += 1
        log.error("%s: %s", key, reason)


def csv_rows(songs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{c: s[c] for c in CSV_COLUMNS} for s in songs]


def rewrite_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """predictions.csv from the committed files table (atomic: a kill leaves the old one)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def append_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows of a just-committed part; the next start rebuilds the file from Parquet, so a
    kill in the middle of this append costs nothing."""
    with path.open("a", newline="") as fh:
        csv.DictWriter(fh, fieldnames=CSV_COLUMNS).writerows(rows)


# --------------------------------------------------------------------------- the run
@dataclass
class PredictSummary:
    files: int  # inputs of this command
    skipped: int  # already done by an earlier run into the same directory
    predicted: int  # finished in this run (failures included)
    failed: int  # files with a failure row in the whole output, this run or earlier
    audio_s: float  # audio finished in this run
    seconds: float


def load_models(model_paths: list[str]) -> dict[str, LoadedModel]:
    """Every model, validated; they must share one feature front end to share one decode."""
    from sssl_dist.outputs.export import load_model

    names = model_names(model_paths)
    models = {n: load_model(p) for n, p in zip(names, model_paths, strict=True)}
    fcs = {json.dumps(to_dict(m.fc), sort_keys=True) for m in models.values()}
    if len(fcs) > 1:
        raise ValueError("the models use different feature settings; predict them in separate runs")
    return models


def check_run_record(out: Path, model_paths: list[str], max_seconds: float | None) -> None:
    """run.json ties an output directory to its models and settings: resuming into it with
    other models would mix their rows under one done-list."""
    record = {
        "models": [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in model_paths],
        "max_seconds": max_seconds,
    }
    path = out / "done" / "run.json"  # not beside the per-file JSONs: a song may be run.mp3
    if path.is_file():
        old = json.loads(path.read_text())
        if {k: old.get(k) for k in record} != record:
            raise ValueError(
                f"{out} holds predictions of other models or settings; use another --out"
            )
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**record, "paths": [str(Path(p).resolve()) for p in model_paths]}))


def run_predict(
    model_paths: list[str],
    files: list[str],
    out_dir: str | Path,
    *,
    max_seconds: float | None = None,
    actors: int = 1,
    gpu: bool = False,
    batch_files: int = 8,
    part_files: int = 64,
    part_seconds: float = 30.0,
    plots: bool | None = None,
    actor_cpus: float | None = None,
    start_ray: Callable[[], None] | None = None,
) -> PredictSummary:
    """Predict every file with every model into out_dir (resumable; see the module docstring).

    Files are decoded once in Ray tasks; `actors` model actors (one GPU each with `gpu`) take
    `batch_files` mels at a time; a part is committed every `part_files` finished files or
    `part_seconds`, whichever comes first. `plots` None means: only for runs of at most
    PLOT_MAX_FILES files. `actor_cpus` is what each model actor reserves (default: 1 with
    a GPU, 0 on CPU; reserve more for a heavy network on CPU). `start_ray` is called once
    there is work to do (Ray must be up after it); a run with nothing left starts no Ray."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    models = load_models(model_paths)
    with PartStore(out) as store:
        check_run_record(out, model_paths, max_seconds)
        schemas = table_schemas(models)
        keys, outputs = file_outputs(files, models)
        plots = len(files) <= PLOT_MAX_FILES if plots is None else plots
        csv_path = out / "predictions.csv"
        done_rows = store.read("files")
        rewrite_csv(csv_path, csv_rows(done_rows.to_pylist()) if done_rows else [])
        todo = [(k, f) for k, f in zip(keys, files, strict=True) if k not in store.done]
        progress = Progress(len(todo), len(files) - len(todo))
        if todo:
            if start_ray is not None:
                start_ray()
            stream = predict_stream(
                todo, model_paths, models, max_seconds=max_seconds, actors=actors, gpu=gpu,
                batch_files=batch_files, actor_cpus=actor_cpus,
            )  # fmt: skip
            for batch in _batches(stream, out, models, outputs, plots, part_files, part_seconds):
                _commit(store, batch, schemas, csv_path, progress)
        failures = store.read("failures")
    # This command's files with a failure row, from this run or an earlier one into `out`.
    failed = len(set(failures.column("file").to_pylist()) & set(keys)) if failures else 0
    summary = PredictSummary(
        len(files), len(files) - len(todo), progress.files, failed, progress.audio_s,
        time.perf_counter() - t0,
    )  # fmt: skip
    progress.finish(summary)
    return summary


def file_outputs(files: list[str], models: dict) -> tuple[list[str], dict[str, dict[str, str]]]:
    """Each file's key, and its output name per model (under a folder per model when several)."""
    keys = [file_key(f) for f in files]
    names = output_names(files)
    outputs = {
        k: {m: n if len(models) == 1 else f"{m}/{n}" for m in models}
        for k, n in zip(keys, names, strict=True)
    }
    return keys, outputs


def _batches(stream, out, models, outputs, plots, part_files, part_seconds) -> Iterator[Batch]:
    """The stream's results in parts of `part_files` files or `part_seconds`, whichever comes
    first (the last part may be smaller); plots and failure lines as each file finishes."""
    batch, last = Batch(), time.monotonic()
    for key, result in stream:
        add_result(batch, key, result, models, outputs[key])
        if plots:
            write_outputs_or_record(batch, out, key, result, models, outputs[key])
        log_failures(key, result)
        if len(batch.files) >= part_files or time.monotonic() - last >= part_seconds:
            yield batch
            batch, last = Batch(), time.monotonic()
    if batch.files:
        yield batch


def _commit(
    store: PartStore, batch: Batch, schemas: dict, csv_path: Path, progress: Progress
) -> None:
    store.commit(batch_tables(batch, schemas), batch.files)
    append_csv(csv_path, csv_rows(batch.songs))
    progress.update(batch)


# Ray Data costs about 40 ms per block on a 2-core machine (scheduling, block metadata, the
# streaming executor's bookkeeping: measured against plain Ray tasks on the same files), as much
# as decoding a 30 s file. So a decode task takes a group of files.
FILES_PER_DECODE_TASK = 32
DECODE_TASKS_PER_CPU = 4  # enough groups that no core waits while another finishes a long one


def decode_dataset(
    todo: list[tuple[str, str]], fc: dict[str, Any], max_seconds: float | None
) -> Dataset:
    """The Ray Data stage that decodes every (key, path) of todo into rows of decode_row, in
    blocks of up to FILES_PER_DECODE_TASK files with about the same audio (file size) each."""
    import ray

    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    n_blocks = min(
        len(todo), max(cpus * DECODE_TASKS_PER_CPU, -(-len(todo) // FILES_PER_DECODE_TASK))
    )
    order = balanced_order([_size(path) for _, path in todo], n_blocks)
    items = [{"file": todo[i][0], "path": os.fsencode(todo[i][1])} for i in order]
    ds = ray.data.from_items(items, override_num_blocks=n_blocks)
    return ds.map(decode_row, fn_kwargs={"fc": fc, "max_seconds": max_seconds}, num_cpus=1)


def balanced_order(sizes: list[int], n_blocks: int) -> list[int]:
    """Indices of sizes in n_blocks consecutive runs of equal length (as from_items cuts them)
    whose sums are close: the longest processing time first rule (Graham 1969), each item in
    turn to the open run with the least so far. A catalogue's minutes-long files, often side
    by side in a folder, then spread over the tasks instead of holding up one."""
    n = len(sizes)
    runs: list[list[int]] = [[] for _ in range(n_blocks)]
    capacity = [n // n_blocks + (b < n % n_blocks) for b in range(n_blocks)]
    open_runs = [(0, b) for b in range(n_blocks)]  # (total so far, run), a heap
    for i in sorted(range(n), key=lambda i: -sizes[i]):
        total, b = heapq.heappop(open_runs)
        runs[b].append(i)
        if len(runs[b]) < capacity[b]:
            heapq.heappush(open_runs, (total + sizes[i], b))
    return [i for run in runs for i in run]


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:  # missing or unreadable: decode_row reports it
        return 0


def predict_stream(
    todo: list[tuple[str, str]],
    model_paths: list[str],
    models: dict[str, LoadedModel],
    *,
    max_seconds: float | None,
    actors: int,
    gpu: bool,
    batch_files: int,
    actor_cpus: float | None,
) -> Iterator[tuple[str, dict]]:
    """(file key, result) as files finish, from the Ray Data pipeline. Ray Data streams:
    its executor holds back decode tasks while mels wait for the actors (back-pressure on
    object-store memory), so memory stays bounded however many files there are."""
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # our own progress line says files/s and audio-hours/s
    ctx.print_on_execution_start = False
    fc = to_dict(next(iter(models.values())).fc)
    ds = decode_dataset(todo, fc, max_seconds)
    if actor_cpus is None:
        # On CPU the model is the light stage (SmallCNN: a fifth of a file's decode + mel
        # time, measured): its actors reserve no CPU, so decode tasks fill every core. An
        # actor holding the only CPU of a 1-CPU Ray would wait forever for mels.
        actor_cpus = 1.0 if gpu else 0.0
    ds = ds.map_batches(
        SegmentPredictor,
        compute=ray.data.ActorPoolStrategy(size=actors),
        batch_size=batch_files,
        batch_format="numpy",
        fn_constructor_kwargs={
            "model_paths": [str(Path(p).resolve()) for p in model_paths],
            "names": list(models),
            "gpu": gpu,
            "threads": max(1, int(actor_cpus)),
        },
        num_cpus=actor_cpus,
        num_gpus=1 if gpu else 0,
    )
    for row in ds.iter_rows():
        yield str(row["file"]), json.loads(row["result"])


class Progress:
    """A progress line per committed part, and the totals at the end."""

    def __init__(self, todo: int, skipped: int):
        self.todo, self.skipped = todo, skipped
        self.files = self.failed = 0
        self.audio_s = 0.0
        self.t0 = time.perf_counter()
        if skipped:
            log.info("predict: %d file(s) already done in this output, %d to go", skipped, todo)

    def update(self, batch: Batch) -> None:
        self.files += len(batch.files)
        self.failed += batch.failed_files
        self.audio_s += batch.audio_s
        log.info("predict: %s", self.line())

    def line(self) -> str:
        dt = max(time.perf_counter() - self.t0, 1e-9)
        return (
            f"{self.files}/{self.todo} files ({self.failed} failed) | {self.files / dt:.2f} files/s"
            f" | {self.audio_s / 3600 / dt:.3g} audio-h/s | {self.audio_s / 3600:.3g} audio-h"
        )

    def finish(self, s: PredictSummary) -> None:
        log.info(
            "predict done: %d file(s), %d predicted now, %d already done, %d failed in all; "
            "%.3g audio-h in %.1f s (%.2f files/s, %.3g audio-h/s)",
            s.files,
            s.predicted,
            s.skipped,
            s.failed,
            s.audio_s / 3600,
            s.seconds,
            s.predicted / max(s.seconds, 1e-9),
            s.audio_s / 3600 / max(s.seconds, 1e-9),
        )
