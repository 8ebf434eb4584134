"""A trained model as one file, and `sssl predict` on any audio.

The artifact (`model.sssl`) is a `torch.save` dict of tensors and plain values only: segment
network weights, the resolved configs, label names, and the SVM's training data (Eq. 10
features and labels of the training songs). It loads with `torch.load(weights_only=True)`,
which executes no code from the file; the SVM is refit on load (deterministic: same data, same
random_state), so no pickled scikit-learn object is ever read.
"""

from __future__ import annotations

import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sssl_dist.config import FeatureConfig, SSSLConfig, from_dict, load_config, to_dict
from sssl_dist.data.audio import AudioError, decode, log_mel
from sssl_dist.data.segments import ShardSet, segment_probabilities
from sssl_dist.files.runfiles import CONFIG, FOLD_IDS, SONGS
from sssl_dist.method.models import build_model, fuse_conv_bn
from sssl_dist.method.song import song_features
from sssl_dist.method.tasks import SongModel, task_of

log = logging.getLogger(__name__)
FORMAT = "sssl-model/1"


def export_model(
    checkpoint_dir: str | Path,
    shards: ShardSet,
    path: str | Path,
    learned_from: dict[str, list] | None = None,
) -> Path:
    """Write the artifact from a finished run's checkpoint (state.pt, config, fold_ids). The
    SVM's data are `learned_from`'s training songs (cross-fitted probabilities where the run
    made them), by default the checkpoint's own songs.json."""
    from sssl_dist.files.checkpoint import load_state

    ckpt = Path(checkpoint_dir)
    cfg = load_config(ckpt / CONFIG)
    songs = learned_from or json.loads((ckpt / SONGS).read_text())
    train_ids = json.loads((ckpt / FOLD_IDS).read_text())["train"]
    task = task_of(cfg)
    by_id = shards.by_id
    ids = [s for s in train_ids if songs.get(s)]
    feats = np.stack([song_features(np.asarray(songs[s]), cfg.theta) for s in ids])
    targets = np.array([task.targets.song_target(by_id[s]) for s in ids], dtype=task.targets.dtype)
    artifact = {
        "format": FORMAT,
        "config": json.dumps(to_dict(cfg)),
        "feature_config": json.dumps(to_dict(shards.feature_config)),
        "label_names": list(task_of(cfg).output_names),
        "state_dict": load_state(ckpt)["model"],
        "svm_features": torch.from_numpy(feats),
        "svm_labels": torch.from_numpy(targets),
    }
    scale = task.output_scale([by_id[s] for s in ids])
    if scale is not None:  # the data set's scale the model's values are reported on
        artifact["scale"] = scale
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
    svm: SongModel  # the task's song model (Eq. 10 features -> song outputs)
    scale: list[float] | None = None  # the data set's scale of a regression model's values


_ARTIFACT_KEYS = (
    "config",
    "feature_config",
    "label_names",
    "state_dict",
    "svm_features",
    "svm_labels",
)


def load_model(path: str | Path) -> LoadedModel:
    """Load and validate a `model.sssl`. Anything inconsistent (labels outside the task's
    classes, other label names, a hop below 1 s, impossible feature settings, weights or SVM
    data of the wrong shape) raises a one-line ValueError naming the file: a wrong model must
    not turn into plausible predictions or a traceback deep in the segmenter."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    check_integrity(path)
    try:
        art = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "not a model we can trust"
        raise ValueError(f"{path} is not a loadable sssl model ({type(exc).__name__})") from None
    if not isinstance(art, dict) or art.get("format") != FORMAT:
        raise ValueError(f"{path} is not an {FORMAT} file")
    try:
        return _build_loaded(art)
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path}: invalid model file: {detail}") from None


def check_integrity(path: Path) -> None:
    """Every entry of the file against the CRC-32 that torch.save stored beside it. torch.load
    never checks them: a byte flipped in a weight (by a disk, a copy, a download) would load,
    and the predictions would change without a word."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()  # reads every entry; the name of the first bad one
    except Exception as exc:  # noqa: BLE001 - a broken header of any kind: not a model
        raise ValueError(f"{path} is not a loadable sssl model ({type(exc).__name__})") from None
    if damaged is not None:
        raise ValueError(
            f"{path} is damaged: its entry {damaged} does not match its CRC-32 checksum; "
            "export or copy the model again"
        )


