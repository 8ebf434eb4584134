"""A trained model as one file, and `sssl predict` on any audio.

The artifact (`model.sssl`) is a `torch.save` dict of tensors and plain values only: segment
network weights, the resolved configs, label names, and the SVM's training data (Eq. 10
features and labels of the training songs). It loads with `torch.load(weights_only=True)`,
which executes no code from the file; the SVM is refit on load (deterministic: same data, same
random_state), so no pickled scikit-learn object is ever read.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sssl_dist.audio import AudioError, decode, log_mel
from sssl_dist.config import FeatureConfig, SSSLConfig, from_dict, to_dict
from sssl_dist.crossfit import SVM_SONGS_FILE
from sssl_dist.data import ShardSet, segment_probabilities
from sssl_dist.models import build_model
from sssl_dist.song import SongClassifier, song_features

log = logging.getLogger(__name__)
FORMAT = "sssl-model/1"


def export_model(checkpoint_dir: str | Path, shards: ShardSet, path: str | Path) -> Path:
    """Write the artifact from a finished run's checkpoint (state.pt, songs.json or
    svm_songs.json, fold_ids)."""
    import yaml

    from sssl_dist.checkpoint import load_state

    ckpt = Path(checkpoint_dir)
    cfg = from_dict(SSSLConfig, yaml.safe_load((ckpt / "config.yaml").read_text()))
    # What the SVM learned from: the cross-fitted probabilities when the run made them.
    learned = ckpt / SVM_SONGS_FILE if (ckpt / SVM_SONGS_FILE).is_file() else ckpt / "songs.json"
    songs = json.loads(learned.read_text())
    train_ids = json.loads((ckpt / "fold_ids.json").read_text())["train"]
    labels = {s["song_id"]: s[cfg.task] for s in shards.songs}
    ids = [s for s in train_ids if songs.get(s)]
    feats = np.stack([song_features(np.asarray(songs[s]), cfg.theta) for s in ids])
    artifact = {
        "format": FORMAT,
        "config": json.dumps(to_dict(cfg)),
        "feature_config": json.dumps(to_dict(shards.feature_config)),
        "label_names": list(cfg.label_names),
        "state_dict": load_state(ckpt)["model"],
        "svm_features": torch.from_numpy(feats),
        "svm_labels": torch.tensor([labels[s] for s in ids], dtype=torch.int64),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(artifact, path)
    return path


@dataclass
class LoadedModel:
    cfg: SSSLConfig
    fc: FeatureConfig
    label_names: list[str]
    net: torch.nn.Module
    svm: SongClassifier


def load_model(path: str | Path) -> LoadedModel:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        art = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "not a model we can trust"
        raise ValueError(f"{path} is not a loadable sssl model ({type(exc).__name__})") from None
    if not isinstance(art, dict) or art.get("format") != FORMAT:
        raise ValueError(f"{path} is not an {FORMAT} file")
    cfg = from_dict(SSSLConfig, json.loads(art["config"]))
    fc = from_dict(FeatureConfig, json.loads(art["feature_config"]))
    net = build_model(cfg.backbone, cfg.num_classes, cfg.dropout)
    net.load_state_dict(art["state_dict"])
    net.eval()
    svm = SongClassifier(cfg.svm_c, cfg.svm_kernel, cfg.seed).fit(
        art["svm_features"].numpy(), art["svm_labels"].numpy()
    )
    return LoadedModel(cfg, fc, list(art["label_names"]), net, svm)


@torch.no_grad()
def predict_song(
    model: LoadedModel,
    audio_path: str | Path,
    batch_size: int = 128,
    max_seconds: float | None = None,
) -> dict[str, Any]:
    """Segment probabilities over time and the song-level decision for one file.

    Any length and format (only the first `max_seconds` when given); raises AudioError for
    unreadable files or songs shorter than one segment.
    """
    cfg, fc = model.cfg, model.fc
    y = decode(audio_path, fc, enforce_limits=False)
    if max_seconds is not None:
        y = y[: int(max_seconds * fc.sample_rate)]
    mel = log_mel(y, fc)
    duration = y.size / fc.sample_rate
    probs = segment_probabilities(model.net, mel, duration, cfg, fc, batch_size=batch_size)
    if not len(probs):
        raise AudioError(f"too short for one {cfg.segment_seconds} s segment ({duration:.1f} s)")
    starts = np.arange(len(probs)) * cfg.hop_seconds
    song_p = model.svm.predict_proba(song_features(probs, cfg.theta)[None], cfg.num_classes)[0]
    decision = int(np.argmax(song_p))
    return {
        "file": str(audio_path),
        "duration_s": duration,
        "task": cfg.task,
        "labels": model.label_names,
        "decision": model.label_names[decision],
        "probability": float(song_p[decision]),
        "song_probabilities": dict(zip(model.label_names, map(float, song_p), strict=True)),
        "segment_seconds": cfg.segment_seconds,
        "segments": [
            {
                "start_s": int(s),
                "end_s": int(s) + cfg.segment_seconds,
                **dict(zip(model.label_names, map(float, p), strict=True)),
            }
            for s, p in zip(starts, probs, strict=True)
        ],
    }


def output_names(files: list[str]) -> list[str]:
    """One distinct output name per input: the file stem, or, where stems collide
    (`a/song.mp3`, `b/song.mp3`), the parent folder and the stem (`a__song`), then the input's
    position when even that collides."""
    stems = [Path(f).stem or f"file{i}" for i, f in enumerate(files)]
    names = [
        stem if stems.count(stem) == 1 else f"{Path(f).parent.name or 'root'}__{stem}"
        for f, stem in zip(files, stems, strict=True)
    ]
    return [name if names.count(name) == 1 else f"{name}-{i}" for i, name in enumerate(names)]


def predict_files(
    model_path: str | Path, files: list[str], out_dir: str | Path, max_seconds: float | None = None
) -> int:
    """Predict every file, writing <name>.json, <name>.segments.csv and <name>.png into out_dir
    (names from `output_names`) plus predictions.csv; unreadable files are reported and
    skipped. Returns the failure count."""
    from sssl_dist.report import plot_emotion_curve

    model = load_model(model_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, failures = [], 0
    for f, stem in zip(files, output_names(files), strict=True):
        try:
            res = predict_song(model, f, max_seconds=max_seconds)
        except AudioError as exc:
            failures += 1
            log.error("%s: skipped: %s", f, exc)
            continue
        (out / f"{stem}.json").write_text(json.dumps(res, indent=1))
        with (out / f"{stem}.segments.csv").open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["start_s", "end_s", *model.label_names])
            w.writeheader()
            w.writerows(res["segments"])
        plot_emotion_curve(res, out / f"{stem}.png")
        rows.append(
            {
                "file": f,
                "output": stem,
                "decision": res["decision"],
                "probability": res["probability"],
                "duration_s": round(res["duration_s"], 2),
                "segments": len(res["segments"]),
            }
        )
        log.info(
            "%s: %s (p = %.2f, %d segments)",
            f,
            res["decision"],
            res["probability"],
            len(res["segments"]),
        )
    with (out / "predictions.csv").open("w", newline="") as fh:
        w = csv.DictWriter(
            fh, fieldnames=["file", "output", "decision", "probability", "duration_s", "segments"]
        )
        w.writeheader()
        w.writerows(rows)
    return failures