def _build_loaded(art: dict[str, Any]) -> LoadedModel:
    missing = [k for k in _ARTIFACT_KEYS if k not in art]
    if missing:
        raise ValueError(f"missing entries {missing}")
    cfg = from_dict(SSSLConfig, json.loads(art["config"]))
    fc = from_dict(FeatureConfig, json.loads(art["feature_config"]))
    _check_segmentation(cfg)
    _check_features(fc, cfg)
    names = list(art["label_names"])
    if names != list(task_of(cfg).output_names):
        raise ValueError(
            f"label_names {names} do not match task {cfg.task!r}: {task_of(cfg).output_names}"
        )
    task = task_of(cfg)
    feats, labels = _checked_svm_data(art["svm_features"], art["svm_labels"], task.num_outputs)
    net = build_model(cfg.backbone, task_of(cfg).num_outputs, cfg.dropout)
    try:
        net.load_state_dict(art["state_dict"])
    except RuntimeError as exc:
        raise ValueError(
            f"weights do not fit a {cfg.backbone} with {task_of(cfg).num_outputs} classes"
        ) from exc
    net.eval()
    _check_output_shape(net, cfg, fc)
    # A loaded model only predicts: BatchNorm folded into the convolutions makes SmallCNN's
    # forward pass 1.23x faster on one core, the same probabilities to 4e-7 (BENCHMARKS.md).
    net = fuse_conv_bn(net)
    svm = task.song_model(cfg, feats, labels)
    scale = _checked_scale(art.get("scale"), np.dtype(task.targets.dtype).kind == "f")
    return LoadedModel(cfg, fc, names, net, svm, scale)


def _checked_scale(scale: Any, values: bool) -> list[float] | None:
    """A regression model's scale (low < high), present exactly when it predicts values."""
    if scale is None and not values:
        return None
    ok = isinstance(scale, list | tuple) and len(scale) == 2
    if not values or not ok or not all(isinstance(v, int | float) for v in scale):
        raise ValueError(f"scale must be [low, high] exactly for a model of values, got {scale!r}")
    if not scale[0] < scale[1]:
        raise ValueError(f"scale must be [low, high] with low < high, got {scale!r}")
    return [float(v) for v in scale]


def _check_segmentation(cfg: SSSLConfig) -> None:
    # Segments start every hop_seconds (whole seconds, as in training): 0 would divide by zero.
    if not isinstance(cfg.hop_seconds, int) or cfg.hop_seconds < 1:
        raise ValueError(f"hop_seconds must be a whole number >= 1, got {cfg.hop_seconds!r}")
    if not isinstance(cfg.segment_seconds, int) or cfg.segment_seconds < 1:
        raise ValueError(
            f"segment_seconds must be a whole number >= 1, got {cfg.segment_seconds!r}"
        )


def _check_features(fc: FeatureConfig, cfg: SSSLConfig) -> None:
    for name in ("sample_rate", "n_fft", "hop_length", "n_mels"):
        value = getattr(fc, name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"feature setting {name} must be a positive integer, got {value!r}")
    if fc.hop_length > fc.n_fft:
        raise ValueError(f"feature hop_length {fc.hop_length} exceeds n_fft {fc.n_fft}")
    if round(cfg.segment_seconds * fc.frames_per_second) < 1:
        raise ValueError("a segment would be shorter than one mel frame")


def _checked_svm_data(feats: Any, labels: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The song model's training data as arrays, or ValueError: Eq. 10 features of K outputs;
    the targets are then checked by the task's `song_model` (a class label -1 would otherwise
    index the last class and predict it with p = 1.0)."""
    if not isinstance(feats, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise ValueError("svm_features and svm_labels must be tensors")
    if feats.ndim != 2 or feats.shape[1] != 7 * k or feats.shape[0] < 1:
        raise ValueError(f"svm_features must be [songs, {7 * k}], got {list(feats.shape)}")
    if labels.shape[:1] != (feats.shape[0],):
        raise ValueError(f"svm_labels must be {feats.shape[0]} targets, got {list(labels.shape)}")
    x = feats.double().numpy()
    if not np.isfinite(x).all():
        raise ValueError("svm_features contain NaN or inf")
    return x, labels.numpy()


@torch.no_grad()
def _check_output_shape(net: torch.nn.Module, cfg: SSSLConfig, fc: FeatureConfig) -> None:
    """One silent segment through the network: K probabilities that sum to 1."""
    frames = int(round(cfg.segment_seconds * fc.frames_per_second))
    out = net(torch.zeros(1, 1, fc.n_mels, frames))
    if tuple(out.shape) != (1, task_of(cfg).num_outputs):
        raise ValueError(
            f"network gives shape {list(out.shape)}, expected [1, {task_of(cfg).num_outputs}]"
        )
    if not torch.isfinite(out).all():
        raise ValueError("network gives NaN or inf on a silent segment")


def checked_segment_probabilities(
    model: LoadedModel,
    mel: np.ndarray,
    duration_s: float,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Segment probabilities [S, K] of one song's log-mel. Raises AudioError for a song
    shorter than one segment, ValueError when the network gives non-finite probabilities (a
    mel that should never have got here)."""
    cfg = model.cfg
    probs = segment_probabilities(
        model.net, mel, duration_s, cfg, model.fc, task_of(cfg), device, batch_size
    )
    if not len(probs):
        raise AudioError(f"too short for one {cfg.segment_seconds} s segment ({duration_s:.1f} s)")
    if not np.isfinite(probs).all():
        raise ValueError("the network gave NaN probabilities")
    return probs


def song_probabilities(model: LoadedModel, segment_probs: list[np.ndarray]) -> np.ndarray:
    """Song probabilities [n, K] of n songs from their segment probabilities: the SVM on the
    Eq. 10 features. One call for many songs, because scikit-learn's cost is mostly per call
    (2.4 ms for one song)."""
    feats = np.stack([song_features(p, model.cfg.theta) for p in segment_probs])
    return model.svm.predict_outputs(feats)


def predict_song(
    model: LoadedModel,
    audio_path: str | Path,
    batch_size: int = 128,
    max_seconds: float | None = None,
) -> dict[str, Any]:
    """Segment probabilities over time and the song-level decision for one file, in one
    process (what `sssl predict` computes per file; kept as the single-file API).

    Any length and format (only the first `max_seconds` when given); raises AudioError for
    unreadable files or songs shorter than one segment.
    """
    fc = model.fc
    y = decode(audio_path, fc, enforce_limits=False)
    if max_seconds is not None:
        y = y[: int(max_seconds * fc.sample_rate)]
    duration = y.size / fc.sample_rate
    probs = checked_segment_probabilities(model, log_mel(y, fc), duration, batch_size)
    song_p = song_probabilities(model, [probs])[0]
    return song_result(model, str(audio_path), duration, probs, song_p)


def song_result(
    model: LoadedModel, file: str, duration_s: float, probs: np.ndarray, song_p: np.ndarray
) -> dict[str, Any]:
    """One song's prediction as the JSON document `sssl predict` writes beside its plot."""
    cfg, task = model.cfg, task_of(model.cfg)
    decision, probability = task.decision(song_p, model.scale)
    starts = np.arange(len(probs)) * cfg.hop_seconds
    song = task.columns(np.asarray(song_p)[None], model.scale)[0]
    doc = {
        "file": file,
        "duration_s": duration_s,
        "task": cfg.task,
        "labels": model.label_names,
        "decision": decision,
        "probability": probability,
        # Class probabilities, or values on the data set's scale (named beside them).
        ("song_probabilities" if model.scale is None else "song_values"): song,
        "segment_seconds": cfg.segment_seconds,
        "segments": [
            {"start_s": int(s), "end_s": int(s) + cfg.segment_seconds, **cols}
            for s, cols in zip(starts, task.columns(probs, model.scale), strict=True)
        ],
    }
    if model.scale is not None:
        doc["scale"] = model.scale
    return doc
